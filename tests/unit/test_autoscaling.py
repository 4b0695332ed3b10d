"""Autoscaling's pure parts: node shapes, the autoscaler's config and pod, counts, the provider's
patches. The same parts run for real in tests/integration/test_autoscaling.py and
tests/e2e/test_autoscaling.py."""

from __future__ import annotations

import ast
import json
from types import SimpleNamespace
from typing import Any

import pytest

from ray_operator.api import constants
from ray_operator.api.node_shape import node_shape
from ray_operator.api.validation import validate_ray
from ray_operator.autoscaling import node_provider, provider_code
from ray_operator.builders import autoscaling
from ray_operator.builders.autoscaling import allowed_replicas
from ray_operator.builders.default_templates import (
    default_head_template_v2,
    default_worker_template_v2,
)
from ray_operator.builders.defaults import CURRENT_REVISION, Defaults, builtin_templates
from ray_operator.builders.ray_cluster import (
    ClusterPlan,
    build_children,
    plan_cluster,
    setting_leftovers,
)
from ray_operator.builders.ray_status import Observed, compute_status

Obj = dict[str, Any]
IMAGE = "rayproject/ray:2.60.0"


def container(args: list[str], limits: Obj | None = None, env: list[Obj] | None = None) -> Obj:
    body: Obj = {"name": "ray-worker", "image": IMAGE, "command": ["ray"],
                 "args": ["start", *args, "--block"]}
    if limits:
        body["resources"] = {"limits": limits}
    if env:
        body["env"] = env
    return {"spec": {"containers": [body]}}


CPU_REF = [{"name": "RAY_CPU_LIMIT", "valueFrom": {"resourceFieldRef": {
    "containerName": "ray-worker", "resource": "limits.cpu", "divisor": "1"}}}]


@pytest.mark.parametrize(("template", "resources", "known"), [
    (container(["--num-cpus=4"]), {"CPU": 4.0}, True),
    # The kubelet rounds a resource field reference up; Ray truncates a cgroup quota.
    (container(["--num-cpus=$(RAY_CPU_LIMIT)"], {"cpu": "1500m"}, CPU_REF), {"CPU": 2.0}, True),
    (container([], {"cpu": "2500m"}), {"CPU": 2.0}, True),
    (container(["--num-cpus=$(RAY_CPU_LIMIT)"], None, CPU_REF), {}, False),
    (container([]), {}, False),
    (container(["--num-cpus=1", "--memory=1000"], {"nvidia.com/gpu": 2}),
     {"CPU": 1.0, "GPU": 2.0, "memory": 1000.0}, True),
    (container(["--num-cpus=1", '--resources={"disk":1}']), {"CPU": 1.0, "disk": 1.0}, True),
])
def test_a_node_shape_comes_from_flags_then_limits(template: Obj, resources: Obj,
                                                   known: bool) -> None:
    shape = node_shape(template)
    assert shape.resources == resources and shape.cpu_known is known


def test_custom_resources_of_a_group_join_the_shape() -> None:
    shape = node_shape(container(["--num-cpus=1"]), {"tpu": 4})
    assert shape.resources == {"CPU": 1.0, "tpu": 4.0}


