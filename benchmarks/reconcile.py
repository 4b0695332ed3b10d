"""Reconcile benchmark: N `Ray` resources through the operator vs. a plain script (the floor).

One run, one local control plane (etcd + kube-apiserver + kube-controller-manager), the
status-only pod runner playing the kubelet:

1. floor: a script creates N Rays and, for each, the children the operator would create
   (``build_children``), with the same client and no operator running; time until all children
   exist and until every Deployment is Available. The namespace is then deleted (and waited for).
2. operator: ``python -m ray_operator run`` as a process with a token user of its own; the script
   creates N Rays in a fresh namespace; time until all children exist and until every Ray has
   ``status.health == "True"``; then, for ``--steady-seconds``, the operator's CPU, RSS and
   requests.

The operator's requests are counted in the apiserver's audit log, which names the user of each
request (``apiserver_request_total`` has no client label). Prints a table, writes JSON.
Not a timed test: targets are reported, never asserted.

    .venv/bin/python benchmarks/reconcile.py [--count 200] [--steady-seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_file import RESULTS, write_results  # noqa: E402
from ray_operator.api.constants import DEFAULT_RAY_IMAGE  # noqa: E402
from ray_operator.api.crd import all_crds  # noqa: E402
from ray_operator.api.validation import validate_ray  # noqa: E402
from ray_operator.builders.defaults import current_defaults  # noqa: E402
from ray_operator.builders.ray_cluster import build_children, plan_cluster  # noqa: E402
from ray_operator.kube import (  # noqa: E402
    DEPLOYMENT,
    KINDS_BY_NAME,
    NAMESPACE,
    RAY,
    SERVICE,
    Kind,
    Kube,
)
from ray_operator.localkube.control_plane import KUBE_VERSION, LocalControlPlane  # noqa: E402
from ray_operator.localkube.crds import install_crds  # noqa: E402
from ray_operator.localkube.pod_runner import PodRunner  # noqa: E402
from tests.operator_process import OperatorProcess  # noqa: E402

Obj = dict[str, Any]
OPERATOR_USER = "ray-operator"
EXAMPLE = ROOT / "examples" / "ray-simple.yaml"
TARGETS = {"time_ratio_max": 1.5, "rss_mb_max": 150.0, "idle_cpu_percent_max": 2.0}


# --- watching what exists ---------------------------------------------------------------------
class Tracker:
    """Watches one kind in one namespace; records when each object first met each predicate."""

    def __init__(
        self, kube: Kube, kind: Kind, namespace: str, predicates: dict[str, Callable[[Obj], bool]]
    ) -> None:
        self.kube = kube
        self.kind = kind
        self.namespace = namespace
        self.predicates = predicates
        self.first: dict[str, dict[str, float]] = {p: {} for p in predicates}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Tracker:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _see(self, obj: Obj) -> None:
        now = time.monotonic()
        name = obj["metadata"]["name"]
        for pred_name, pred in self.predicates.items():
            seen = self.first[pred_name]
            if name not in seen and pred(obj):
                seen[name] = now
                self._changed.set()

    async def _run(self) -> None:
        while True:
            listed = await self.kube.request("GET", self.kind.path(self.namespace))
            for obj in listed.get("items", []):
                self._see(obj)
            version = listed["metadata"]["resourceVersion"]
            async for event_type, obj in self.kube.watch(
                self.kind, self.namespace, resource_version=version
            ):
                if event_type in ("ADDED", "MODIFIED"):
                    self._see(obj)

    async def wait(self, predicate: str, count: int, deadline: float) -> float | None:
        """Monotonic time the ``count``-th object met ``predicate``; None on timeout."""
        seen = self.first[predicate]
        while len(seen) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(left, 5.0))
        return sorted(seen.values())[count - 1]


def exists(_: Obj) -> bool:
    return True


def deployment_available(dep: Obj) -> bool:
    """All replicas of the current generation available: what ``Health`` reads."""
    spec, status = dep.get("spec", {}), dep.get("status", {})
    want = spec.get("replicas", 1)
    return bool(
        status.get("observedGeneration", 0) >= dep["metadata"].get("generation", 0)
        and status.get("updatedReplicas", 0) >= want
        and status.get("availableReplicas", 0) >= want
        and status.get("replicas", 0) == want
    )


def ray_healthy(ray: Obj) -> bool:
    health: object = (ray.get("status") or {}).get("health")
    return health == "True"


# --- the operator's requests, from the audit log ----------------------------------------------
class AuditLog:
    """Requests of one user in the apiserver's audit log, between two offsets of the file."""

    def __init__(self, path: Path, user: str) -> None:
        self.path = path
        self.user = user

    def offset(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def requests(self, start: int, end: int | None = None) -> Counter[str]:
        """``verb resource[/subresource]`` of each request received between the offsets."""
        counts: Counter[str] = Counter()
        if not self.path.exists():
            return counts
        with self.path.open("rb") as f:
            f.seek(start)
            data = f.read() if end is None else f.read(end - start)
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line being written as we read
            if event.get("stage") != "RequestReceived":
                continue
            if event.get("user", {}).get("username") != self.user:
                continue
            ref = event.get("objectRef") or {}
            resource = ref.get("resource", event.get("requestURI", "?"))
            if ref.get("subresource"):
                resource += "/" + ref["subresource"]
            counts[f"{event.get('verb')} {resource}"] += 1
        return counts


# --- the operator process's resources ---------------------------------------------------------
def process_tree(pid: int) -> list[psutil.Process]:
    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for proc in process_tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            t = proc.cpu_times()
            total += t.user + t.system
    return total


def operator_work(operator: OperatorProcess) -> dict[str, float]:
    """From the operator's /metrics: its finished reconciles (all controllers) and the seconds
    they took, and its full garbage collections and their seconds. What of its CPU in a window
    went into reconciling, and what into walking its caches."""
    samples = operator.samples()

    def total(name: str, **labels: str) -> float:
        return sum(s.value for s in samples
                   if s.name == name and labels.items() <= s.labels.items())

    return {
        "reconciles": total("ray_operator_reconcile_total"),
        "reconcile_s": total("ray_operator_reconcile_duration_seconds_sum"),
        "full_gcs": total("python_gc_collections_total", generation="2"),
        "gc_s": total("ray_operator_gc_pause_seconds_total"),
    }


def start_profiler(pid: int, seconds: float, path: Path | None) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the operator for ``seconds`` into ``path`` (collapsed stacks, idle
    frames left out), or nothing without a path. It reads the process from outside, without
    stopping it, so the operator's own CPU figure is not changed by it."""
    if path is None:
        return None
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("--profile-steady needs py-spy (.venv/bin/pip install py-spy)")
    argv = [spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
            "--rate", "250", "--nonblocking", "--format", "raw", "--output", str(path)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def tree_rss_mb(pid: int) -> float:
    total = 0
    for proc in process_tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total / 2**20


class RssSampler:
    """Peak RSS of the operator's process tree, sampled every half second."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_mb = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> RssSampler:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            self.peak_mb = max(self.peak_mb, tree_rss_mb(self.pid))
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.peak_mb = max(self.peak_mb, tree_rss_mb(self.pid))


# --- helpers ----------------------------------------------------------------------------------
WORKERS = 3  # per Ray; --workers changes it (the example's 3 by default)


def ray_manifest(name: str) -> Obj:
    body: Obj = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"] = {"name": name}
    body["spec"]["worker"]["replicas"] = WORKERS
    return body


def ray_names(n: int) -> list[str]:
    return [f"bench-{i:04d}" for i in range(n)]


async def bounded(concurrency: int, items: Iterable[str], work: Callable[[str], Any]) -> None:
    """Run ``work(item)`` for every item, at most ``concurrency`` at once, in order."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            await work(queue.get_nowait())

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def create_namespace(kube: Kube, name: str) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    await kube.create(NAMESPACE, body)


async def delete_namespace(kube: Kube, name: str, timeout: float) -> float:
    """Delete a namespace and wait until it is gone; returns the seconds it took."""
    start = time.monotonic()
    await kube.delete(NAMESPACE, name)
    while time.monotonic() - start < timeout:
        if await kube.get_or_none(NAMESPACE, name) is None:
            break
        await asyncio.sleep(1.0)
    return time.monotonic() - start


def children_lag(
    created: dict[str, float], deployments: Tracker, services: Tracker
) -> dict[str, float | None]:
    """Seconds from each Ray's creation until its three children existed: p50, p95, max."""
    lags = []
    for name, t in created.items():
        times = [
            deployments.first["exists"].get(f"{name}-head"),
            deployments.first["exists"].get(f"{name}-worker"),
            services.first["exists"].get(f"{name}-head"),
        ]
        if all(x is not None for x in times):
            lags.append(max(x for x in times if x is not None) - t)
    if not lags:
        return {"p50": None, "p95": None, "max": None}
    lags.sort()

    def pick(q: float) -> float:
        return round(lags[min(len(lags) - 1, int(q * len(lags)))], 2)

    return {"p50": pick(0.5), "p95": pick(0.95), "max": round(lags[-1], 2)}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def since(t0: float, t: float | None) -> float | None:
    return None if t is None else round(t - t0, 2)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 2)


# --- unrelated load and restarts ---------------------------------------------------------------
NOISE_NAMESPACES = 10


async def create_noise(kube: Kube, n: int, concurrency: int) -> float:
    """``n`` Pods and ``n`` ConfigMaps that are none of the operator's business, spread over
    other namespaces (what a shared cluster holds); returns the seconds it took."""
    from ray_operator.kube import CONFIGMAP, POD

    t0 = time.monotonic()
    for i in range(NOISE_NAMESPACES):
        await create_namespace(kube, f"bench-noise-{i}")

    async def one(item: str) -> None:
        i = int(item)
        ns = f"bench-noise-{i % NOISE_NAMESPACES}"
        labels = {"app": "unrelated", "team": f"t{i % 7}"}
        await kube.create(CONFIGMAP, {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": f"noise-{i}", "labels": labels},
            "data": {"settings.yaml": "x" * 512},
        }, ns)
        await kube.create(POD, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"noise-{i}", "labels": labels},
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1",
                                     "env": [{"name": "N", "value": str(i)}]}]},
        }, ns)

    await bounded(concurrency, [str(i) for i in range(n)], one)
    return round(time.monotonic() - t0, 2)


