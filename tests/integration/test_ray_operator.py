"""The operator on a real apiserver: children, status, events, updates, drift, deletion."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ray_operator.kube import DEPLOYMENT, EVENT, NETWORK_POLICY, POD, RAY, SECRET, SERVICE, Kube
from ray_operator.localkube.control_plane import LocalControlPlane
from ray_operator.localkube.pod_runner import PodRunner
from tests.chart_install import ChartRelease
from tests.operator_process import OperatorProcess
from tests.waiting import eventually

EXAMPLES = Path(__file__).parents[2] / "examples"
Obj = dict[str, Any]


def example(name: str) -> Obj:
    manifest: Obj = yaml.safe_load((EXAMPLES / name).read_text())
    return manifest


async def ray_status(kube: Kube, ns: str, name: str = "sample-cluster") -> Obj:
    status: Obj = (await kube.get(RAY, name, ns)).get("status") or {}
    return status


async def healthy(kube: Kube, ns: str, name: str = "sample-cluster", timeout: float = 30) -> Obj:
    return await eventually(
        lambda: ray_status(kube, ns, name),
        lambda s: s.get("health") == "True",
        timeout,
        f"Ray {name} Health=True",
    )


async def get_or_none(kube: Kube, kind: Any, name: str, ns: str) -> Obj | None:
    return await kube.get_or_none(kind, name, ns)


async def events(kube: Kube, ns: str, name: str = "sample-cluster") -> list[Obj]:
    return [e for e in await kube.list(EVENT, ns) if e["involvedObject"]["name"] == name]


def condition(status: Obj, ctype: str) -> Obj:
    return next(c for c in status["conditions"] if c["type"] == ctype)


pytestmark = pytest.mark.usefixtures("running_operator")


async def test_simple_example_becomes_a_healthy_cluster(
    kube: Kube, namespace: str, pod_runner: PodRunner, control_plane: LocalControlPlane
) -> None:
    await kube.apply_manifest(example("ray-simple.yaml"), namespace)
    status = await healthy(kube, namespace)

    head = await kube.get(DEPLOYMENT, "sample-cluster-head", namespace)
    worker = await kube.get(DEPLOYMENT, "sample-cluster-worker", namespace)
    service = await kube.get(SERVICE, "sample-cluster-head", namespace)
    ray = await kube.get(RAY, "sample-cluster", namespace)
    for child in (head, worker, service):
        (owner,) = child["metadata"]["ownerReferences"]
        assert owner["uid"] == ray["metadata"]["uid"] and owner["controller"] is True
        assert child["metadata"]["labels"]["ray.kubeflow.org/cluster"] == "sample-cluster"
    assert head["spec"]["replicas"] == 1 and worker["spec"]["replicas"] == 3
    assert head["spec"]["strategy"]["type"] == "Recreate"

    head_env = {e["name"]: e for e in head["spec"]["template"]["spec"]["containers"][0]["env"]}
    worker_env = {e["name"]: e for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert head_env["RAY_NODE_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert "RAY_HEAD_SERVICE" not in head_env
    assert worker_env["RAY_NODE_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert worker_env["RAY_HEAD_SERVICE"]["value"] == "sample-cluster-head"
    image = head["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("rayproject/ray:2.")

    ports = {p["port"]: p["name"] for p in service["spec"]["ports"]}
    assert ports == {6379: "gcs", 8265: "dashboard", 10001: "client", 8080: "metrics"}

    assert status["head"] == {
        "replicas": 1,
        "readyReplicas": 1,
        "availableReplicas": 1,
        "updatedReplicas": 1,
    }
    assert status["worker"]["availableReplicas"] == 3
    assert status["observedGeneration"] == ray["metadata"]["generation"]
    assert status["startTime"] and status["lastReconcileTime"]
    types = {c["type"]: c for c in status["conditions"]}
    for ctype in (
        "Health",
        "RayHeadDeploymentAvailable",
        "RayHeadDeploymentProgressing",
        "RayHeadDeploymentReplicaFailure",
        "RayWorkerDeploymentAvailable",
        "RayWorkerDeploymentProgressing",
        "RayWorkerDeploymentReplicaFailure",
    ):
        assert {"status", "lastTransitionTime", "lastUpdateTime"} <= set(types[ctype])
    assert types["RayWorkerDeploymentAvailable"]["status"] == "True"
    assert types["RayHeadDeploymentProgressing"]["reason"] == "NewReplicaSetAvailable"

    reasons = [(e["reason"], e["message"]) for e in await events(kube, namespace)]
    assert (
        "SuccessfullyCreate",
        "Successfully create the deployment sample-cluster-worker",
    ) in reasons
    assert ("SuccessfullyCreate", "Successfully create the service sample-cluster-head") in reasons

    table = control_plane.run_kubectl("get", "rays", "-n", namespace).stdout
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "HEAD", "WORKERS", "HEALTH", "AGE"]
    assert row.split()[:4] == ["sample-cluster", "1/1", "3/3", "True"]
    described = control_plane.run_kubectl(
        "describe", "ray", "sample-cluster", "-n", namespace
    ).stdout
    assert "RayWorkerDeploymentAvailable" in described and "Successfully create" in described


@pytest.fixture
async def baseline_pod_runner(kube: Kube, baseline_namespace: str) -> AsyncIterator[PodRunner]:
    """The kubelet's part in a namespace enforcing only ``baseline``."""
    runner = await PodRunner(kube, namespace=baseline_namespace).start()
    yield runner
    await runner.stop()


