"""Faults an operator meets in production, on a real control plane of this module's own.

The operators here run as the chart runs them (its rights, in-cluster); each test starts the
ones it needs. Watches are served from etcd (``watch_cache=False``), so a compaction makes a
watch that resumes from before it fail with 410, as a long outage would; the apiserver's audit
log (every request, with the client's user agent) tells who wrote what.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import pytest
import yaml

from ray_operator.api.crd import all_crds
from ray_operator.kube import DEPLOYMENT, EVENT, NAMESPACE, RAY, SERVICE, Kube, KubeError
from ray_operator.localkube.control_plane import LocalControlPlane
from ray_operator.localkube.crds import install_crds
from ray_operator.localkube.pod_runner import PodRunner
from tests.audit import by_agent, requests
from tests.chart_install import ROOT, ChartRelease
from tests.conftest import RESTRICTED
from tests.operator_process import OperatorProcess, value_of

Obj = dict[str, Any]
T = TypeVar("T")
pytestmark = pytest.mark.slow


class Cluster:
    """This module's control plane, the chart installed on it, and a namespace per test."""

    def __init__(self, cp: LocalControlPlane, kube: Kube, release: ChartRelease) -> None:
        self.cp = cp
        self.kube = kube
        self.release = release
        self.operators: list[OperatorProcess] = []

    def operator(self, pod: str = "0", **env: str) -> OperatorProcess:
        proc = self.release.operator(pod, **env)
        self.operators.append(proc)
        return proc

    async def ready(self, operator: OperatorProcess) -> None:
        await asyncio.to_thread(operator.wait_ready)


@pytest.fixture(scope="module")
async def cluster() -> AsyncIterator[Cluster]:
    with LocalControlPlane(watch_cache=False, audit_log=True) as cp:
        kube = await Kube.connect(str(cp.kubeconfig))
        await install_crds(kube, all_crds())
        release = await ChartRelease(cp, kube, {"resyncSeconds": 5}, "ray-system").install()
        try:
            yield Cluster(cp, kube, release)
        finally:
            await release.uninstall()
            await kube.close()


@pytest.fixture
async def ns(cluster: Cluster) -> AsyncIterator[str]:
    name = f"f-{secrets.token_hex(3)}"
    await cluster.kube.create(NAMESPACE, {"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": name, "labels": RESTRICTED}})
    runner = await PodRunner(cluster.kube, namespace=name).start()
    yield name
    for proc in cluster.operators:
        await asyncio.to_thread(proc.stop)
    cluster.operators.clear()
    await cluster.kube.delete(NAMESPACE, name)
    # Gone before the next test: a terminating namespace's Rays outlive their children for a
    # while, and the next test's operator would (rightly) try to repair them there. The pod
    # runner stays meanwhile: like a kubelet, it confirms that the pods it ran are gone.
    await until(f"namespace {name} deleted", absent(cluster.kube, NAMESPACE, "", name), 300)
    await runner.stop()


async def until(what: str, probe: Callable[[], Awaitable[T | None]], timeout: float,
                *logs: OperatorProcess) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await probe()
        if found is not None:
            return found
        await asyncio.sleep(0.25)
    shown = "\n".join(op.logs()[-3000:] for op in logs)
    raise AssertionError(f"not within {timeout}s: {what}\n{shown}")


def ray(name: str, workers: int = 1) -> Obj:
    manifest: Obj = yaml.safe_load((ROOT / "examples" / "ray-simple.yaml").read_text())
    manifest["metadata"] = {"name": name}
    manifest["spec"]["worker"]["replicas"] = workers
    return manifest


async def healthy(kube: Kube, ns: str, name: str, *logs: OperatorProcess) -> Obj:
    async def probe() -> Obj | None:
        found = await kube.get_or_none(RAY, name, ns)
        return found if found and (found.get("status") or {}).get("health") == "True" else None

    return await until(f"Ray {name} healthy", probe, 120, *logs)


def absent(kube: Kube, kind: Any, ns: str, name: str) -> Callable[[], Awaitable[bool | None]]:
    async def probe() -> bool | None:
        return True if await kube.get_or_none(kind, name, ns) is None else None

    return probe