async def delete_noise(kube: Kube, timeout: float) -> None:
    for i in range(NOISE_NAMESPACES):
        await kube.delete(NAMESPACE, f"bench-noise-{i}")
    for i in range(NOISE_NAMESPACES):
        await delete_namespace_wait(kube, f"bench-noise-{i}", timeout)


async def delete_namespace_wait(kube: Kube, name: str, timeout: float) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if await kube.get_or_none(NAMESPACE, name) is None:
            return
        await asyncio.sleep(1.0)


def operator_process(cp: LocalControlPlane, resync_seconds: float) -> OperatorProcess:
    return OperatorProcess(
        cp,
        resync_seconds=resync_seconds,
        extra_env={
            "KUBECONFIG": str(cp.kubeconfig_for(OPERATOR_USER)),
            "RAY_OPERATOR_RAY_IMAGE": DEFAULT_RAY_IMAGE,
        },
    )


async def restart_phase(
    cp: LocalControlPlane, n: int, resync_seconds: float, settle_seconds: float
) -> Obj:
    """A new operator process over N healthy Rays: time until ready (caches synced, /readyz),
    what it requests and writes while every Ray is reconciled twice, and its memory then."""
    audit = AuditLog(cp.audit_log_path, OPERATOR_USER)
    offset0 = audit.offset()
    operator = operator_process(cp, resync_seconds)
    t0 = time.monotonic()
    operator.start()
    try:
        await asyncio.to_thread(operator.wait_ready, 120)
        ready_s = time.monotonic() - t0
        assert operator.proc is not None
        await operator.more_reconciles(2 * n, timeout=max(120.0, n / 2))
        reconciled_s = time.monotonic() - t0
        pid = operator.proc.pid
        c0, w0 = tree_cpu_seconds(pid), time.monotonic()
        rss = []
        while time.monotonic() - w0 < settle_seconds:
            await asyncio.sleep(1.0)
            rss.append(tree_rss_mb(pid))
        c1, w1 = tree_cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(0.5)
        seen = audit.requests(offset0)
        writes = {k: v for k, v in seen.items()
                  if k.split(" ", 1)[0] in ("create", "update", "patch", "delete")}
        return {
            "ready_s": round(ready_s, 2),
            "two_reconciles_of_every_ray_s": round(reconciled_s, 2),
            "requests": dict(seen.most_common()),
            "writes": sum(writes.values()),
            "writes_by_kind": writes,
            "lists_and_watches_max_per_kind": max(
                (v for k, v in seen.items() if k.split(" ", 1)[0] in ("list", "watch")), default=0
            ),
            "idle_cpu_percent": round(100 * (c1 - c0) / (w1 - w0), 2),
            "rss_mb_steady": round(rss[-1], 1) if rss else None,
            "rss_mb_max": round(max(rss), 1) if rss else None,
        }
    finally:
        operator.stop()