def autoscaled_ray(**worker: Any) -> Obj:
    head = default_head_template_v2(IMAGE)
    args = head["spec"]["containers"][0]["args"]
    head["spec"]["containers"][0]["args"] = [
        "--num-cpus=0" if a.startswith("--num-cpus") else a for a in args]
    template = default_worker_template_v2(IMAGE)
    template["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "1", "memory": "4Gi"}}
    gpu = default_worker_template_v2(IMAGE)
    gpu["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "8", "nvidia.com/gpu": "1"}}
    return {
        "apiVersion": "ray.kubeflow.org/v1", "kind": "Ray",
        "metadata": {"name": "elastic", "namespace": "ml", "uid": "u-1"},
        "spec": {
            "autoscaling": {"enabled": True},
            "head": {"template": head},
            "worker": {"minReplicas": 1, "maxReplicas": 4, "template": template, **worker},
            "workerGroups": [{"name": "gpu", "maxReplicas": 2, "template": gpu,
                              "rayResources": {"a100": 1}}],
        },
    }


def plan_of(doc: Obj) -> ClusterPlan:
    report = validate_ray(doc, in_cluster=True)
    assert report.ok and report.resource is not None, report.message()
    return plan_cluster(report.resource,
                        Defaults(CURRENT_REVISION, builtin_templates(CURRENT_REVISION, IMAGE)))


def by_name(children: list[Obj]) -> dict[tuple[str, str], Obj]:
    return {(c["kind"], c["metadata"]["name"]): c for c in children}


def test_the_autoscaler_knows_each_group_by_its_shape_and_bounds() -> None:
    children = by_name(build_children(plan_of(autoscaled_ray()), "CODE"))
    data = children[("ConfigMap", "elastic-autoscaler")]["data"]
    assert data["ray_operator_autoscaler.py"] == "CODE"
    config = json.loads(data["autoscaling.json"])
    types = config["available_node_types"]
    assert types["head"] == {"node_config": {}, "resources": {"CPU": 0.0},
                             "min_workers": 0, "max_workers": 0}
    assert types["worker"] == {"node_config": {}, "min_workers": 1, "max_workers": 4,
                               "resources": {"CPU": 1.0, "memory": 4.0 * 2**30}}
    assert types["worker-gpu"] == {"node_config": {}, "min_workers": 0, "max_workers": 2,
                                   "resources": {"CPU": 8.0, "GPU": 1.0, "a100": 1.0}}
    assert config["max_workers"] == 6 and config["idle_timeout_minutes"] == 1.0
    assert config["provider"] == {
        "type": "external", "module": "ray_operator_autoscaler.RayNodeProvider",
        "namespace": "ml", "ray": "elastic", "disable_node_updaters": True,
        "disable_launch_config_check": True, "foreground_node_launch": True}


def test_every_ray_node_says_its_pod_and_type() -> None:
    children = by_name(build_children(plan_of(autoscaled_ray()), "CODE"))
    head = children[("Deployment", "elastic-head")]["spec"]["template"]
    (ray,) = head["spec"]["containers"]
    assert ray["args"][-2:] == ["--no-monitor", "--block"]
    env = {e["name"]: e for e in ray["env"]}
    assert env["RAY_CLOUD_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["RAY_NODE_TYPE_NAME"]["value"] == "head"
    assert env["RAY_enable_autoscaler_v2"]["value"] == "1"
    for name, node_type in (("elastic-worker", "worker"), ("elastic-worker-gpu", "worker-gpu")):
        template = children[("Deployment", name)]["spec"]["template"]
        assert template["metadata"]["labels"]["ray.kubeflow.org/autoscaling"] == "true"
        for part in (*template["spec"]["containers"], *template["spec"]["initContainers"]):
            env = {e["name"]: e.get("value") for e in part["env"]}
            assert env["RAY_NODE_TYPE_NAME"] == node_type
    worker = children[("Deployment", "elastic-worker")]["spec"]
    assert worker["replicas"] == 1  # no replicas written: the group starts at its minimum
    assert "--memory=4294967296" in worker["template"]["spec"]["containers"][0]["args"]


def test_the_autoscalers_pod_runs_the_heads_image_with_its_own_account() -> None:
    doc = autoscaled_ray()
    doc["spec"]["auth"] = {"mode": "token"}
    children = by_name(build_children(plan_of(doc), "CODE"))
    deployment = children[("Deployment", "elastic-autoscaler")]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "elastic-autoscaler"
    (box,) = pod["containers"]
    assert box["image"] == IMAGE
    assert box["command"] == ["python", "-u",
                              "/etc/ray-operator/autoscaler/ray_operator_autoscaler.py"]
    env = {e["name"]: e for e in box["env"]}
    assert env["RAY_OPERATOR_GCS_ADDRESS"]["value"] == "elastic-head:6379"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "elastic-auth"
    # What the head's pod passes Pod Security with, the autoscaler's does too.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert box["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    (rule,) = children[("Role", "elastic-autoscaler")]["rules"]
    assert rule["resourceNames"] == ["elastic"] and rule["verbs"] == ["get", "patch"]
    doc["spec"]["suspend"] = True
    suspended = by_name(build_children(plan_of(doc), "CODE"))
    assert suspended[("Deployment", "elastic-autoscaler")]["spec"]["replicas"] == 0


def test_counts_outside_the_bounds_are_clamped_in_the_cluster() -> None:
    plan = plan_of(autoscaled_ray(replicas=10))
    assert plan.worker.replicas == 4 and plan.worker.requested == 10
    plan = plan_of(autoscaled_ray(replicas=0))
    assert plan.worker.replicas == 1 and plan.worker.requested == 0
    assert plan_of(autoscaled_ray(replicas=2)).worker.requested is None
    # In a manifest, the same count is refused, with the field named.
    (problem,) = validate_ray(autoscaled_ray(replicas=10)).errors
    assert problem.field == "spec.worker.replicas"


def test_turning_autoscaling_off_leaves_no_label_or_variable_behind() -> None:
    on = by_name(build_children(plan_of(autoscaled_ray()), "CODE"))
    doc = autoscaled_ray()
    doc["spec"]["autoscaling"]["enabled"] = False
    off = by_name(build_children(plan_of(doc)))
    assert ("Deployment", "elastic-autoscaler") not in off
    found = setting_leftovers(off[("Deployment", "elastic-worker")],
                              on[("Deployment", "elastic-worker")])
    assert "spec.template.metadata.labels[ray.kubeflow.org/autoscaling]" in found
    assert "spec.template.spec.containers[ray-worker].env[RAY_NODE_TYPE_NAME]" in found
    assert "spec.template.spec.schedulingGates[ray.kubeflow.org/worker-count-settled]" in found


def test_new_workers_of_autoscaled_groups_wait_for_the_operators_gate() -> None:
    doc = autoscaled_ray()
    user_gate = {"name": "example.com/quota"}
    doc["spec"]["worker"]["template"]["spec"]["schedulingGates"] = [user_gate]
    children = by_name(build_children(plan_of(doc), "CODE"))
    gate = {"name": "ray.kubeflow.org/worker-count-settled"}
    worker = children[("Deployment", "elastic-worker")]["spec"]["template"]["spec"]
    assert worker["schedulingGates"] == [user_gate, gate]
    group = children[("Deployment", "elastic-worker-gpu")]["spec"]["template"]["spec"]
    assert group["schedulingGates"] == [gate]
    # The head is never held, nor the autoscaler that would lift nothing without it.
    for name in ("elastic-head", "elastic-autoscaler"):
        assert "schedulingGates" not in children[("Deployment", name)]["spec"]["template"]["spec"]
    # A cluster recorded at revision 3 keeps its templates on an operator upgrade.
    report = validate_ray(autoscaled_ray(), in_cluster=True)
    assert report.resource is not None
    old = by_name(build_children(plan_cluster(report.resource,
                                              Defaults(3, builtin_templates(3, IMAGE))), "CODE"))
    for name in ("elastic-worker", "elastic-worker-gpu"):
        assert "schedulingGates" not in old[("Deployment", name)]["spec"]["template"]["spec"]


def test_the_gate_is_lifted_from_one_pod_leaving_other_gates() -> None:
    gate = {"name": "ray.kubeflow.org/worker-count-settled"}
    quota = {"name": "example.com/quota"}
    pod = {"metadata": {"name": "w-1", "uid": "u-9"}, "spec": {"schedulingGates": [quota, gate]}}
    assert autoscaling.gate_held(pod)
    assert autoscaling.gate_lift_patch(pod) == [
        {"op": "test", "path": "/metadata/uid", "value": "u-9"},
        {"op": "test", "path": "/spec/schedulingGates", "value": [quota, gate]},
        {"op": "replace", "path": "/spec/schedulingGates", "value": [quota]},
    ]
    alone = {"metadata": {"name": "w-2", "uid": "u-8"}, "spec": {"schedulingGates": [gate]}}
    assert autoscaling.gate_lift_patch(alone)[-1] == {
        "op": "remove", "path": "/spec/schedulingGates"}
    assert not autoscaling.gate_held({"spec": {"schedulingGates": [gate], "nodeName": "n"}})
    assert not autoscaling.gate_held({"spec": {"schedulingGates": [quota]}})


@pytest.mark.parametrize(("desired", "current", "leaving", "allowed"), [
    (3, 1, 0, 3),      # up at once
    (1, 3, 0, 3),      # down by hand, nobody drained: held
    (1, 3, 1, 2),      # one drained and leaving: down by one
    (1, 3, 2, 1),
    (1, 3, 5, 1),      # never below what is asked
    (3, 3, 1, 3),      # a removal and a launch together: the count stays, a new pod replaces
    (2, None, 0, 2),   # a new Deployment
])
def test_a_count_drops_only_by_the_pods_ray_drained(
    desired: int, current: int | None, leaving: int, allowed: int
) -> None:
    assert allowed_replicas(desired, current, leaving) == allowed


def ray_as_read(replicas: int = 1, nodes: list[Obj] | None = None,
                to_delete: list[str] | None = None, **extra: Any) -> Obj:
    worker: Obj = {"replicas": replicas, "minReplicas": 0, "maxReplicas": 3, **extra}
    if to_delete is not None:
        worker["scaleStrategy"] = {"workersToDelete": to_delete}
    return {
        "metadata": {"resourceVersion": "7", "annotations": {"x": "y"}},
        "spec": {"worker": worker,
                 "workerGroups": [{"name": "gpu", "replicas": 0, "maxReplicas": 1}]},
        "status": {"autoscaling": {"nodes": nodes if nodes is not None else [
            {"pod": "h", "type": "head", "state": "running"},
            {"pod": "w1", "type": "worker", "state": "running"}]}},
    }


def request(ops: list[Obj]) -> Obj:
    (op,) = [o for o in ops if o["path"].startswith("/metadata/annotations")]
    return dict(json.loads(op["value"]))


def test_the_provider_launches_within_the_bounds() -> None:
    ops = node_provider.scale_patch(ray_as_read(), {"worker": 5, "worker-gpu": 1}, [])
    counts = {o["path"]: o["value"] for o in ops if o["path"].endswith("/replicas")}
    assert counts == {"/spec/worker/replicas": 3, "/spec/workerGroups/0/replicas": 1}
    assert request(ops) == {"launch": {"worker": 5, "worker-gpu": 1}, "remove": []}


def test_the_provider_names_what_it_removes_and_lowers_by_as_many() -> None:
    nodes = [{"pod": "h", "type": "head"}, {"pod": "w1", "type": "worker"},
             {"pod": "w2", "type": "worker"}, {"pod": "w3", "type": "worker"}]
    ops = node_provider.scale_patch(ray_as_read(3, nodes), {}, ["w2", "w3", "h", "nope"])
    assert {"op": "add", "path": "/spec/worker/replicas", "value": 1} in ops
    assert {"op": "add", "path": "/spec/worker/scaleStrategy",
            "value": {"workersToDelete": ["w2", "w3"]}} in ops
    assert request(ops)["remove"] == ["w2", "w3"]  # the head and unknown pods are not workers
    # Named already: not counted twice; a pod gone leaves the list; nothing else to do.
    ray = ray_as_read(2, nodes[:3], to_delete=["w2", "w9"])
    assert node_provider.scale_patch(ray, {}, ["w2"]) == [
        {"op": "add", "path": "/spec/worker/scaleStrategy", "value": {"workersToDelete": ["w2"]}}]


def test_before_the_operator_lists_pods_nothing_is_pruned_or_counted_gone() -> None:
    ray = ray_as_read(2, to_delete=["w2"])
    del ray["status"]
    # Unknown is not "no pod": the names stay, the count starts from replicas.
    assert node_provider.scale_patch(ray, {}, []) == []
    ops = node_provider.scale_patch(ray, {"worker": 1}, [])
    assert {"op": "add", "path": "/spec/worker/replicas", "value": 3} in ops


def test_a_count_lowered_by_hand_is_raised_back_to_the_workers_that_run() -> None:
    nodes = [{"pod": "w1", "type": "worker"}, {"pod": "w2", "type": "worker"}]
    ops = node_provider.scale_patch(ray_as_read(0, nodes), {}, [])
    assert ops == [{"op": "add", "path": "/spec/worker/replicas", "value": 2}]
    assert node_provider.scale_patch(ray_as_read(2, nodes), {}, []) == []


def test_the_provider_sees_the_pods_the_operator_lists_less_those_named() -> None:
    ray = ray_as_read(2, [{"pod": "h", "type": "head", "state": "running"},
                          {"pod": "w1", "type": "worker", "state": "pending", "ip": "10.0.0.9"},
                          {"pod": "w2", "type": "worker", "state": "running"}], ["w2"])
    provider = node_provider.RayNodeProvider.__new__(node_provider.RayNodeProvider)
    provider.nodes = {n["pod"]: n for n in node_provider.listed_nodes(ray) or []
                      if n["pod"] not in node_provider.named_for_removal(ray)}
    assert sorted(provider.nodes) == ["h", "w1"]
    assert provider.node_tags("h")["ray-node-type"] == "head"
    assert provider.node_tags("w1") == {"ray-node-type": "worker",
                                        "ray-user-node-type": "worker",
                                        "ray-node-status": "pending"}
    assert not provider.is_running("w1") and provider.internal_ip("w1") == "10.0.0.9"
    assert provider.is_terminated("w2")
    # Read anew by a launch thread meanwhile: a pod gone is no KeyError.
    assert provider.node_tags("gone")["ray-node-type"] == "worker"


def test_infeasible_requests_are_counted_by_shape() -> None:
    def bundle(**resources: float) -> SimpleNamespace:
        return SimpleNamespace(resources_bundle=resources)

    state = SimpleNamespace(
        infeasible_resource_requests=[bundle(CPU=8), bundle(CPU=8), bundle(GPU=4)],
        infeasible_gang_resource_requests=[SimpleNamespace(requests=[bundle(CPU=2)] * 2)],
        infeasible_cluster_resource_constraints=[SimpleNamespace(resource_requests=[
            SimpleNamespace(request=bundle(CPU=64), count=1)])],
    )
    assert node_provider.infeasible(state) == [
        {"count": 1, "kind": "placement group", "resources": [{"CPU": 2}, {"CPU": 2}]},
        {"count": 1, "kind": "request_resources", "resources": {"CPU": 64}},
        {"count": 2, "kind": "task or actor", "resources": {"CPU": 8}},
        {"count": 1, "kind": "task or actor", "resources": {"GPU": 4}},
    ]


def test_the_provider_and_the_operator_agree_on_their_names() -> None:
    assert node_provider.ANNOTATION_INFEASIBLE == constants.ANNOTATION_INFEASIBLE
    assert node_provider.ANNOTATION_REQUEST == constants.ANNOTATION_AUTOSCALER_REQUEST
    for name in ("ENV_GCS_ADDRESS", "ENV_RAY_NAME", "ENV_NAMESPACE", "ENV_CONFIG",
                 "ENV_POD_IP"):
        assert getattr(node_provider, name) == getattr(autoscaling, name)
    # The config names the class by the module file the ConfigMap holds.
    assert autoscaling.CODE_KEY == f"{autoscaling.PROVIDER_MODULE}.py"
    assert hasattr(node_provider, "RayNodeProvider")


def test_the_provider_runs_on_the_python_of_older_ray_images() -> None:
    ast.parse(provider_code(), feature_version=(3, 9))


def test_health_waits_for_the_fewest_workers_and_the_autoscaler() -> None:
    def deployment(replicas: int, available: int) -> Obj:
        return {"metadata": {"generation": 1}, "spec": {"replicas": replicas},
                "status": {"observedGeneration": 1, "replicas": replicas,
                           "updatedReplicas": replicas, "availableReplicas": available,
                           "readyReplicas": available,
                           "conditions": [{"type": "Available", "status": "True"}]}}

    observed = Observed(generation=1, head_desired=1, worker_desired=3,
                        head=deployment(1, 1), worker=deployment(3, 1),
                        floors={"": 1}, autoscaler=deployment(1, 1),
                        autoscaling={"groups": [], "nodes": []})
    status = compute_status(None, observed, "t")
    # Two workers starting for Ray's demand are no loss of health: one is the floor.
    assert status["health"] == "True" and status["workersReady"] == "1/3"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["RayAutoscalerAvailable"]["status"] == "True"
    assert conditions["RayRequestsFeasible"]["status"] == "True"
    waiting = compute_status(None, Observed(**{**observed.__dict__,
                                               "autoscaler": deployment(1, 0)}), "t")
    assert waiting["health"] == "Unknown"
    assert "the autoscaler" in next(c for c in waiting["conditions"]
                                    if c["type"] == "Health")["message"]
    removed = compute_status(status, Observed(**{**observed.__dict__, "floors": None,
                                                 "autoscaling": None}), "t")
    assert removed["autoscaling"] is None  # a merge patch removes the key
