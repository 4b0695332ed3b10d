"""Prometheus metrics of the operator, and its ``/metrics``, ``/healthz`` and ``/readyz`` server.

One port (``RAY_OPERATOR_METRICS_PORT``) serves all three, as controller-runtime's managers do
with their metrics and health-probe endpoints: ``/healthz`` answers while the event loop runs,
``/readyz`` once every watch cache is synced (leader or standby alike: a standby is ready to
take over, which is what the chart's readiness probe asks).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from ray_operator.runtime.gc_control import gc_pauses

log = logging.getLogger(__name__)


@dataclass
class Metrics:
    """Every metric the operator exports, in a registry of its own."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        # The process's CPU, memory and garbage collection, as every Prometheus client exports
        # them by default (our registry is our own, so they are added by hand).
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        r.register(gc_pauses())
        self.reconciles = Counter(
            "ray_operator_reconcile_total",
            "Reconciles by controller and result (success, error).",
            ["controller", "result"],
            registry=r,
        )
        self.reconcile_seconds = Histogram(
            "ray_operator_reconcile_duration_seconds",
            "Time one reconcile took, by controller.",
            ["controller"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.queue_depth = Gauge(
            "ray_operator_workqueue_depth",
            "Keys waiting or being reconciled, by controller.",
            ["controller"],
            registry=r,
        )
        self.retries = Counter(
            "ray_operator_workqueue_retries_total",
            "Reconciles scheduled again after a failure, by controller.",
            ["controller"],
            registry=r,
        )
        self.api_requests = Counter(
            "ray_operator_api_requests_total",
            "Requests to the Kubernetes API by verb and HTTP status (0: no answer).",
            ["verb", "code"],
            registry=r,
        )
        self.watch_restarts = Counter(
            "ray_operator_watch_restarts_total",
            "Watches that broke and were listed again, by kind.",
            ["kind"],
            registry=r,
        )
        self.leader = Gauge(
            "ray_operator_leader", "1 while this process holds the leader Lease.", registry=r
        )
        self.synced = Gauge(
            "ray_operator_caches_synced", "1 once every watch cache is synced.", registry=r
        )

    def observe_request(self, verb: str, code: int) -> None:
        """Count one API request (the client's observer hook)."""
        self.api_requests.labels(verb, str(code)).inc()

    def observe_reconcile(self, controller: str) -> Callable[[str, float], None]:
        """A callback counting one controller's reconciles and their durations."""
        counter_ok = self.reconciles.labels(controller, "success")
        counter_err = self.reconciles.labels(controller, "error")
        histogram = self.reconcile_seconds.labels(controller)

        def observe(result: str, seconds: float) -> None:
            (counter_ok if result == "success" else counter_err).inc()
            histogram.observe(seconds)

        return observe


class HealthServer:
    """Serves /metrics, /healthz and /readyz on one port."""

    def __init__(self, metrics: Metrics, port: int, ready: Callable[[], bool]) -> None:
        self.metrics = metrics
        self.port = port
        self._ready = ready
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen on every address of the pod (probes and scrapes come from outside it)."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "0.0.0.0", self.port).start()  # noqa: S104
        log.info("metrics and probes on :%d (/metrics, /healthz, /readyz)", self.port)

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        if self._ready():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="caches not synced or not watching\n")
