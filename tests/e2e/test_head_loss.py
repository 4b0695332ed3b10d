"""Without GCS fault tolerance a lost head still ends in a whole cluster again, by itself.

The head pod is deleted (real Ray in the pod runner's process mode); its Deployment brings a new
head pod at a new address, the worker's raylet loses the old GCS, exits, and its container is
restarted, joining the new head through the Service's name. Nothing but the operator, the
controller-manager and the pod runner acts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ray_operator.jobs.ray_api import RayApiError, RayUnreachableError
from ray_operator.kube import POD, RAY, Kube
from ray_operator.localkube.control_plane import LocalControlPlane
from ray_operator.localkube.pod_runner import PodRunner
from tests.dashboard_process import dashboard
from tests.operator_process import OperatorProcess
from tests.ray_state import pod_ready, pods_with_role, run_script, status_of
from tests.waiting import eventually

EXAMPLES = Path(__file__).parents[2] / "examples"
COUNT = "import ray\nray.init()\nprint('RESULT', len([n for n in ray.nodes() if n['Alive']]))\n"


async def ray_status(kube: Kube, namespace: str) -> dict[str, Any]:
    return await status_of(kube, RAY, "sample-cluster", namespace)


async def alive_nodes(address: str) -> int:
    """Ray's own count of alive nodes, from a job on the cluster (0 while it cannot run one)."""
    try:
        info, logs = await run_script(address, COUNT, timeout=120)
    except (RayApiError, RayUnreachableError):
        return 0  # the new head's job API is not up yet
    lines = [x for x in logs.splitlines() if x.startswith("RESULT ")]
    return int(lines[0].split()[1]) if info.status == "SUCCEEDED" and lines else 0


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_a_deleted_head_pod_ends_in_a_whole_cluster_again(
    kube: Kube, namespace: str, control_plane: LocalControlPlane,
    running_operator: OperatorProcess,
) -> None:
    manifest = yaml.safe_load((EXAMPLES / "ray-simple.yaml").read_text())
    manifest["spec"]["worker"]["replicas"] = 1
    runner = await PodRunner(kube, namespace=namespace, run_containers=True).start()
    try:
        await kube.apply_manifest(manifest, namespace)
        await eventually(lambda: ray_status(kube, namespace), lambda s: s.get("health") == "True",
                         timeout=400, what="Health=True")
        (head,) = await pods_with_role(kube, namespace, "head")
        (worker,) = await pods_with_role(kube, namespace, "worker")

        await kube.delete(POD, head["metadata"]["name"], namespace)
        def new_and_ready(found: list[dict[str, Any]]) -> bool:
            return any(p["metadata"]["uid"] != head["metadata"]["uid"] and pod_ready(p)
                       for p in found)

        await eventually(lambda: pods_with_role(kube, namespace, "head"), new_and_ready,
                         timeout=300, what="a new head pod, ready")
        # The worker's raylet gives up on the old GCS (Ray's 60 s), its container restarts and
        # joins the new head: Ray counts both nodes alive again, and Health is True again.
        async with dashboard(control_plane, "sample-cluster", namespace) as address:
            await eventually(lambda: ray_status(kube, namespace),
                             lambda s: s.get("health") == "True", timeout=300,
                             what="Health=True with the new head")
            await eventually(lambda: alive_nodes(address), lambda n: n == 2, timeout=400,
                             what="head and worker alive in Ray")
        (after,) = await pods_with_role(kube, namespace, "worker")
        assert after["metadata"]["uid"] == worker["metadata"]["uid"]  # the same pod, rejoined
    finally:
        await runner.stop()