async def test_restricted_refuses_the_full_example_and_health_says_why(
    kube: Kube, namespace: str, pod_runner: PodRunner
) -> None:
    # Its pods set no securityContext: Pod Security "restricted" refuses them, and the user
    # reads why in the Ray's own status.
    await kube.apply_manifest(example("ray-full.yaml"), namespace)
    status = await eventually(
        lambda: ray_status(kube, namespace),
        lambda s: s.get("health") == "False",
        what="Health=False",
    )
    health = condition(status, "Health")
    assert health["reason"] == "DeploymentFailure"
    assert 'violates PodSecurity "restricted' in health["message"]


async def test_default_templates_pass_pod_security_restricted(
    kube: Kube, namespace: str, pod_runner: PodRunner
) -> None:
    # `namespace` enforces restricted: the pods exist only because admission let them in.
    await kube.apply_manifest(example("ray-simple.yaml"), namespace)
    await healthy(kube, namespace)
    pods = await kube.list(POD, namespace, "ray.kubeflow.org/cluster=sample-cluster")
    assert len(pods) == 4
    for pod in pods:
        security = pod["spec"]["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == 1000
        assert security["runAsGroup"] == 100
        for container in pod["spec"]["containers"]:
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


async def test_full_example_applies_unchanged_and_reports_the_misspelled_limit(
    kube: Kube, baseline_namespace: str, baseline_pod_runner: PodRunner
) -> None:
    namespace = baseline_namespace
    await kube.apply_manifest(example("ray-full.yaml"), namespace)
    await healthy(kube, namespace)
    service = await kube.get(SERVICE, "sample-cluster-head", namespace)
    assert sorted(p["port"] for p in service["spec"]["ports"]) == [6379, 6380, 6381, 12345, 12346]
    assert {p["name"] for p in service["spec"]["ports"]} >= {"port-6379", "port-12346"}
    head = await kube.get(DEPLOYMENT, "sample-cluster-head", namespace)
    container = head["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "rayproject/examples"
    assert container["resources"] == {"requests": {"cpu": "500m"}}
    warnings = await eventually(
        lambda: events(kube, namespace),
        lambda evs: sum(e["reason"] == "UnknownField" for e in evs) == 2,
        what="two UnknownField warnings",
    )
    messages = sorted(e["message"] for e in warnings if e["reason"] == "UnknownField")
    assert "spec.head.template.spec.containers[0].resources.limit" in messages[0]
    assert all(e["type"] == "Warning" for e in warnings if e["reason"] == "UnknownField")


async def test_nothing_is_written_on_a_steady_cluster(
    kube: Kube, namespace: str, pod_runner: PodRunner, running_operator: OperatorProcess
) -> None:
    await kube.apply_manifest(example("ray-simple.yaml"), namespace)
    await healthy(kube, namespace)
    await running_operator.more_reconciles(1)  # the status write of the healthy cluster landed

    async def versions() -> list[str]:
        objs = [
            await kube.get(k, n, namespace)
            for k, n in (
                (DEPLOYMENT, "sample-cluster-head"),
                (DEPLOYMENT, "sample-cluster-worker"),
                (SERVICE, "sample-cluster-head"),
                (RAY, "sample-cluster"),
            )
        ]
        return [o["metadata"]["resourceVersion"] for o in objs]

    before = await versions()
    await running_operator.more_reconciles(3)  # more than two resyncs
    assert await versions() == before


async def test_every_change_reaches_the_children(
    kube: Kube, baseline_namespace: str, baseline_pod_runner: PodRunner
) -> None:
    namespace = baseline_namespace
    manifest = example("ray-full.yaml")
    await kube.apply_manifest(manifest, namespace)
    await healthy(kube, namespace)
    head_spec = manifest["spec"]["head"]["template"]["spec"]
    head_spec["containers"][0]["image"] = "rayproject/ray:2.60.0"
    head_spec["containers"][0]["env"] = [{"name": "EXTRA", "value": "1"}]
    head_spec["containers"][0]["ports"] = head_spec["containers"][0]["ports"][:2] + [
        {"containerPort": 8265, "name": "dashboard"}
    ]
    manifest["spec"]["head"]["template"]["metadata"] = {"labels": {"team": "ml"}}
    manifest["spec"]["worker"]["replicas"] = 2
    manifest["spec"]["worker"]["template"]["spec"]["containers"][0]["args"] = ["ray start --block"]
    await kube.apply_manifest(manifest, namespace)

    async def children() -> tuple[Obj, Obj, Obj]:
        return (
            await kube.get(DEPLOYMENT, "sample-cluster-head", namespace),
            await kube.get(DEPLOYMENT, "sample-cluster-worker", namespace),
            await kube.get(SERVICE, "sample-cluster-head", namespace),
        )

    head, worker, service = await eventually(
        children, lambda c: c[1]["spec"]["replicas"] == 2, what="worker replicas 2"
    )
    container = head["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "rayproject/ray:2.60.0"
    assert [e["name"] for e in container["env"]] == ["RAY_NODE_IP", "EXTRA"]
    assert head["spec"]["template"]["metadata"]["labels"]["team"] == "ml"
    assert worker["spec"]["template"]["spec"]["containers"][0]["args"] == ["ray start --block"]
    assert sorted(p["port"] for p in service["spec"]["ports"]) == [6379, 6380, 8265]
    reasons = [e["reason"] for e in await events(kube, namespace)]
    assert reasons.count("SuccessfullyUpdate") >= 3
    await healthy(kube, namespace)


async def test_kubectl_scale_scales_the_workers(
    kube: Kube, namespace: str, pod_runner: PodRunner, control_plane: LocalControlPlane
) -> None:
    await kube.apply_manifest(example("ray-simple.yaml"), namespace)
    await healthy(kube, namespace)
    control_plane.run_kubectl("scale", "ray/sample-cluster", "--replicas=5", "-n", namespace)
    status = await eventually(
        lambda: ray_status(kube, namespace),
        lambda s: s.get("workersReady") == "5/5" and s.get("health") == "True",
        what="5 ready workers",
    )
    assert status["worker"]["replicas"] == 5


async def test_drift_is_repaired(kube: Kube, namespace: str, pod_runner: PodRunner) -> None:
    await kube.apply_manifest(example("ray-simple.yaml"), namespace)
    await healthy(kube, namespace)
    await kube.delete(DEPLOYMENT, "sample-cluster-worker", namespace)
    await kube.delete(SERVICE, "sample-cluster-head", namespace)
    await kube.patch(DEPLOYMENT, "sample-cluster-head", {"spec": {"replicas": 0}}, namespace)
    await eventually(
        lambda: get_or_none(kube, DEPLOYMENT, "sample-cluster-worker", namespace),
        lambda d: d is not None and d["spec"]["replicas"] == 3,
        timeout=10,
        what="worker Deployment re-created",
    )
    await eventually(
        lambda: get_or_none(kube, SERVICE, "sample-cluster-head", namespace),
        lambda s: s is not None,
        timeout=10,
        what="head Service re-created",
    )
    await eventually(
        lambda: kube.get(DEPLOYMENT, "sample-cluster-head", namespace),
        lambda d: d["spec"]["replicas"] == 1,
        timeout=10,
        what="head replicas restored",
    )
    await healthy(kube, namespace)


async def test_hand_edited_head_service_ports_are_restored(
    kube: Kube, namespace: str, pod_runner: PodRunner
) -> None:
    await kube.apply_manifest(example("ray-simple.yaml"), namespace)
    await healthy(kube, namespace)
    service = await kube.get(SERVICE, "sample-cluster-head", namespace)
    ports = service["spec"]["ports"]
    assert 8265 in {p["port"] for p in ports}
    # A merge patch replaces the list: the dashboard port and the others are gone.
    await kube.patch(
        SERVICE,
        "sample-cluster-head",
        {"spec": {"ports": [p for p in ports if p["port"] == 6379]}},
        namespace,
    )
    await eventually(
        lambda: kube.get(SERVICE, "sample-cluster-head", namespace),
        lambda s: s["spec"]["ports"] == ports,
        timeout=10,
        what="head Service ports restored",
    )


async def test_drift_while_the_operator_was_down_is_repaired_after_restart(
    kube: Kube, namespace: str, pod_runner: PodRunner, running_operator: OperatorProcess
) -> None:
    await kube.apply_manifest(example("ray-simple.yaml"), namespace)
    await healthy(kube, namespace)
    running_operator.kill()
    try:
        await kube.delete(DEPLOYMENT, "sample-cluster-worker", namespace)
        await kube.patch(DEPLOYMENT, "sample-cluster-head", {"spec": {"replicas": 0}}, namespace)
        await asyncio.sleep(1)
        assert await kube.get_or_none(DEPLOYMENT, "sample-cluster-worker", namespace) is None
    finally:
        running_operator.start()
    await eventually(
        lambda: get_or_none(kube, DEPLOYMENT, "sample-cluster-worker", namespace),
        lambda d: d is not None,
        timeout=20,
        what="worker Deployment re-created after restart",
    )
    await eventually(
        lambda: kube.get(DEPLOYMENT, "sample-cluster-head", namespace),
        lambda d: d["spec"]["replicas"] == 1,
        timeout=20,
        what="head replicas restored",
    )


async def test_deleting_the_ray_removes_its_children(
    kube: Kube, namespace: str, pod_runner: PodRunner
) -> None:
    await kube.apply_manifest(example("ray-simple.yaml"), namespace)
    await healthy(kube, namespace)
    await kube.delete(RAY, "sample-cluster", namespace)

    async def remaining() -> list[str]:
        found = [
            await kube.get_or_none(k, n, namespace)
            for k, n in (
                (DEPLOYMENT, "sample-cluster-head"),
                (DEPLOYMENT, "sample-cluster-worker"),
                (SERVICE, "sample-cluster-head"),
            )
        ]
        return [f["metadata"]["name"] for f in found if f is not None]

    await eventually(remaining, lambda r: r == [], timeout=30, what="children garbage-collected")


@pytest.mark.parametrize(
    ("patch", "field", "accepted"),
    [
        (
            {"spec": {"head": {"template": {"spec": {"containers": []}}}}},
            "spec.head.template.spec.containers",
            "at least one container",
        ),
        (
            {"spec": {"worker": {"template": {"spec": {"containers": [{"name": "w"}]}}}}},
            "spec.worker.template.spec.containers[0].image",
            "a container image",
        ),
        (
            {
                "spec": {
                    "worker": {
                        "template": {
                            "spec": {
                                "containers": [
                                    {
                                        "name": "w",
                                        "image": "i",
                                        "ports": [
                                            {"containerPort": 1, "name": "a"},
                                            {"containerPort": 2, "name": "a"},
                                        ],
                                    }
                                ]
                            }
                        }
                    }
                }
            },
            "spec.worker.template.spec.containers[0].ports[1].name",
            "not used already",
        ),
    ],
)
async def test_invalid_spec_is_reported_and_others_are_still_served(
    kube: Kube, namespace: str, pod_runner: PodRunner, patch: Obj, field: str, accepted: str
) -> None:
    bad = example("ray-simple.yaml")
    bad["metadata"]["name"] = "bad"
    bad["spec"] = {**bad["spec"], **patch["spec"]}
    await kube.apply_manifest(bad, namespace)
    await kube.apply_manifest(example("ray-simple.yaml"), namespace)
    status = await eventually(
        lambda: ray_status(kube, namespace, "bad"),
        lambda s: s.get("health") == "False",
        what="Health=False on the invalid Ray",
    )
    health = condition(status, "Health")
    assert health["reason"] == "InvalidSpec"
    assert field in health["message"] and accepted in health["message"]
    warnings = await eventually(
        lambda: events(kube, namespace, "bad"),
        lambda evs: any(e["type"] == "Warning" and field in e["message"] for e in evs),
        what="a Warning event naming the field",
    )
    assert warnings
    assert await kube.get_or_none(DEPLOYMENT, "bad-worker", namespace) is None
    await healthy(kube, namespace)  # the valid one next to it is served


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"worker": {"replicas": -1}}, "spec.worker.replicas"),
        ({"worker": {"replicas": "three"}}, "spec.worker.replicas"),
        ({"head": {"replicas": 1}}, "spec.worker"),
        # CEL rules of the CRD (the operator checks the same for Rays stored before them).
        ({"head": {"replicas": 2}, "worker": {}}, "spec.head.replicas"),
        ({"worker": {}}, "metadata.name must be a DNS-1035 label of at most 56 characters"),
    ],
)
async def test_schema_rejects_at_apply_naming_the_field(
    namespace: str, control_plane: LocalControlPlane, tmp_path: Path, spec: Obj, field: str
) -> None:
    manifest = {
        "apiVersion": "ray.kubeflow.org/v1",
        "kind": "Ray",
        "metadata": {"name": "r" * 57 if "metadata.name" in field else "rejected"},
        "spec": spec,
    }
    path = tmp_path / "ray.yaml"
    path.write_text(yaml.safe_dump(manifest))
    result = control_plane.run_kubectl("apply", "-n", namespace, "-f", str(path), check=False)
    assert result.returncode != 0
    assert field in result.stderr


