"""Two worker groups of different Ray resources on real Ray: tasks land by resource.

The simple example with no plain workers and two groups, ``big`` and ``small``, whose
``rayResources`` differ. Tasks that ask for a group's resource run on that group's pod (Ray's
node address is the pod's IP); no worker restarts while the cluster starts; suspending it
removes every pod and resuming brings back a whole cluster. The pods run as local processes (the
pod runner's container mode); nothing but the operator, the controller-manager and Ray acts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ray_operator.kube import POD, RAY, Kube
from ray_operator.localkube.control_plane import LocalControlPlane
from ray_operator.localkube.pod_runner import PodRunner
from tests.dashboard_process import dashboard
from tests.operator_process import OperatorProcess
from tests.ray_state import run_script, status_of
from tests.waiting import eventually

Obj = dict[str, Any]
EXAMPLES = Path(__file__).parents[2] / "examples"
NAME = "sample-cluster"
# Each task says where it ran; the nodes say what they offer.
WORK = """
import json, ray
ray.init()
@ray.remote
def where():
    return ray.util.get_node_ip_address()
big = ray.get([where.options(resources={"big": 1}).remote() for _ in range(4)])
small = ray.get([where.options(resources={"small": 1}).remote() for _ in range(4)])
nodes = {n["NodeManagerAddress"]: sorted(n["Resources"]) for n in ray.nodes() if n["Alive"]}
print("RESULT " + json.dumps({"big": sorted(set(big)), "small": sorted(set(small)),
                              "nodes": nodes}))
"""
ALIVE = """
import json, ray
ray.init()
print("RESULT " + json.dumps({"alive": sum(1 for n in ray.nodes() if n["Alive"])}))
"""


def result(logs: str) -> Obj:
    line = next(x for x in logs.splitlines() if x.startswith("RESULT "))
    found: Obj = json.loads(line.removeprefix("RESULT "))
    return found


async def pods(kube: Kube, namespace: str) -> list[Obj]:
    return [p for p in await kube.list(POD, namespace, f"ray.kubeflow.org/cluster={NAME}")
            if not p["metadata"].get("deletionTimestamp")]


def by_role(found: list[Obj]) -> dict[str, Obj]:
    return {p["metadata"]["labels"]["ray.kubeflow.org/role"]: p for p in found}


def restarts(pod: Obj) -> int:
    return sum(c.get("restartCount", 0) for c in pod["status"].get("containerStatuses") or [])


@pytest.mark.slow
@pytest.mark.timeout(1200)
async def test_tasks_land_on_the_group_that_offers_their_resource_and_suspend_resumes(
    kube: Kube, namespace: str, control_plane: LocalControlPlane,
    running_operator: OperatorProcess,
) -> None:
    manifest = yaml.safe_load((EXAMPLES / "ray-simple.yaml").read_text())
    manifest["spec"]["worker"]["replicas"] = 0
    manifest["spec"]["workerGroups"] = [
        {"name": "big", "replicas": 1, "rayResources": {"big": 2}},
        {"name": "small", "replicas": 1, "rayResources": {"small": 2}},
    ]
    runner = await PodRunner(kube, namespace=namespace, run_containers=True).start()
    try:
        await kube.apply_manifest(manifest, namespace)
        status = await eventually(lambda: status_of(kube, RAY, NAME, namespace),
                                  lambda s: s.get("health") == "True", 400, "Health=True")
        assert sorted(g["name"] for g in status["workerGroups"]) == ["big", "small"]
        roles = by_role(await pods(kube, namespace))
        assert sorted(roles) == ["head", "worker-big", "worker-small"]
        # A clean start: each worker waited for the head's GCS, none restarted.
        assert [restarts(roles[r]) for r in ("worker-big", "worker-small")] == [0, 0]

        async with dashboard(control_plane, NAME, namespace) as address:
            info, logs = await run_script(address, WORK)
            assert info.status == "SUCCEEDED", logs
            found = result(logs)
            assert found["big"] == [roles["worker-big"]["status"]["podIP"]], found
            assert found["small"] == [roles["worker-small"]["status"]["podIP"]], found
            assert "big" in found["nodes"][found["big"][0]], found
            assert "small" in found["nodes"][found["small"][0]], found

        # Suspend: every pod goes, the Service stays, Health says why.
        await kube.patch(RAY, NAME, {"spec": {"suspend": True}}, namespace)
        await eventually(lambda: pods(kube, namespace), lambda p: p == [], 120, "no pod")
        status = await eventually(
            lambda: status_of(kube, RAY, NAME, namespace),
            lambda s: s.get("conditions", [{}])[0].get("reason") == "Suspended", 60, "Suspended")
        assert status["health"] == "False"

        # Resume: the cluster as declared, whole again in Ray's own eyes.
        await kube.patch(RAY, NAME, {"spec": {"suspend": False}}, namespace)
        await eventually(lambda: status_of(kube, RAY, NAME, namespace),
                         lambda s: s.get("health") == "True", 400, "Health=True again")
        async with dashboard(control_plane, NAME, namespace) as address:
            info, logs = await run_script(address, ALIVE)
        assert info.status == "SUCCEEDED", logs
        assert result(logs) == {"alive": 3}
    finally:
        await runner.stop()