# --- phases -----------------------------------------------------------------------------------
async def floor_phase(
    cp: LocalControlPlane, kube: Kube, n: int, concurrency: int, timeout: float
) -> Obj:
    """The plain script: Rays and their children created directly, no operator."""
    ns = "bench-floor"
    await create_namespace(kube, ns)
    # Clients with the same credentials and counters of their own.
    runner = await PodRunner(kube.sibling(), namespace=ns).start()
    client = kube.sibling()  # counts only the floor's own requests
    deployments = Tracker(
        kube, DEPLOYMENT, ns, {"exists": exists, "available": deployment_available}
    ).start()
    services = Tracker(kube, SERVICE, ns, {"exists": exists}).start()
    try:
        await asyncio.sleep(1.0)  # the trackers' first list is done

        ray_created: dict[str, float] = {}

        async def one(name: str) -> None:
            created = await client.create(RAY, ray_manifest(name), ns)
            ray_created[name] = time.monotonic()
            report = validate_ray(created)
            assert report.resource is not None, report.message()
            plan = plan_cluster(
                report.resource, current_defaults(DEFAULT_RAY_IMAGE), report.unknown_fields
            )
            for child in build_children(plan):
                await client.create(KINDS_BY_NAME[child["kind"]], child, ns)

        load_before = load()
        t0 = time.monotonic()
        await bounded(concurrency, ray_names(n), one)
        created_s = time.monotonic() - t0
        deadline = t0 + timeout
        t_deps = await deployments.wait("exists", 2 * n, deadline)
        t_svcs = await services.wait("exists", n, deadline)
        t_children = None if t_deps is None or t_svcs is None else max(t_deps, t_svcs)
        t_available = await deployments.wait("available", 2 * n, deadline)
        result: Obj = {
            "requests": client.requests,
            "requests_per_resource": round(client.requests / n, 2),
            "create_calls_s": round(created_s, 2),
            "time_to_children_s": since(t0, t_children),
            "children_lag_per_ray_s": children_lag(ray_created, deployments, services),
            "time_to_available_s": since(t0, t_available),
            "deployments_available": len(deployments.first["available"]),
            "load_average_before": load_before,
            "load_average_after": load(),
        }
    finally:
        await deployments.stop()
        await services.stop()
    # The pod runner stays up while the namespace goes: bound pods wait for the "kubelet".
    try:
        result["namespace_delete_s"] = round(await delete_namespace(kube, ns, timeout), 2)
    finally:
        await runner.stop()
        shutil.rmtree(runner.workdir, ignore_errors=True)
        await runner.kube.close()
        await client.close()
    return result


