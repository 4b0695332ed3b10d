"""The operator's side of autoscaling on a real apiserver and controller-manager.

The operator runs as the chart runs it; pods are marked Running by the pod runner's status mode
(as a kubelet would). Where the autoscaler acts, the test acts with the
autoscaler's own ServiceAccount token: what it does here, Ray's autoscaler may do, and no more.
The end-to-end test with real Ray is tests/e2e/test_autoscaling.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from ray_operator.autoscaling import provider_code
from ray_operator.kube import (
    CONFIGMAP,
    DEPLOYMENT,
    EVENT,
    POD,
    RAY,
    ROLE,
    ROLE_BINDING,
    SERVICE_ACCOUNT,
    Kube,
    KubeError,
)
from ray_operator.localkube.control_plane import LocalControlPlane
from ray_operator.localkube.pod_runner import PodRunner
from ray_operator.localkube.service_account import request_token
from tests.waiting import eventually

Obj = dict[str, Any]
NAME = "elastic"
pytestmark = pytest.mark.usefixtures("running_operator")


def autoscaled(replicas: int = 1, low: int = 0, high: int = 3) -> Obj:
    worker = {
        "spec": {
            "containers": [{
                "name": "ray-worker",
                "image": "rayproject/ray:2.60.0",
                "command": ["ray"],
                "args": ["start", "--address=$(RAY_HEAD_SERVICE):6379", "--num-cpus=1",
                         "--block"],
                "resources": {"limits": {"cpu": "1", "memory": "2Gi"}},
                "securityContext": {"allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]}},
            }],
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                                "seccompProfile": {"type": "RuntimeDefault"}},
        }
    }
    return {
        "apiVersion": "ray.kubeflow.org/v1",
        "kind": "Ray",
        "metadata": {"name": NAME},
        "spec": {
            "autoscaling": {"enabled": True, "idleTimeoutSeconds": 30},
            "worker": {"replicas": replicas, "minReplicas": low, "maxReplicas": high,
                       "template": worker},
        },
    }


async def status_of(kube: Kube, ns: str) -> Obj:
    found: Obj = (await kube.get(RAY, NAME, ns)).get("status") or {}
    return found


async def events(kube: Kube, ns: str) -> list[Obj]:
    return [e for e in await kube.list(EVENT, ns) if e["involvedObject"]["name"] == NAME]


WORKERS = f"ray.kubeflow.org/cluster={NAME},ray.kubeflow.org/role=worker"


async def workers(kube: Kube, ns: str) -> list[Obj]:
    pods = await kube.list(POD, ns, WORKERS)
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def ready(pod: Obj) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod.get("status", {}).get("conditions") or [])


async def name_for_removal(autoscaler: Kube, ns: str, replicas: int, pods: list[str]) -> None:
    """What Ray's autoscaler writes (ray_operator.autoscaling.node_provider.scale_patch)."""
    ray = await autoscaler.get(RAY, NAME, ns)
    await autoscaler.patch(RAY, NAME, [
        {"op": "test", "path": "/metadata/resourceVersion",
         "value": ray["metadata"]["resourceVersion"]},
        {"op": "add", "path": "/spec/worker/replicas", "value": replicas},
        {"op": "add", "path": "/spec/worker/scaleStrategy", "value": {"workersToDelete": pods}},
    ], ns, patch_type="json")


Connect = Callable[[], Awaitable[Kube]]


@pytest.fixture
async def as_autoscaler(
    kube: Kube, namespace: str, control_plane: LocalControlPlane, tmp_path: Path
) -> AsyncIterator[Connect]:
    """Connects with the token of the Ray's autoscaler ServiceAccount (once it exists)."""
    clients: list[Kube] = []

    async def connect() -> Kube:
        name = f"{NAME}-autoscaler"
        await eventually(lambda: kube.get_or_none(SERVICE_ACCOUNT, name, namespace),
                         lambda found: found is not None, 30, "the autoscaler's ServiceAccount")
        token, _ = await asyncio.to_thread(request_token, control_plane.server,
                                           control_plane.token, namespace, name)
        config = tmp_path / "autoscaler.kubeconfig"
        config.write_text(control_plane.kubeconfig_text(token, "autoscaler"))
        clients.append(await Kube.connect(str(config)))
        return clients[-1]

    yield connect
    for client in clients:
        await client.close()