def present(kube: Kube, kind: Any, ns: str, name: str) -> Callable[[], Awaitable[Obj | None]]:
    return lambda: kube.get_or_none(kind, name, ns)


async def stays_absent(kube: Kube, kind: Any, ns: str, name: str, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert await kube.get_or_none(kind, name, ns) is None, f"{name} came back"
        await asyncio.sleep(0.5)


async def quiet(cp: LocalControlPlane, seconds: float) -> None:
    """Until no operator has written anything (Leases aside) for ``seconds``."""
    offset, last_write = cp.audit_log_path.stat().st_size, time.monotonic()
    while time.monotonic() - last_write < seconds:
        await asyncio.sleep(0.25)
        size = cp.audit_log_path.stat().st_size
        new = by_agent(requests(cp.audit_log_path, offset), "ray-operator/")
        if any(r.write and r.resource != "leases" for r in new):
            last_write = time.monotonic()
        offset = size


async def test_watch_loss_relists_and_prunes(cluster: Cluster, ns: str) -> None:
    kube, cp = cluster.kube, cluster.cp
    op = cluster.operator().start()
    await cluster.ready(op)
    for name in ("kept", "gone"):
        await kube.create(RAY, ray(name), ns)
    for name in ("kept", "gone"):
        await healthy(kube, ns, name, op)
    op.pause()
    try:
        await kube.delete(DEPLOYMENT, "kept-worker", ns)
        await kube.delete(RAY, "gone", ns, propagation="Foreground")
        await until("gone's children collected", absent(kube, RAY, ns, "gone"), 60)
        cp.compact_etcd()
        # Every watch breaks while the operator sleeps (a control plane upgrade); the versions
        # it held are compacted away.
        cp.stop_apiserver()
        cp.start_apiserver()
    finally:
        op.resume()
    await until("kept-worker recreated", present(kube, DEPLOYMENT, ns, "kept-worker"), 10, op)
    await stays_absent(kube, DEPLOYMENT, ns, "gone-worker", 30)
    assert await kube.get_or_none(SERVICE, "gone-head", ns) is None
    assert re.search(r"watch of Deployment.* broke", op.logs()), "the watch did not break"


async def test_a_resumed_watch_from_a_compacted_version_is_refused_with_410(
    cluster: Cluster, ns: str
) -> None:
    """What the informer relists on: the apiserver's answer to a version compacted away."""
    kube, cp = cluster.kube, cluster.cp
    listing = await kube.list_all(DEPLOYMENT, ns)
    await kube.create(DEPLOYMENT, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "churn"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}},
                              "spec": {"containers": [{"name": "c", "image": "i"}]}}},
    }, ns)
    cp.compact_etcd()
    with pytest.raises(KubeError) as refused:
        async for _ in kube.watch(DEPLOYMENT, ns, resource_version=listing.resource_version,
                                  timeout_seconds=5):
            pass
    assert refused.value.status == 410


async def test_an_apiserver_restart_is_survived(cluster: Cluster, ns: str) -> None:
    kube, cp = cluster.kube, cluster.cp
    op = cluster.operator().start()
    await cluster.ready(op)
    await kube.create(RAY, ray("steady"), ns)
    await healthy(kube, ns, "steady", op)
    cp.stop_apiserver()
    try:
        down = time.monotonic()
        not_ready = False
        while time.monotonic() - down < 20:
            assert op.proc is not None and op.proc.poll() is None, "the operator exited"
            not_ready = not_ready or op.probe("/readyz") == 503
            await asyncio.sleep(0.5)
        assert op.probe("/healthz") == 200
        assert not_ready, "readiness did not follow the lost watches"
    finally:
        cp.start_apiserver()
    await until("ready again", lambda: asyncio.to_thread(
        lambda: True if op.probe("/readyz") == 200 else None), 30, op)
    await kube.patch(DEPLOYMENT, "steady-worker", {"spec": {"replicas": 4}}, ns)

    async def repaired() -> bool | None:
        worker = await kube.get(DEPLOYMENT, "steady-worker", ns)
        return True if worker["spec"]["replicas"] == 1 else None

    await until("drift repaired after the restart", repaired, 10, op)