async def operator_phase(
    cp: LocalControlPlane,
    kube: Kube,
    n: int,
    concurrency: int,
    timeout: float,
    steady_seconds: float,
    resync_seconds: float,
    noise: int = 0,
    settle_seconds: float = 10.0,
    profile_path: Path | None = None,
) -> Obj:
    """The operator process reconciles N Rays; then it idles on a steady cluster; then a new
    operator process starts over them, without and (``noise``) with unrelated load."""
    ns = "bench-operator"
    audit = AuditLog(cp.audit_log_path, OPERATOR_USER)
    await create_namespace(kube, ns)
    runner = await PodRunner(kube.sibling(), namespace=ns).start()
    client = kube.sibling()
    operator = operator_process(cp, resync_seconds)
    deployments = Tracker(kube, DEPLOYMENT, ns, {"exists": exists}).start()
    services = Tracker(kube, SERVICE, ns, {"exists": exists}).start()
    rays = Tracker(kube, RAY, ns, {"healthy": ray_healthy}).start()
    sampler: RssSampler | None = None
    try:
        operator.start()
        assert operator.proc is not None
        pid = operator.proc.pid
        sampler = RssSampler(pid).start()
        # Ready when its caches are synced (its own /readyz).
        started = time.monotonic()
        start_offset = audit.offset()
        await asyncio.to_thread(operator.wait_ready, 60)
        startup_s = time.monotonic() - started
        startup_requests = audit.requests(start_offset)
        await asyncio.sleep(1.0)
        rss_idle_empty = tree_rss_mb(pid)

        ray_created: dict[str, float] = {}

        async def one(name: str) -> None:
            await client.create(RAY, ray_manifest(name), ns)
            ray_created[name] = time.monotonic()

        load_before = load()
        offset0 = audit.offset()
        cpu0 = tree_cpu_seconds(pid)
        t0 = time.monotonic()
        await bounded(concurrency, ray_names(n), one)
        created_s = time.monotonic() - t0
        deadline = t0 + timeout
        t_deps = await deployments.wait("exists", 2 * n, deadline)
        t_svcs = await services.wait("exists", n, deadline)
        t_children = None if t_deps is None or t_svcs is None else max(t_deps, t_svcs)
        t_healthy = await rays.wait("healthy", n, deadline)
        t1 = time.monotonic()
        cpu1 = tree_cpu_seconds(pid)
        await asyncio.sleep(0.5)  # the last status write reaches the audit log
        offset1 = audit.offset()
        create_requests = audit.requests(offset0, offset1)
        load_mid = load()

        # Steady: nothing changes; the operator should only keep its watches open.
        work0 = await asyncio.to_thread(operator_work, operator)
        profiler = start_profiler(pid, steady_seconds, profile_path)
        c0, w0 = tree_cpu_seconds(pid), time.monotonic()
        rss_samples: list[float] = []
        while time.monotonic() - w0 < steady_seconds:
            await asyncio.sleep(min(1.0, steady_seconds))
            rss_samples.append(tree_rss_mb(pid))
        c1, w1 = tree_cpu_seconds(pid), time.monotonic()
        work1 = await asyncio.to_thread(operator_work, operator)
        if profiler is not None:
            await asyncio.to_thread(profiler.wait, 30)
        offset2 = audit.offset()
        steady_requests = audit.requests(offset1, offset2)
        create_total = sum(create_requests.values())
        steady_total = sum(steady_requests.values())
        operator.stop()
        print("restart over the healthy Rays ...", flush=True)
        restarts: Obj = {"quiet": await restart_phase(cp, n, resync_seconds, settle_seconds)}
        if noise:
            print(f"unrelated load: {noise} Pods and {noise} ConfigMaps elsewhere ...", flush=True)
            noise_client = kube.sibling()
            try:
                noise_s = await create_noise(noise_client, noise, concurrency)
            finally:
                await noise_client.close()
            restarts["noise"] = await restart_phase(cp, n, resync_seconds, settle_seconds)
            restarts["noise"]["noise_create_s"] = noise_s
            quiet_rss, noisy_rss = (restarts[k]["rss_mb_steady"] for k in ("quiet", "noise"))
            restarts["rss_noise_over_quiet"] = ratio(noisy_rss, quiet_rss)
        return {
            "restart": restarts,
            "startup_s": round(startup_s, 2),
            "startup_requests": sum(startup_requests.values()),
            "create_calls_s": round(created_s, 2),
            "time_to_children_s": since(t0, t_children),
            "children_lag_per_ray_s": children_lag(ray_created, deployments, services),
            "time_to_healthy_s": since(t0, t_healthy),
            "rays_healthy": len(rays.first["healthy"]),
            "create_phase_requests": create_total,
            "create_phase_requests_per_resource": round(create_total / n, 2),
            "create_phase_requests_by_kind": dict(create_requests.most_common()),
            "create_phase_cpu_s": round(cpu1 - cpu0, 2),
            "create_phase_cpu_percent": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
            "steady_seconds": round(w1 - w0, 1),
            "steady_requests": steady_total,
            "steady_requests_per_resource": round(steady_total / n, 3),
            "steady_requests_by_kind": dict(steady_requests.most_common()),
            "idle_cpu_percent": round(100 * (c1 - c0) / (w1 - w0), 2),
            "steady_cpu_s": round(c1 - c0, 3),
            "steady_reconciles": int(work1["reconciles"] - work0["reconciles"]),
            "steady_reconcile_s": round(work1["reconcile_s"] - work0["reconcile_s"], 3),
            "steady_full_gcs": int(work1["full_gcs"] - work0["full_gcs"]),
            "steady_gc_s": round(work1["gc_s"] - work0["gc_s"], 3),
            "rss_mb_before_rays": round(rss_idle_empty, 1),
            "rss_mb_peak": round(max(sampler.peak_mb, *rss_samples), 1),
            "rss_mb_steady": round(rss_samples[-1], 1),
            "load_average_before": load_before,
            "load_average_after_create": load_mid,
            "load_average_after_steady": load(),
        }
    finally:
        if sampler is not None:
            await sampler.stop()
        for tracker in (deployments, services, rays):
            await tracker.stop()
        operator.stop()
        if noise:
            await delete_noise(kube, timeout)
        # Gone (with the pod runner still confirming pod deletions) before another run.
        await delete_namespace(kube, ns, timeout)
        await runner.stop()
        shutil.rmtree(runner.workdir, ignore_errors=True)
        await runner.kube.close()
        await client.close()