async def test_an_autoscaled_ray_gets_its_autoscaler_which_may_touch_its_ray_only(
    kube: Kube, namespace: str, pod_runner: PodRunner, as_autoscaler: Connect
) -> None:
    await kube.apply_manifest(autoscaled(replicas=2), namespace)
    autoscaler = await as_autoscaler()
    status = await eventually(lambda: status_of(kube, namespace),
                              lambda s: s.get("health") == "True", 60, "Health=True")
    name = f"{NAME}-autoscaler"
    deployment = await kube.get(DEPLOYMENT, name, namespace)
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert pod["serviceAccountName"] == name
    assert pod["containers"][0]["image"] == "rayproject/ray:2.60.0"  # the head's Ray image
    config_map = await kube.get(CONFIGMAP, name, namespace)
    assert config_map["data"]["ray_operator_autoscaler.py"] == provider_code()
    config = json.loads(config_map["data"]["autoscaling.json"])
    assert config["available_node_types"]["worker"] == {
        "node_config": {}, "min_workers": 0, "max_workers": 3,
        "resources": {"CPU": 1.0, "memory": 2.0 * 2**30},
    }
    assert config["idle_timeout_minutes"] == 0.5
    (rule,) = (await kube.get(ROLE, name, namespace))["rules"]
    assert rule == {"apiGroups": ["ray.kubeflow.org"], "resources": ["rays"],
                    "resourceNames": [NAME], "verbs": ["get", "patch"]}
    binding = await kube.get(ROLE_BINDING, name, namespace)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name,
                                    "namespace": namespace}]

    # What the autoscaler reads: every pod of the cluster, by Ray node type.
    nodes = {n["pod"]: n for n in status["autoscaling"]["nodes"]}
    assert sorted(n["type"] for n in nodes.values()) == ["head", "worker", "worker"]
    for worker in await workers(kube, namespace):
        assert nodes[worker["metadata"]["name"]]["state"] == "running"
        assert ready(worker)
        assert worker["metadata"]["labels"]["ray.kubeflow.org/autoscaling"] == "true"
    group = status["autoscaling"]["groups"][0]
    assert group == {"name": "worker", "minReplicas": 0, "maxReplicas": 3, "desired": 2,
                     "current": 2}

    # Its token reads and patches its own Ray; nothing else.
    assert (await autoscaler.get(RAY, NAME, namespace))["metadata"]["name"] == NAME
    await autoscaler.patch(RAY, NAME, {"metadata": {"labels": {"probe": "yes"}}}, namespace)
    for denied in (
        autoscaler.list(POD, namespace),
        autoscaler.list(RAY, namespace),
        autoscaler.get(DEPLOYMENT, f"{NAME}-worker", namespace),
        autoscaler.get(CONFIGMAP, name, namespace),
    ):
        with pytest.raises(KubeError) as refused:
            await denied
        assert refused.value.status == 403