async def test_kubectl_apply_refuses_a_typo_outside_templates(
    control_plane: LocalControlPlane, namespace: str, tmp_path: Path
) -> None:
    """The CRD keeps no unknown fields at the resource's own levels: kubectl's strict field
    validation names the typo instead of the cluster silently getting one worker."""
    manifest = example("ray-simple.yaml")
    manifest["spec"]["worker"]["replica"] = manifest["spec"]["worker"].pop("replicas")
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(manifest))
    done = control_plane.run_kubectl("apply", "-n", namespace, "-f", str(path), check=False)
    assert done.returncode != 0
    assert 'unknown field "spec.worker.replica"' in done.stderr, done.stderr
    manifest["spec"]["worker"]["replicas"] = "3"
    del manifest["spec"]["worker"]["replica"]
    path.write_text(yaml.safe_dump(manifest))
    done = control_plane.run_kubectl("apply", "-n", namespace, "-f", str(path), check=False)
    assert done.returncode != 0 and "spec.worker.replicas" in done.stderr, done.stderr


async def test_suspend_stops_every_pod_and_resume_brings_the_same_cluster_back(
    kube: Kube, namespace: str, pod_runner: PodRunner
) -> None:
    await kube.apply_manifest(example("ray-simple.yaml"), namespace)
    await healthy(kube, namespace)
    before = await kube.get(DEPLOYMENT, "sample-cluster-worker", namespace)
    service = await kube.get(SERVICE, "sample-cluster-head", namespace)

    await kube.patch(RAY, "sample-cluster", {"spec": {"suspend": True}}, namespace)

    async def pods() -> list[Obj]:
        return await kube.list(POD, namespace, "ray.kubeflow.org/cluster=sample-cluster")

    await eventually(pods, lambda found: found == [], what="every pod gone")
    status = await eventually(
        lambda: ray_status(kube, namespace),
        lambda s: "suspended (" in (condition(s, "Health").get("message") or ""),
        what="Health=False Suspended",
    )
    health = condition(status, "Health")
    assert health["status"] == "False" and health["reason"] == "Suspended"
    assert status["health"] == "False"
    # The Service and the user's declared size stay; only the Deployments are at 0.
    assert (await kube.get(SERVICE, "sample-cluster-head", namespace))["metadata"]["uid"] == (
        service["metadata"]["uid"]
    )
    ray = await kube.get(RAY, "sample-cluster", namespace)
    assert ray["spec"]["worker"]["replicas"] == 3
    for name in ("sample-cluster-head", "sample-cluster-worker"):
        assert (await kube.get(DEPLOYMENT, name, namespace))["spec"]["replicas"] == 0

    await kube.patch(RAY, "sample-cluster", {"spec": {"suspend": False}}, namespace)
    await healthy(kube, namespace)
    after = await kube.get(DEPLOYMENT, "sample-cluster-worker", namespace)
    assert after["spec"]["replicas"] == 3
    # The same pods as declared: the template did not change, so nothing rolled.
    assert after["spec"]["template"] == before["spec"]["template"]
    assert len(await pods()) == 4