async def run(args: argparse.Namespace) -> Obj:
    n = args.count
    timeout = max(300.0, 3.0 * n)
    cp = LocalControlPlane(extra_users=(OPERATOR_USER,), audit_log=True)
    try:
        cp.start()
        kube = await Kube.connect(str(cp.kubeconfig))
        try:
            await install_crds(kube, all_crds())
            runs: list[Obj] = []
            for index in range(args.runs):
                print(f"run {index + 1} of {args.runs}", flush=True)
                print(f"floor: {n} Rays and their children, created by a script ...", flush=True)
                floor = await floor_phase(cp, kube, n, args.concurrency, timeout)
                print(f"operator: {n} Rays through the operator ...", flush=True)
                op = await operator_phase(
                    cp, kube, n, args.concurrency, timeout, args.steady_seconds,
                    args.resync_seconds, args.noise, args.settle_seconds,
                    profile_path=(args.profile_steady / f"steady-run{index + 1}.txt"
                                  if args.profile_steady else None),
                )
                runs.append({"floor": floor, "operator": op, "ratios": {
                    "time_to_children": ratio(op["time_to_children_s"],
                                              floor["time_to_children_s"]),
                    "time_to_healthy_vs_available": ratio(op["time_to_healthy_s"],
                                                          floor["time_to_available_s"]),
                }})
        finally:
            await kube.close()
    finally:
        cp.stop()
        if args.keep_workdir:
            print(f"logs and audit log kept in {cp.workdir}")
        else:
            shutil.rmtree(cp.workdir, ignore_errors=True)
    vm = psutil.virtual_memory()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": psutil.cpu_count(),
            "ram_gib": round(vm.total / 2**30, 1),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "kube_apiserver": f"{KUBE_VERSION} (local, etcd on tmpfs)",
        },
        "count": n,
        "noise": args.noise,
        "children_per_ray": (
            f"head Deployment (1 pod), worker Deployment ({WORKERS} pods), head Service"
        ),
        "concurrency": args.concurrency,
        "resync_seconds": args.resync_seconds,
        "runs": runs,
        "spread": spread(runs),
        **median_run(runs),
        "targets": TARGETS,
    }