@pytest.mark.parametrize("busy_not_ready", [False, True])
async def test_a_scale_down_removes_exactly_the_pods_ray_named(
    kube: Kube, namespace: str, pod_runner: PodRunner, as_autoscaler: Connect,
    busy_not_ready: bool,
) -> None:
    await kube.apply_manifest(autoscaled(replicas=3), namespace)
    autoscaler = await as_autoscaler()
    await eventually(lambda: status_of(kube, namespace),
                     lambda s: s.get("health") == "True", 60, "Health=True")
    pods = sorted(await workers(kube, namespace), key=lambda p: p["metadata"]["name"])
    assert len(pods) == 3 and all(ready(p) for p in pods)
    chosen, busy, other = (p["metadata"]["name"] for p in pods)
    # A busy worker whose readiness probe fails under load: the ReplicaSet controller's own
    # ranking would remove it first (not ready before ready).
    if busy_not_ready:
        failing = {"status": {"conditions": [{"type": "Ready", "status": "False",
                                              "reason": "ProbeTimeout"}]}}
        await kube.patch(POD, busy, failing, namespace, subresource="status",
                         patch_type="strategic")
    # Every worker pod seen from now on, and those that were ever scheduled.
    seen: set[str] = set()
    scheduled: set[str] = set()

    async def follow() -> None:
        async for _, pod in kube.watch(POD, namespace, WORKERS):
            seen.add(pod["metadata"]["name"])
            if pod["spec"].get("nodeName"):
                scheduled.add(pod["metadata"]["name"])

    following = asyncio.create_task(follow())
    await eventually(lambda: asyncio.sleep(0, seen), lambda found: len(found) >= 3, 10,
                     "the pod watch")
    await name_for_removal(autoscaler, namespace, 2, [chosen])

    await eventually(lambda: kube.get(DEPLOYMENT, f"{NAME}-worker", namespace),
                     lambda d: d["spec"]["replicas"] == 2 and d["status"].get("replicas") == 2,
                     60, "the worker Deployment down to 2")
    left = await eventually(lambda: workers(kube, namespace),
                            lambda found: len(found) == 2, 60, "two workers left")
    following.cancel()
    assert sorted(p["metadata"]["name"] for p in left) == sorted([busy, other])
    # A pod the ReplicaSet made while the removal was pending (it often does: it sees the
    # named pod go before the lower count) was removed before it was ever scheduled.
    assert not (seen - {chosen, busy, other}) & scheduled
    scaled = await eventually(
        lambda: events(kube, namespace),
        lambda found: any(e["reason"] == "ScaledDown" for e in found), 30, "ScaledDown event")
    (message,) = [e["message"] for e in scaled if e["reason"] == "ScaledDown"]
    assert message == f"worker group worker: 3 -> 2 workers; leaving, drained by Ray: {chosen}"
    # The autoscaler is told of the two that stay, no more of the one that left.
    status = await eventually(
        lambda: status_of(kube, namespace),
        lambda s: len(s["autoscaling"]["nodes"]) == 3, 30, "nodes listed")
    assert chosen not in {n["pod"] for n in status["autoscaling"]["nodes"]}


async def test_a_drained_worker_named_with_a_launch_is_replaced(
    kube: Kube, namespace: str, pod_runner: PodRunner, as_autoscaler: Connect
) -> None:
    # Ray removes a worker and launches one in the same update (as it does for a node whose
    # Ray failed): the count stays, the named pod goes, a new one takes its place.
    await kube.apply_manifest(autoscaled(replicas=2), namespace)
    autoscaler = await as_autoscaler()
    await eventually(lambda: status_of(kube, namespace),
                     lambda s: s.get("health") == "True", 60, "Health=True")
    pods = sorted(p["metadata"]["name"] for p in await workers(kube, namespace))
    chosen, kept = pods
    await name_for_removal(autoscaler, namespace, 2, [chosen])
    now = await eventually(
        lambda: workers(kube, namespace),
        lambda found: len(found) == 2 and chosen not in {p["metadata"]["name"] for p in found}
        and all(ready(p) for p in found), 60, "the named worker replaced")
    assert kept in {p["metadata"]["name"] for p in now}
    assert (await kube.get(DEPLOYMENT, f"{NAME}-worker", namespace))["spec"]["replicas"] == 2
    scaled = await eventually(
        lambda: events(kube, namespace),
        lambda found: any(e["reason"] == "ScaledDown" for e in found), 30, "ScaledDown event")
    assert [e["message"] for e in scaled if e["reason"] == "ScaledDown"] == [
        f"worker group worker: 2 workers; replaced, drained by Ray: {chosen}"]