async def test_auth_and_network_policy_are_made_kept_and_removed_with_the_spec(
    kube: Kube, namespace: str, chart_release: ChartRelease
) -> None:
    """The token Secret is written once with a random token, never rewritten; the NetworkPolicy
    follows the spec (enforcing it needs a CNI this test cluster lacks: the objects are tested)."""
    manifest = example("ray-secured.yaml")
    (peer,) = manifest["spec"]["networkPolicy"]["allowFrom"]
    await kube.apply_manifest(manifest, namespace)

    secret = await eventually(
        lambda: get_or_none(kube, SECRET, "sample-cluster-auth", namespace), bool,
        what="the token Secret",
    )
    assert secret is not None
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert len(token) >= 40 and token.isascii()
    policy = await eventually(
        lambda: get_or_none(kube, NETWORK_POLICY, "sample-cluster-ray", namespace), bool,
        what="the NetworkPolicy",
    )
    assert policy is not None
    _, job_api = policy["spec"]["ingress"]
    assert peer in job_api["from"] and job_api["ports"] == [{"protocol": "TCP", "port": 8265}]
    # The operator runs in the chart's namespace: admitted to stop jobs of lost runners.
    assert {"kubernetes.io/metadata.name": chart_release.namespace} in [
        p.get("namespaceSelector", {}).get("matchLabels") for p in job_api["from"]
    ]
    for role in ("head", "worker"):
        deployment = await eventually(
            lambda role=role: get_or_none(kube, DEPLOYMENT, f"sample-cluster-{role}", namespace),
            bool, what=f"the {role} Deployment",
        )
        assert deployment is not None
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "sample-cluster-auth", "key": "token"
        }

    # A spec change reconciles everything again: the token stays the same.
    await kube.patch(RAY, "sample-cluster", {"spec": {"worker": {"replicas": 2}}}, namespace)
    await eventually(
        lambda: get_or_none(kube, DEPLOYMENT, "sample-cluster-worker", namespace),
        lambda d: d is not None and d["spec"]["replicas"] == 2, what="2 workers",
    )
    again = await kube.get(SECRET, "sample-cluster-auth", namespace)
    assert again["data"] == secret["data"]
    assert again["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]
    head = await kube.get(DEPLOYMENT, "sample-cluster-head", namespace)
    marked = head["spec"]["template"]["metadata"]["annotations"]
    assert marked["ray.kubeflow.org/auth-secret-uid"] == secret["metadata"]["uid"]

    # Deleted by hand, the Secret comes back with a new token, and every pod rolls to it
    # together (pods of the old token could not talk to those of the new one).
    await kube.delete(SECRET, "sample-cluster-auth", namespace)
    renewed = await eventually(
        lambda: get_or_none(kube, SECRET, "sample-cluster-auth", namespace),
        lambda s: s is not None and s["metadata"]["uid"] != secret["metadata"]["uid"],
        what="the Secret made again",
    )
    assert renewed is not None and renewed["data"] != secret["data"]
    for role in ("head", "worker"):
        await eventually(
            lambda role=role: get_or_none(kube, DEPLOYMENT, f"sample-cluster-{role}", namespace),
            lambda d: d is not None and d["spec"]["template"]["metadata"]["annotations"][
                "ray.kubeflow.org/auth-secret-uid"] == renewed["metadata"]["uid"],
            what=f"the {role} pods rolled to the new token",
        )

    # Dropped from the spec: both go, and the pods no longer wait for a token.
    await kube.patch(
        RAY, "sample-cluster", {"spec": {"auth": None, "networkPolicy": None}}, namespace
    )
    for kind, name in ((SECRET, "sample-cluster-auth"), (NETWORK_POLICY, "sample-cluster-ray")):
        await eventually(
            lambda kind=kind, name=name: get_or_none(kube, kind, name, namespace),
            lambda found: found is None, what=f"{name} deleted",
        )
    head = await kube.get(DEPLOYMENT, "sample-cluster-head", namespace)
    assert "RAY_AUTH" not in str(head["spec"]["template"])


async def test_worker_groups_become_deployments_of_their_own_and_go_with_the_spec(
    kube: Kube, namespace: str, pod_runner: PodRunner
) -> None:
    manifest = example("ray-simple.yaml")
    manifest["spec"]["worker"]["replicas"] = 1
    manifest["spec"]["workerGroups"] = [
        {"name": "big", "replicas": 2, "rayResources": {"big_node": 1}},
        {"name": "small"},
    ]
    await kube.apply_manifest(manifest, namespace)
    status = await healthy(kube, namespace)
    assert status["workersReady"] == "4/4"
    assert [(g["name"], g["desired"], g["readyReplicas"]) for g in status["workerGroups"]] == [
        ("big", 2, 2), ("small", 1, 1)
    ]
    assert condition(status, "RayWorkerGroup-big-Available")["status"] == "True"
    pods = await kube.list(POD, namespace, "ray.kubeflow.org/worker-group=big")
    assert len(pods) == 2
    big = await kube.get(DEPLOYMENT, "sample-cluster-worker-big", namespace)
    args = big["spec"]["template"]["spec"]["containers"][0]["args"]
    assert '--resources={"big_node":1.0}' in args
    # spec.worker's own Deployment still counts its own pod only.
    worker = await kube.get(DEPLOYMENT, "sample-cluster-worker", namespace)
    assert worker["status"]["replicas"] == 1

    # A group taken out of the spec goes, pods and all; the others stay.
    await kube.patch(
        RAY, "sample-cluster", {"spec": {"workerGroups": [{"name": "small"}]}}, namespace
    )
    await eventually(
        lambda: get_or_none(kube, DEPLOYMENT, "sample-cluster-worker-big", namespace),
        lambda found: found is None, what="the big group's Deployment deleted",
    )
    status = await eventually(
        lambda: ray_status(kube, namespace),
        lambda s: [g["name"] for g in s.get("workerGroups") or []] == ["small"]
        and s.get("health") == "True",
        what="one group left, healthy",
    )
    assert status["workersReady"] == "2/2"
    assert await get_or_none(kube, DEPLOYMENT, "sample-cluster-worker-small", namespace)