def spread(runs: list[Obj]) -> Obj:
    """Median, minimum and maximum of the figures that move from run to run."""
    picks: dict[str, Callable[[Obj], float | None]] = {
        "ratio_time_to_children": lambda r: r["ratios"]["time_to_children"],
        "ratio_time_to_healthy": lambda r: r["ratios"]["time_to_healthy_vs_available"],
        "floor_time_to_children_s": lambda r: r["floor"]["time_to_children_s"],
        "operator_time_to_children_s": lambda r: r["operator"]["time_to_children_s"],
        "restart_ready_s": lambda r: r["operator"]["restart"]["quiet"]["ready_s"],
        "idle_cpu_percent": lambda r: r["operator"]["idle_cpu_percent"],
        "rss_mb_peak": lambda r: r["operator"]["rss_mb_peak"],
    }
    out: Obj = {}
    for name, pick in picks.items():
        values = sorted(v for v in (pick(r) for r in runs) if v is not None)
        if values:
            out[name] = {"median": values[len(values) // 2], "min": values[0],
                         "max": values[-1], "values": values}
    return out


def median_run(runs: list[Obj]) -> Obj:
    """The run whose time-to-children ratio is the median: the one the table shows."""
    ordered = sorted(runs, key=lambda r: r["ratios"]["time_to_children"] or 0.0)
    chosen = ordered[len(ordered) // 2]
    return {"floor": chosen["floor"], "operator": chosen["operator"], "ratios": chosen["ratios"]}


def verdicts(r: Obj) -> dict[str, bool | None]:
    op, ratios = r["operator"], r["ratios"]

    def under(value: float | None, limit: float) -> bool | None:
        return None if value is None else value <= limit

    restart = op["restart"]["quiet"]
    found: dict[str, bool | None] = {
        "time_to_children within 1.5x": under(ratios["time_to_children"], 1.5),
        "time_to_healthy within 1.5x": under(ratios["time_to_healthy_vs_available"], 1.5),
        "RSS (peak) under 150 MB": under(op["rss_mb_peak"], 150.0),
        "idle CPU under 2%": under(op["idle_cpu_percent"], 2.0),
        "restart: ready under 15 s": under(restart["ready_s"], 15.0),
        "restart: 0 writes": restart["writes"] == 0,
    }
    if r["count"] >= 1000:
        found["1,000: time_to_children within 1.3x"] = under(ratios["time_to_children"], 1.3)
        found["1,000: time_to_healthy within 1.1x"] = under(
            ratios["time_to_healthy_vs_available"], 1.1
        )
        found["1,000: idle CPU under 1%"] = under(op["idle_cpu_percent"], 1.0)
    noisy = op["restart"].get("noise")
    if noisy:
        found["noise: RSS under 250 MB"] = under(noisy["rss_mb_steady"], 250.0)
        over_quiet = op["restart"]["rss_noise_over_quiet"]
        found["noise: RSS within 10% of no noise"] = under(over_quiet, 1.1)
        found["noise: restart writes 0"] = noisy["writes"] == 0
    return found


def print_table(r: Obj) -> None:
    f, op, ratios = r["floor"], r["operator"], r["ratios"]
    m = r["machine"]
    rows = [
        (f"Rays (1 head + {WORKERS} workers each)", r["count"], ""),
        ("time to all children (s)", f["time_to_children_s"], op["time_to_children_s"]),
        (
            "children lag per Ray p50/p95 (s)",
            f"{f['children_lag_per_ray_s']['p50']}/{f['children_lag_per_ray_s']['p95']}",
            f"{op['children_lag_per_ray_s']['p50']}/{op['children_lag_per_ray_s']['p95']}",
        ),
        ("time to Available / Health=True (s)", f["time_to_available_s"], op["time_to_healthy_s"]),
        ("ratio operator/floor: children", "", ratios["time_to_children"]),
        ("ratio operator/floor: healthy", "", ratios["time_to_healthy_vs_available"]),
        (
            "requests per Ray (create phase)",
            f["requests_per_resource"],
            op["create_phase_requests_per_resource"],
        ),
        ("requests per Ray (steady phase)", "", op["steady_requests_per_resource"]),
        ("operator CPU during create (%)", "", op["create_phase_cpu_percent"]),
        ("operator idle CPU (%)", "", op["idle_cpu_percent"]),
        ("operator RSS peak / steady (MB)", "", f"{op['rss_mb_peak']} / {op['rss_mb_steady']}"),
        ("load average before", f["load_average_before"], op["load_average_before"]),
    ]
    print(f"\n{'':40} {'floor':>16} {'operator':>16}")
    for label, a, b in rows:
        print(f"{label:40} {a!s:>16} {b!s:>16}")
    print(f"\nmachine: {m['cores']} cores, {m['ram_gib']} GiB, Python {m['python']}")
    print(f"operator create-phase requests: {op['create_phase_requests_by_kind']}")
    print(f"operator steady-phase requests: {op['steady_requests_by_kind']}")
    for index, each in enumerate(r["runs"], 1):
        o = each["operator"]
        print(
            f"steady window, run {index}: {o['steady_cpu_s']} s CPU ({o['idle_cpu_percent']} %), "
            f"{o['steady_reconciles']} reconciles taking {o['steady_reconcile_s']} s, "
            f"{o['steady_full_gcs']} full GCs, {o['steady_gc_s']} s in GC"
        )
    for label, restart in op["restart"].items():
        if not isinstance(restart, dict):
            continue
        print(
            f"restart ({label}): ready {restart['ready_s']} s, every Ray reconciled twice by "
            f"{restart['two_reconciles_of_every_ray_s']} s, {restart['writes']} writes, at most "
            f"{restart['lists_and_watches_max_per_kind']} list/watch per kind, RSS "
            f"{restart['rss_mb_steady']} MB, idle CPU {restart['idle_cpu_percent']} %"
        )
    for name, values in r["spread"].items():
        print(f"spread {name}: median {values['median']}, {values['min']} to {values['max']}")
    for name, ok in r["targets_met"].items():
        print(f"target {name}: {'met' if ok else 'MISSED' if ok is False else 'not measured'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=200, help="Ray resources (default 200)")
    parser.add_argument(
        "--json", type=Path, default=RESULTS / "reconcile.json"
    )
    parser.add_argument("--steady-seconds", type=float, default=30.0)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=4,
        help="requests the script has in flight when it creates objects (both phases)",
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=10.0,
        help="the operator's resync period (short, so the steady window includes resyncs)",
    )
    parser.add_argument("--keep-workdir", action="store_true", help="keep logs and audit log")
    parser.add_argument("--workers", type=int, default=3, help="worker pods per Ray (default 3)")
    parser.add_argument(
        "--noise", type=int, default=0,
        help="unrelated Pods and as many ConfigMaps in other namespaces for the second restart",
    )
    parser.add_argument(
        "--profile-steady", type=Path, metavar="DIR",
        help="py-spy the operator through each steady window into DIR (collapsed stacks)",
    )
    parser.add_argument("--runs", type=int, default=1, help="runs in one control plane; median")
    parser.add_argument(
        "--settle-seconds", type=float, default=10.0,
        help="after a restart's reconciles: the window its CPU and RSS are sampled in",
    )
    args = parser.parse_args()
    global WORKERS
    WORKERS = args.workers
    if args.profile_steady:
        args.profile_steady.mkdir(parents=True, exist_ok=True)
    # SIGTERM ends the run like Ctrl-C: every finally block stops what it started.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    result = asyncio.run(run(args))
    result["targets_met"] = verdicts(result)
    print_table(result)
    write_results(result, args.json)


if __name__ == "__main__":
    main()