async def test_an_invalid_edit_keeps_what_the_autoscaler_reads(
    kube: Kube, namespace: str, pod_runner: PodRunner
) -> None:
    await kube.apply_manifest(autoscaled(replicas=2), namespace)
    before = await eventually(lambda: status_of(kube, namespace),
                              lambda s: s.get("health") == "True", 60, "Health=True")
    # Workers of no known CPU count: the autoscaler could not tell what a new one gives.
    container = "/spec/worker/template/spec/containers/0"
    await kube.patch(RAY, NAME, [
        {"op": "replace", "path": f"{container}/args",
         "value": ["start", "--address=$(RAY_HEAD_SERVICE):6379", "--block"]},
        {"op": "remove", "path": f"{container}/resources"},
    ], namespace, patch_type="json")
    status = await eventually(lambda: status_of(kube, namespace),
                              lambda s: s.get("health") == "False", 30, "Health=False")
    assert status["conditions"][0]["reason"] == "InvalidSpec"
    assert "spec.worker" in status["conditions"][0]["message"]
    # Dropped, the nodes would look gone to the autoscaler, which would launch for them.
    assert status["autoscaling"] == before["autoscaling"]
    assert len(await workers(kube, namespace)) == 2


async def test_a_count_outside_the_bounds_is_clamped_and_a_lower_one_held(
    kube: Kube, namespace: str, pod_runner: PodRunner
) -> None:
    await kube.apply_manifest(autoscaled(replicas=1), namespace)
    await eventually(lambda: status_of(kube, namespace),
                     lambda s: s.get("health") == "True", 60, "Health=True")
    # kubectl scale ray/elastic --replicas=10 (the scale subresource).
    await kube.patch(RAY, NAME, {"spec": {"replicas": 10}}, namespace, subresource="scale")
    await eventually(lambda: kube.get(DEPLOYMENT, f"{NAME}-worker", namespace),
                     lambda d: d["spec"]["replicas"] == 3, 30, "the worker Deployment at 3")
    clamped = await eventually(
        lambda: events(kube, namespace),
        lambda found: any(e["reason"] == "ReplicasClamped" for e in found), 30, "an event")
    (event,) = [e for e in clamped if e["reason"] == "ReplicasClamped"]
    assert event["type"] == "Warning"
    assert event["message"] == ("spec.worker.replicas 10 is outside [minReplicas 0, "
                                "maxReplicas 3]: the group runs 3")
    await eventually(lambda: workers(kube, namespace), lambda p: len(p) == 3, 30, "3 workers")

    # Lower by hand, no pod named: held (a worker leaves only once Ray drained it).
    await kube.patch(RAY, NAME, {"spec": {"replicas": 1}}, namespace, subresource="scale")
    held = await eventually(
        lambda: events(kube, namespace),
        lambda found: any(e["reason"] == "ScaleDownHeld" for e in found), 30, "held")
    assert "spec.worker.replicas is 1 but 3 workers run" in next(
        e["message"] for e in held if e["reason"] == "ScaleDownHeld")
    deployment = await kube.get(DEPLOYMENT, f"{NAME}-worker", namespace)
    assert deployment["spec"]["replicas"] == 3
    assert len(await workers(kube, namespace)) == 3


