"""The chart's rights, proven alone: an operator with exactly those rights and no other one.

Each test gets a control plane of its own, on which the only operator is the one the chart
installs (run as its Deployment would run it: in-cluster, with the chart's ServiceAccount, command
and environment). It takes a Ray through create, spec change, scale, drift repair and delete; a
RayJob through runner replacement and the finalizer's stop of a running job; a RayPipeline
through its deadline; and its log must hold no refused request. Both RBAC modes: cluster-wide, and
a Role per watched namespace.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from ray_operator.api.crd import all_crds
from ray_operator.kube import DEPLOYMENT, NAMESPACE, POD, RAY, RAYJOB, RAYPIPELINE, Kube
from ray_operator.localkube.control_plane import LocalControlPlane
from ray_operator.localkube.crds import install_crds
from ray_operator.localkube.pod_runner import PodRunner
from tests.chart_install import ChartRelease, refused_lines
from tests.conftest import RESTRICTED
from tests.fixtures.ray_head import RayHead
from tests.integration.jobs.test_rayjob_controller import mark_pod_failed, ray_jobs
from tests.operator_process import OperatorProcess
from tests.runner_pod import finish, start_pod

pytest.importorskip("helm_python")
ROOT = Path(__file__).resolve().parents[2]
Obj = dict[str, Any]
T = TypeVar("T")
pytestmark = pytest.mark.slow


async def until(
    what: str,
    probe: Callable[[], Awaitable[T | None]],
    operator: OperatorProcess,
    timeout: float = 60,
) -> T:
    """Poll ``probe`` until it returns something; fail naming ``what``, with the operator's log."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        found = await probe()
        if found is not None:
            return found
        await asyncio.sleep(0.3)
    raise AssertionError(f"not seen within {timeout}s: {what}\n{operator.logs()[-5000:]}")


@pytest.fixture
async def alone(tmp_path: Path) -> AsyncIterator[tuple[LocalControlPlane, Kube]]:
    """A control plane of this test's own: no other operator can do the chart's work."""
    with LocalControlPlane() as cp:
        kube = await Kube.connect(str(cp.kubeconfig))
        await install_crds(kube, all_crds())
        try:
            yield cp, kube
        finally:
            await kube.close()


async def make_namespace(kube: Kube) -> str:
    name = f"w-{secrets.token_hex(3)}"
    await kube.create(
        NAMESPACE,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": RESTRICTED}},
    )
    return name


async def exercise(
    cp: LocalControlPlane,
    kube: Kube,
    values: Obj,
    release_ns: str,
    ns: str,
    ray_head: RayHead,
    tmp_path: Path,
) -> None:
    release = await ChartRelease(cp, kube, {**values, "resyncSeconds": 5}, release_ns).install()
    operator = release.operator().start()
    runner = await PodRunner(kube, namespace=ns).start()
    try:
        operator.wait_ready()
        await start_late_pipeline(kube, ns)  # runs out of time while the rest goes on
        await ray_lifecycle(cp, kube, ns, operator)
        await rayjob_lifecycle(cp, kube, ns, operator, ray_head, tmp_path)
        await pipeline_ended_late(kube, ns, operator)
    finally:
        await runner.stop()
        operator.stop()
        await release.uninstall()
    refused = refused_lines(operator.logs())
    assert refused == [], "refused with the chart's RBAC:\n" + "\n".join(refused)


async def ray_lifecycle(cp: LocalControlPlane, kube: Kube, ns: str, op: OperatorProcess) -> None:
    manifest = yaml.safe_load((ROOT / "examples" / "ray-simple.yaml").read_text())
    name = manifest["metadata"]["name"]
    await kube.apply_manifest(manifest, ns)

    async def health(value: str) -> Obj | None:
        ray = await kube.get(RAY, name, ns)
        return ray if (ray.get("status") or {}).get("health") == value else None

    await until("Ray healthy", lambda: health("True"), op)
    # A spec change rolls the workers.
    manifest["spec"]["worker"]["template"] = {
        "spec": {"containers": [{"name": "ray-worker", "image": "rayproject/ray:2.60.0-py311"}]}
    }
    await kube.apply_manifest(manifest, ns)

    async def worker_image() -> str | None:
        worker = await kube.get(DEPLOYMENT, f"{name}-worker", ns)
        image = worker["spec"]["template"]["spec"]["containers"][0]["image"]
        return image if image.endswith("-py311") else None

    await until("worker image rolled", worker_image, op)
    # kubectl scale goes through the Ray's scale subresource.
    cp.run_kubectl("scale", f"ray/{name}", "--replicas=2", "-n", ns)

    async def replicas(wanted: int) -> int | None:
        worker = await kube.get(DEPLOYMENT, f"{name}-worker", ns)
        return wanted if worker["spec"]["replicas"] == wanted else None

    await until("2 workers", lambda: replicas(2), op)
    # A hand edit of the child is repaired: update rights, not only create.
    await kube.patch(DEPLOYMENT, f"{name}-worker", {"spec": {"replicas": 7}}, ns)
    await until("hand edit repaired", lambda: replicas(2), op)
    await kube.delete(RAY, name, ns)

    async def gone() -> bool | None:
        return True if await kube.get_or_none(DEPLOYMENT, f"{name}-worker", ns) is None else None

    await until("children garbage-collected", gone, op)