async def test_failover_within_the_lease_and_no_object_written_by_both(
    cluster: Cluster, ns: str
) -> None:
    kube, cp = cluster.kube, cluster.cp
    start = cp.audit_log_path.stat().st_size
    first = cluster.operator("a").start()
    await cluster.ready(first)
    second = cluster.operator("b").start()
    await cluster.ready(second)

    def leading(op: OperatorProcess) -> bool:
        return bool(re.search(r"^ray_operator_leader 1\.0$", op.metrics(), re.M))

    leader, standby = (first, second) if leading(first) else (second, first)
    assert leading(leader) and not leading(standby)
    await kube.create(RAY, ray("before"), ns)
    await healthy(kube, ns, "before", leader)
    leader.kill()
    killed = time.monotonic()
    await kube.create(RAY, ray("after"), ns)
    await until("the standby reconciles", present(kube, DEPLOYMENT, ns, "after-worker"),
                15 + 5, standby)
    took = time.monotonic() - killed
    await healthy(kube, ns, "after", standby)
    writers: dict[tuple[str, str, str], set[str]] = {}
    for req in requests(cp.audit_log_path, start, stage="ResponseComplete"):
        if req.write and req.namespace == ns and "ray-operator/" in req.user_agent:
            writers.setdefault((req.resource, req.namespace, req.name), set()).add(req.user_agent)
    both = {obj: agents for obj, agents in writers.items() if len(agents) > 1}
    assert both == {}, both
    assert took < 20, took


async def test_a_foreign_child_is_left_alone_and_reported_once(cluster: Cluster, ns: str) -> None:
    kube = cluster.kube
    op = cluster.operator().start()
    await cluster.ready(op)
    foreign = await kube.create(DEPLOYMENT, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "taken-head"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "mine"}},
                 "template": {"metadata": {"labels": {"app": "mine"}},
                              "spec": {"containers": [{"name": "c", "image": "mine:1"}]}}},
    }, ns)
    await kube.create(RAY, ray("taken"), ns)
    await kube.create(RAY, ray("neighbour"), ns)

    async def conflict() -> Obj | None:
        status = (await kube.get(RAY, "taken", ns)).get("status") or {}
        health = next((c for c in status.get("conditions", []) if c["type"] == "Health"), {})
        return health if health.get("reason") == "ChildConflict" else None

    health = await until("ChildConflict", conflict, 30, op)
    assert health["status"] == "False"
    assert f"Deployment {ns}/taken-head" in health["message"] and "nobody" in health["message"]
    await healthy(kube, ns, "neighbour", op)  # the others are served meanwhile
    logged_before = op.logs().count("taken")
    await op.more_reconciles(12)  # six resyncs of the two
    assert op.logs().count("taken") - logged_before <= 3, "the log repeats the conflict"
    events = [e for e in await kube.list(EVENT, ns)
              if e["involvedObject"]["name"] == "taken" and e["reason"] == "ChildConflict"]
    assert len(events) == 1 and events[0]["type"] == "Warning"
    now = await kube.get(DEPLOYMENT, "taken-head", ns)
    assert now["metadata"]["resourceVersion"] == foreign["metadata"]["resourceVersion"] or (
        now["metadata"].get("generation") == 1 and not now["metadata"].get("ownerReferences")
    )
    assert now["spec"]["template"]["spec"]["containers"][0]["image"] == "mine:1"


async def test_the_metrics_say_what_the_operator_did(cluster: Cluster, ns: str) -> None:
    """What a dashboard built on /metrics would show after one cluster was made healthy."""
    op = cluster.operator().start()
    await cluster.ready(op)
    await cluster.kube.create(RAY, ray("counted"), ns)
    await healthy(cluster.kube, ns, "counted", op)
    await op.more_reconciles(1)
    value = partial(value_of, await asyncio.to_thread(op.samples))  # one scrape for all

    assert value("ray_operator_reconcile_total", controller="ray", result="success") >= 2
    assert value("ray_operator_reconcile_duration_seconds_count", controller="ray") >= 2
    # Its two Deployments and its Service, created; its status, patched.
    assert value("ray_operator_api_requests_total", verb="POST", code="201") >= 3
    assert value("ray_operator_api_requests_total", verb="PATCH", code="200") >= 1
    assert value("ray_operator_workqueue_depth", controller="ray") == 0
    assert value("ray_operator_leader") == 1 and value("ray_operator_caches_synced") == 1
    assert value("process_resident_memory_bytes") > 10 * 2**20
    assert value("process_cpu_seconds_total") > 0
    assert value("python_gc_collections_total", generation="0") > 0
    assert value("ray_operator_gc_pause_seconds_total", generation="0") > 0