async def test_infeasible_requests_reach_a_condition_and_an_event(
    kube: Kube, namespace: str, pod_runner: PodRunner, as_autoscaler: Connect
) -> None:
    await kube.apply_manifest(autoscaled(), namespace)
    autoscaler = await as_autoscaler()
    await eventually(lambda: status_of(kube, namespace),
                     lambda s: s.get("health") == "True", 60, "Health=True")
    shapes = [{"count": 2, "kind": "task or actor", "resources": {"CPU": 8.0}}]
    annotation = {"ray.kubeflow.org/autoscaler-infeasible": json.dumps(shapes)}
    await autoscaler.patch(RAY, NAME, {"metadata": {"annotations": annotation}}, namespace)
    status = await eventually(
        lambda: status_of(kube, namespace),
        lambda s: any(c["type"] == "RayRequestsFeasible" and c["status"] == "False"
                      for c in s.get("conditions", [])), 30, "RayRequestsFeasible=False")
    (cond,) = [c for c in status["conditions"] if c["type"] == "RayRequestsFeasible"]
    assert cond["reason"] == "InfeasibleRequest"
    assert '2 task or actor(s) asking for {"CPU": 8.0}' in cond["message"]
    found = await eventually(
        lambda: events(kube, namespace),
        lambda e: any(x["reason"] == "InfeasibleRequest" for x in e), 30, "event")
    assert [e["type"] for e in found if e["reason"] == "InfeasibleRequest"] == ["Warning"]
    # The cluster stays healthy: an infeasible task is Ray's user's problem, not the cluster's.
    assert status["health"] == "True"


async def test_turning_autoscaling_off_takes_away_the_autoscaler(
    kube: Kube, namespace: str, pod_runner: PodRunner
) -> None:
    await kube.apply_manifest(autoscaled(replicas=1), namespace)
    await eventually(lambda: status_of(kube, namespace),
                     lambda s: s.get("health") == "True", 60, "Health=True")
    await kube.patch(RAY, NAME, {"spec": {"autoscaling": {"enabled": False}}}, namespace)
    name = f"{NAME}-autoscaler"
    for kind in (DEPLOYMENT, CONFIGMAP, ROLE, ROLE_BINDING, SERVICE_ACCOUNT):
        await eventually(lambda kind=kind: kube.get_or_none(kind, name, namespace),
                         lambda found: found is None, 30, f"{kind.kind} {name} deleted")
    worker = await kube.get(DEPLOYMENT, f"{NAME}-worker", namespace)
    template = worker["spec"]["template"]
    assert "ray.kubeflow.org/autoscaling" not in template["metadata"]["labels"]
    env = {e["name"] for c in template["spec"]["containers"] for e in c.get("env") or []}
    assert not env & {"RAY_CLOUD_INSTANCE_ID", "RAY_NODE_TYPE_NAME", "RAY_enable_autoscaler_v2"}
    status = await eventually(lambda: status_of(kube, namespace),
                              lambda s: s.get("health") == "True" and "autoscaling" not in s,
                              60, "Health=True without autoscaling")
    assert not any(c["type"].startswith("RayAutoscaler") for c in status["conditions"])


async def test_suspend_stops_every_pod_of_an_autoscaled_ray_and_resume_brings_them_back(
    kube: Kube, namespace: str, pod_runner: PodRunner
) -> None:
    await kube.apply_manifest(autoscaled(replicas=2), namespace)
    await eventually(lambda: status_of(kube, namespace),
                     lambda s: s.get("health") == "True", 60, "Health=True")
    await kube.patch(RAY, NAME, {"spec": {"suspend": True}}, namespace)
    # No worker is held back for Ray to choose: the user stops them all, the autoscaler too.
    for name in ("worker", "head", "autoscaler"):
        await eventually(lambda name=name: kube.get(DEPLOYMENT, f"{NAME}-{name}", namespace),
                         lambda d: d["spec"]["replicas"] == 0, 30, f"{name} at 0")
    await eventually(lambda: workers(kube, namespace), lambda p: p == [], 60, "no worker")
    status = await eventually(lambda: status_of(kube, namespace),
                              lambda s: s.get("conditions", [{}])[0].get("reason") == "Suspended",
                              30, "Suspended")
    assert status["health"] == "False"
    await kube.patch(RAY, NAME, {"spec": {"suspend": False}}, namespace)
    await eventually(lambda: status_of(kube, namespace),
                     lambda s: s.get("health") == "True", 60, "Health=True again")
    assert len(await workers(kube, namespace)) == 2