async def rayjob_lifecycle(
    cp: LocalControlPlane,
    kube: Kube,
    ns: str,
    op: OperatorProcess,
    ray_head: RayHead,
    tmp_path: Path,
) -> None:
    script = "import time\nprint('started', flush=True)\ntime.sleep(600)\n"
    name = f"chart-{secrets.token_hex(2)}"
    await kube.create(
        RAYJOB,
        {
            "apiVersion": "ray.kubeflow.org/v1",
            "kind": "RayJob",
            "metadata": {"name": name},
            "spec": {"address": ray_head.address, "script": script, "updateInterval": 0.5},
        },
        ns,
    )

    async def pod() -> Obj | None:
        return await kube.get_or_none(POD, f"{name}-rayjob", ns)

    first = await until("runner pod", pod, op)
    (tmp_path / "first").mkdir()
    proc = await start_pod(kube, cp, first, tmp_path / "first")

    async def status(field: str, value: str) -> Obj | None:
        found = (await kube.get(RAYJOB, name, ns)).get("status") or {}
        return found if found.get(field) == value else None

    try:
        await until("RayJob RUNNING", lambda: status("jobStatus", "RUNNING"), op)
    finally:
        proc.kill()
        proc.wait()
    # The node went away with the runner: the operator deletes the pod and makes another.
    await mark_pod_failed(kube, f"{name}-rayjob", ns)

    async def successor() -> Obj | None:
        current = await pod()
        return (
            current if current and current["metadata"]["uid"] != first["metadata"]["uid"] else None
        )

    second = await until("a new runner pod", successor, op)
    (tmp_path / "second").mkdir()
    proc = await start_pod(kube, cp, second, tmp_path / "second")
    try:
        # Deleting the RayJob stops its Ray job first (the finalizer), then lets it go.
        await kube.delete(RAYJOB, name, ns)

        async def deleted() -> bool | None:
            return True if await kube.get_or_none(RAYJOB, name, ns) is None else None

        await until("RayJob deleted", deleted, op)
    finally:
        await finish(proc, 60)

    async def stopped() -> bool | None:
        # Ray acknowledges the stop at once and ends the driver a moment later.
        (job,) = await ray_jobs(ray_head.address, name)
        assert job.status in ("RUNNING", "STOPPED"), job
        return True if job.status == "STOPPED" else None

    await until("the Ray job STOPPED", stopped, op)


async def start_late_pipeline(kube: Kube, ns: str) -> None:
    """A pipeline that creates its Ray and whose one step outlives the pipeline's deadline."""
    step = {"name": "train", "script": "import time\ntime.sleep(600)\n"}
    await kube.create(
        RAYPIPELINE,
        {
            "apiVersion": "ray.kubeflow.org/v1",
            "kind": "RayPipeline",
            "metadata": {"name": "late"},
            "spec": {
                "steps": [step],
                "rayClusterSpec": {"worker": {"replicas": 1}},
                "timeoutMinutes": 1,
            },
        },
        ns,
    )


async def pipeline_ended_late(kube: Kube, ns: str, op: OperatorProcess) -> None:
    """Its Ray and step were created, the step killed at the deadline, the Ray deleted."""

    async def ended() -> Obj | None:
        found = (await kube.get(RAYPIPELINE, "late", ns)).get("status") or {}
        return found if found.get("phase") in ("Failed", "Succeeded") else None

    status = await until("pipeline ended", ended, op, timeout=120)
    assert status["reason"] == "DeadlineExceeded", status
    job = await kube.get(RAYJOB, "late-train", ns)
    assert job["spec"].get("kill") is True

    async def cluster_gone() -> bool | None:
        return True if await kube.get_or_none(RAY, "late-ray", ns) is None else None

    await until("the pipeline's Ray deleted", cluster_gone, op)


async def test_cluster_wide_install_is_enough_alone(
    alone: tuple[LocalControlPlane, Kube], ray_head: RayHead, tmp_path: Path
) -> None:
    cp, kube = alone
    ns = await make_namespace(kube)
    await exercise(cp, kube, {}, "ray-system", ns, ray_head, tmp_path)


async def test_namespaced_install_is_enough_alone(
    alone: tuple[LocalControlPlane, Kube], ray_head: RayHead, tmp_path: Path
) -> None:
    cp, kube = alone
    ns = await make_namespace(kube)
    values = {"rbac": {"clusterWide": False}, "watchNamespaces": [ns]}
    await exercise(cp, kube, values, f"ops-{secrets.token_hex(3)}", ns, ray_head, tmp_path)