async def test_what_others_add_to_a_child_survives_a_rolling_update(
    cluster: Cluster, ns: str
) -> None:
    kube = cluster.kube
    op = cluster.operator().start()
    await cluster.ready(op)
    await kube.create(RAY, ray("shared"), ns)
    await healthy(kube, ns, "shared", op)
    added = {"metadata": {"labels": {"team": "ml"}, "annotations": {"cost-center": "42"},
                          "finalizers": ["example.com/keep"]}}
    await kube.patch(DEPLOYMENT, "shared-worker", added, ns)
    manifest = ray("shared")
    manifest["spec"]["worker"]["template"] = {
        "spec": {"containers": [{"name": "ray-worker", "image": "rayproject/ray:2.60.0-py311"}]}
    }
    current = await kube.get(RAY, "shared", ns)
    await kube.patch(RAY, "shared", {"spec": manifest["spec"]}, ns)
    assert current["metadata"]["generation"] == 1

    async def rolled() -> Obj | None:
        worker = await kube.get(DEPLOYMENT, "shared-worker", ns)
        image = worker["spec"]["template"]["spec"]["containers"][0]["image"]
        return worker if image.endswith("-py311") else None

    worker = await until("worker rolled", rolled, 30, op)
    meta = worker["metadata"]
    assert meta["labels"]["team"] == "ml"
    assert meta["annotations"]["cost-center"] == "42"
    assert "example.com/keep" in meta["finalizers"]
    await kube.patch(DEPLOYMENT, "shared-worker", {"metadata": {"finalizers": None}}, ns)


async def test_drift_made_while_the_operator_was_down_is_repaired_at_its_start(
    cluster: Cluster, ns: str
) -> None:
    kube = cluster.kube
    op = cluster.operator().start()
    await cluster.ready(op)
    await kube.create(RAY, ray("edited"), ns)
    await healthy(kube, ns, "edited", op)
    await asyncio.to_thread(op.stop)
    worker = await kube.get(DEPLOYMENT, "edited-worker", ns)
    containers = worker["spec"]["template"]["spec"]["containers"]
    wanted = containers[0]["image"]
    containers[0]["image"] = "someone/else:1"
    await kube.replace(DEPLOYMENT, worker)
    op = cluster.operator().start()
    await cluster.ready(op)
    started = time.monotonic()

    async def restored() -> bool | None:
        found = await kube.get(DEPLOYMENT, "edited-worker", ns)
        image = found["spec"]["template"]["spec"]["containers"][0]["image"]
        return True if image == wanted else None

    await until("the image put back", restored, 10, op)
    assert time.monotonic() - started < 10


async def test_a_restart_over_200_healthy_clusters_writes_nothing(
    cluster: Cluster, ns: str
) -> None:
    kube, cp = cluster.kube, cluster.cp
    op = cluster.operator().start()
    await cluster.ready(op)
    names = [f"r{i:03d}" for i in range(200)]
    for name in names:
        await kube.create(RAY, ray(name), ns)
    for name in names:
        await healthy(kube, ns, name, op)
    await quiet(cp, 3.0)  # the last status writes have landed
    await asyncio.to_thread(op.stop)
    start = cp.audit_log_path.stat().st_size
    op = cluster.operator(pod="restarted").start()
    await cluster.ready(op)
    await op.more_reconciles(3 * len(names))  # every Ray looked at three times
    seen = by_agent(requests(cp.audit_log_path, start), "ray-operator/")
    done = by_agent(requests(cp.audit_log_path, start, "ResponseComplete"), "ray-operator/")
    writes = [r for r in done if r.write and r.resource != "leases"]
    synced = [line for line in op.logs().splitlines() if "caches synced" in line]
    assert writes == [], (writes, synced)
    per_kind = Counter((r.verb, r.resource) for r in seen if r.verb in ("list", "watch"))
    assert per_kind and max(per_kind.values()) == 1, per_kind
