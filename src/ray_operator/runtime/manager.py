"""Runs the controllers of one operator process: caches, leader election, queues, probes.

The order is controller-runtime's: start every watch cache and the metrics and probe server,
wait until the caches are synced, then (leader election on) wait for the Lease, and only then
start the controllers' queues, beginning with every object the caches hold. A periodic resync
puts every object back in its queue as a safety net. At shutdown the queues get a few seconds to
finish what they run, the Lease is released, and the caches stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from ray_operator.kube import Kind, Kube
from ray_operator.runtime.gc_control import FreezeAfterFullCollections
from ray_operator.runtime.informer import Informer, Transform
from ray_operator.runtime.leader import LeaderElector
from ray_operator.runtime.metrics import HealthServer, Metrics
from ray_operator.runtime.workqueue import QueueStats, WorkQueue

# kind, label selector, metadata only, transform
InformerKey = tuple[str, str | None, bool, Transform | None]

log = logging.getLogger(__name__)


class Controller(Protocol):
    """What the manager drives of a controller."""

    name: str
    queue: WorkQueue

    def resync(self) -> None:
        """Put every object the controller is responsible for into its queue."""

    async def close(self) -> None:
        """Finish what it started itself (timers, background posts)."""


@dataclass(frozen=True)
class LeaseOptions:
    """Where the leader Lease lives and who this process is."""

    namespace: str
    name: str
    identity: str


@dataclass
class Manager:
    """Owns the shared informers and runs the controllers when this process may."""

    kube: Kube
    namespaces: tuple[str, ...] = ()
    resync_seconds: float = 60.0
    metrics_port: int = 0
    lease: LeaseOptions | None = None
    shutdown_grace: float = 5.0
    metrics: Metrics = field(default_factory=Metrics)
    informers: dict[InformerKey, Informer] = field(default_factory=dict)
    on_demand: set[InformerKey] = field(default_factory=set)
    controllers: list[Controller] = field(default_factory=list)
    elector: LeaderElector | None = None
    gc_freeze: FreezeAfterFullCollections = field(default_factory=FreezeAfterFullCollections)
    _server: HealthServer | None = None

    def __post_init__(self) -> None:
        self.kube.observer = self.metrics.observe_request

    def informer(
        self,
        kind: Kind,
        label_selector: str | None = None,
        metadata_only: bool = False,
        transform: Transform | None = None,
        on_demand: bool = False,
    ) -> Informer:
        """The shared cache of ``kind`` (with that server-side selector), made on first use.

        Controllers that ask for the same kind, selector and transform share one cache: one
        list and one watch. ``on_demand``: not listed at start; its controller starts it when
        the first object that needs it appears (readiness then waits for it too).
        """
        key = (kind.kind, label_selector, metadata_only, transform)
        if on_demand:
            self.on_demand.add(key)
        if key not in self.informers:
            self.informers[key] = Informer(
                self.kube,
                kind,
                self.namespaces,
                label_selector,
                on_restart=lambda k: self.metrics.watch_restarts.labels(k).inc(),
                metadata_only=metadata_only,
                transform=transform,
            )
        return self.informers[key]

    def add(self, controller: Controller) -> None:
        """Run ``controller`` (its queue reports to the metrics)."""
        name = controller.name
        depth = self.metrics.queue_depth.labels(name)
        retries = self.metrics.retries.labels(name)
        controller.queue.stats = QueueStats(
            on_result=self.metrics.observe_reconcile(name),
            on_retry=retries.inc,
            on_depth=depth.set,
        )
        self.controllers.append(controller)

    @property
    def synced(self) -> bool:
        """Every cache started has been listed."""
        return all(i.synced.is_set() for i in self.informers.values() if i.started)

    @property
    def ready(self) -> bool:
        """Every cache started is listed and watching now (not after a broken watch)."""
        return all(i.synced.is_set() and i.connected for i in self.informers.values()
                   if i.started)

    async def run(self, stop: asyncio.Event) -> int:
        """Run until ``stop`` is set; 0."""
        if self.metrics_port:
            self._server = HealthServer(self.metrics, self.metrics_port, lambda: self.ready)
            await self._server.start()
        for key, informer in self.informers.items():
            if key not in self.on_demand:
                informer.start()
        elector_task: asyncio.Task[None] | None = None
        self.gc_freeze.install()  # uninstalled by _shutdown, in the finally below
        try:
            if not await self._until(self._all_synced(), stop):
                return 0
            self.metrics.synced.set(1)
            log.info(
                "caches synced: %s",
                ", ".join(f"{i.name} {len(i)}" for i in self.informers.values() if i.started),
            )
            if self.lease is not None:
                self.elector = LeaderElector(
                    self.kube,
                    self.lease.namespace,
                    self.lease.name,
                    self.lease.identity,
                    on_change=lambda leading: self.metrics.leader.set(1 if leading else 0),
                )
                elector_task = asyncio.create_task(self.elector.run())
            while not stop.is_set():
                if self.elector is not None:
                    log.info("standby until the Lease %s/%s is ours", *self.lease_where)
                    if not await self._until(self.elector.leading.wait(), stop):
                        break
                else:
                    self.metrics.leader.set(1)
                await self._lead(stop)
            return 0
        finally:
            if elector_task is not None:
                elector_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await elector_task
            await self._shutdown()

    async def _lead(self, stop: asyncio.Event) -> None:
        """Reconcile until ``stop``, or until the Lease is lost (then stop reconciling)."""
        for controller in self.controllers:
            controller.resync()
            controller.queue.start()
        resync = asyncio.create_task(self._resync_forever())
        try:
            lost = self.elector.lost if self.elector is not None else asyncio.Event()
            await self._until(lost.wait(), stop)
        finally:
            resync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await resync
            # Whatever still runs must not write once another replica may lead.
            await asyncio.gather(*(c.queue.stop(self.shutdown_grace) for c in self.controllers))

    @property
    def lease_where(self) -> tuple[str, str]:
        """(namespace, name) of the Lease."""
        assert self.lease is not None
        return self.lease.namespace, self.lease.name

    async def _all_synced(self) -> None:
        waiting = [asyncio.create_task(i.synced.wait()) for i in self.informers.values()
                   if i.started]
        try:
            while True:
                _, pending = await asyncio.wait(waiting, timeout=10)
                if not pending:
                    return
                names = [i.name for i in self.informers.values()
                         if i.started and not i.synced.is_set()]
                log.warning("still waiting for the caches of %s", ", ".join(names))
        finally:
            for task in waiting:
                task.cancel()

    @staticmethod
    async def _until(work: Coroutine[Any, Any, Any], stop: asyncio.Event) -> bool:
        """Await ``work`` unless ``stop`` comes first; True when the work finished."""
        task = asyncio.ensure_future(work)
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for pending in (task, stopper):
            if pending not in done:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending
        return task in done

    async def _resync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.resync_seconds)
            for controller in self.controllers:
                controller.resync()

    async def _shutdown(self) -> None:
        for controller in self.controllers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(controller.close(), self.shutdown_grace)
        if self.elector is not None:
            await self.elector.release()
        for informer in self.informers.values():
            await informer.stop()
        if self._server is not None:
            await self._server.stop()
        self.gc_freeze.uninstall()
