"""Golden tests of the pure builders: what the operator would create for each example."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from ray_operator.api.validation import validate_ray
from ray_operator.builders.defaults import (
    CURRENT_REVISION,
    Defaults,
    builtin_templates,
    current_defaults,
    legacy_defaults,
)
from ray_operator.builders.ray_cluster import build_children, plan_cluster, service_ports

EXAMPLES = Path(__file__).parents[2] / "examples"
GOLDEN = Path(__file__).parent / "golden"
IMAGE = "rayproject/ray:2.60.0"


def children_of(example: str, revision: int = CURRENT_REVISION) -> list[dict[str, Any]]:
    manifest = yaml.safe_load((EXAMPLES / example).read_text())
    manifest["metadata"].update(namespace="ml", uid="0000-uid")
    report = validate_ray(manifest)
    assert report.ok and report.resource is not None
    defaults = (
        legacy_defaults({}, IMAGE)
        if revision == 1
        else Defaults(revision, builtin_templates(revision, IMAGE))
    )
    plan = plan_cluster(report.resource, defaults, report.unknown_fields)
    return build_children(plan)


@pytest.mark.parametrize(
    ("example", "revision"),
    [
        ("ray-simple.yaml", 3),
        ("ray-full.yaml", 3),
        ("ray-simple.yaml", 2),
        ("ray-full.yaml", 2),
        ("ray-simple.yaml", 1),
    ],
)
def test_children_match_the_golden_files(example: str, revision: int) -> None:
    """Each builder revision makes exactly what it made when released (see builders.defaults):
    a change here would restart every running cluster of that revision."""
    text = yaml.safe_dump_all(children_of(example, revision), sort_keys=True)
    golden = GOLDEN / example.replace(".yaml", f".children.rev{revision}.yaml")
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), f"regenerate with UPDATE_GOLDEN=1 if intended: {golden}"


def test_builders_are_deterministic() -> None:
    assert children_of("ray-simple.yaml") == children_of("ray-simple.yaml")


def test_default_head_listens_on_the_ray_ports_and_takes_cpus_from_limits() -> None:
    _, head, worker = children_of("ray-simple.yaml")
    container = head["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["ray"]
    assert "--num-cpus=$(RAY_CPU_LIMIT)" in container["args"]
    assert "--node-ip-address=$(RAY_NODE_IP)" in container["args"]
    cpu = next(e for e in container["env"] if e["name"] == "RAY_CPU_LIMIT")
    assert cpu["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"
    wargs = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--address=$(RAY_HEAD_SERVICE):6379" in wargs
    volumes = head["spec"]["template"]["spec"]["volumes"]
    assert volumes == [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]


def test_a_user_value_of_an_injected_variable_is_replaced_not_duplicated() -> None:
    manifest = yaml.safe_load((EXAMPLES / "ray-full.yaml").read_text())
    container = manifest["spec"]["worker"]["template"]["spec"]["containers"][0]
    container["env"] = [
        {"name": "RAY_HEAD_SERVICE", "value": "elsewhere"},
        {"name": "A", "value": "1"},
    ]
    manifest["metadata"].update(namespace="ml", uid="u")
    report = validate_ray(manifest)
    assert report.resource is not None
    worker = build_children(plan_cluster(report.resource, current_defaults(IMAGE)))[2]
    env = worker["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e["name"] for e in env] == ["RAY_NODE_IP", "RAY_HEAD_SERVICE", "A"]
    assert env[1]["value"] == "sample-cluster-head"


def test_unnamed_and_udp_ports_get_stable_names() -> None:
    template = {
        "spec": {
            "containers": [
                {
                    "name": "a",
                    "ports": [
                        {"containerPort": 6379},
                        {"containerPort": 53, "protocol": "UDP"},
                        {"containerPort": 8265, "name": "dash"},
                    ],
                }
            ]
        }
    }
    assert [p["name"] for p in service_ports(template)] == ["port-6379", "port-53-udp", "dash"]


def _init_containers(example: str, revision: int) -> list[dict[str, Any]]:
    worker = children_of(example, revision)[2]
    found: list[dict[str, Any]] = worker["spec"]["template"]["spec"].get("initContainers", [])
    return found


def test_workers_wait_for_the_gcs_from_revision_3_and_older_clusters_stay_as_they_are() -> None:
    assert _init_containers("ray-simple.yaml", 1) == []
    assert _init_containers("ray-simple.yaml", 2) == []
    (wait,) = _init_containers("ray-simple.yaml", 3)
    assert wait["name"] == "wait-gcs" and wait["image"] == IMAGE
    assert wait["env"] == [{"name": "RAY_HEAD_SERVICE", "value": "sample-cluster-head"}]
    # The head exposes its dashboard: the wait polls the head's own readiness endpoint.
    assert ":8265/api/gcs_healthz" in wait["command"][-1]
    # The default worker is a restricted pod: so is its wait.
    assert wait["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_a_user_worker_template_gets_the_wait_from_its_own_container() -> None:
    manifest = yaml.safe_load((EXAMPLES / "ray-full.yaml").read_text())
    worker = manifest["spec"]["worker"]["template"]["spec"]["containers"][0]
    (wait,) = _init_containers("ray-full.yaml", 3)
    assert wait["image"] == worker["image"]
    # This head exposes no dashboard port: Ray's own check of the GCS.
    assert "health-check" in wait["command"][-1] and "gcs_healthz" not in wait["command"][-1]
    assert wait["resources"] == {"requests": worker["resources"]["requests"]}  # "limit" is a typo
    # One of the user's own with that name is theirs to keep, and not doubled.
    from ray_operator.builders.gcs_wait import with_gcs_wait

    own = {"spec": {"containers": [worker], "initContainers": [{"name": "wait-gcs"}]}}
    assert with_gcs_wait(own, "x-head", None) == own


def _children_with(**spec: Any) -> list[dict[str, Any]]:
    manifest = yaml.safe_load((EXAMPLES / "ray-simple.yaml").read_text())
    manifest["metadata"].update(namespace="ml", uid="0000-uid")
    manifest["spec"].update(spec)
    report = validate_ray(manifest)
    assert report.ok and report.resource is not None, report.message()
    return build_children(plan_cluster(report.resource, current_defaults(IMAGE), [], "ops"))


def test_auth_puts_the_token_secret_first_and_ray_s_settings_in_every_container() -> None:
    secret, service, head, worker = _children_with(auth={"mode": "token"})
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "sample-cluster-auth"
    assert "data" not in secret and "stringData" not in secret  # the controller writes it once
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "0000-uid"
    token = {"secretKeyRef": {"name": "sample-cluster-auth", "key": "token"}}
    for deployment in (head, worker):
        pod = deployment["spec"]["template"]["spec"]
        containers = [*pod.get("initContainers", []), *pod["containers"]]
        assert [c["name"] for c in containers if c["name"] == "wait-gcs"] == (
            ["wait-gcs"] if deployment is worker else []
        )
        for container in containers:
            env = {e["name"]: e for e in container["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token", container["name"]
            assert env["RAY_AUTH_TOKEN"]["valueFrom"] == token, container["name"]
    # Without auth nothing changes: running clusters keep their pods.
    assert all("RAY_AUTH" not in str(c) for c in _children_with())


def test_network_policy_lets_the_cluster_talk_and_admits_the_job_api_from_the_peers() -> None:
    peer = {"namespaceSelector": {"matchLabels": {"team": "ml"}}}
    policy, *_ = _children_with(networkPolicy={"enabled": True, "allowFrom": [peer]})
    assert policy["kind"] == "NetworkPolicy" and policy["metadata"]["name"] == "sample-cluster-ray"
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": {"ray.kubeflow.org/cluster": "sample-cluster"}}
    assert spec["policyTypes"] == ["Ingress"]
    own, job_api = spec["ingress"]
    assert own == {"from": [{"podSelector": spec["podSelector"]}]}  # every port, each other
    assert job_api["ports"] == [{"protocol": "TCP", "port": 8265}]
    runners, operator, listed = job_api["from"]
    assert runners["podSelector"]["matchExpressions"] == [
        {"key": "ray.kubeflow.org/rayjob", "operator": "Exists"}
    ]
    assert operator["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "ops"}
    assert listed == peer
    disabled = _children_with(networkPolicy={"enabled": False})
    assert all(c["kind"] != "NetworkPolicy" for c in disabled)


@pytest.mark.parametrize(
    ("peer", "message"),
    [
        ({}, "spec.networkPolicy.allowFrom[0]: {} is not valid; a peer with podSelector"),
        ({"podSelector": {"app": "x"}}, "allowFrom[0].podSelector: {'app': 'x'} is not valid; a "
         "label selector: matchLabels and/or matchExpressions (not app)"),
        ({"ipBlock": {}}, "allowFrom[0].ipBlock: {} is not valid"),
        ({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}, "either ipBlock or selectors"),
        ({"podselector": {}},
         "spec.networkPolicy.allowFrom[0].podselector: {} is not valid; an unknown field"),
    ],
)
def test_a_bad_network_peer_is_named(peer: dict[str, Any], message: str) -> None:
    manifest = yaml.safe_load((EXAMPLES / "ray-simple.yaml").read_text())
    manifest["spec"]["networkPolicy"] = {"enabled": True, "allowFrom": [peer]}
    report = validate_ray(manifest)
    assert not report.ok
    assert message in report.message(), report.message()


GPU_GROUP = {
    "name": "gpu",
    "replicas": 2,
    "rayResources": {"accelerator_a10g": 1},
    "template": {"spec": {"containers": [{
        "name": "ray-worker", "image": IMAGE, "command": ["ray"],
        "args": ["start", "--address=$(RAY_HEAD_SERVICE):6379", "--block"],
        "resources": {"limits": {"cpu": "8", "memory": "30Gi", "nvidia.com/gpu": "1"}},
    }]}},
}


def test_each_worker_group_is_a_deployment_of_its_own_told_its_node_s_ray_resources() -> None:
    children = _children_with(workerGroups=[GPU_GROUP, {"name": "cpu"}])
    assert [c["metadata"]["name"] for c in children] == [
        "sample-cluster-head", "sample-cluster-head", "sample-cluster-worker",
        "sample-cluster-worker-gpu", "sample-cluster-worker-cpu",
    ]
    plain = children[2]
    gpu, cpu = children[3:]
    assert gpu["spec"]["replicas"] == 2 and cpu["spec"]["replicas"] == 1
    # Not selected by spec.worker's Deployment (its selector cannot change on running clusters).
    assert gpu["spec"]["selector"]["matchLabels"] == {
        "ray.kubeflow.org/cluster": "sample-cluster", "ray.kubeflow.org/role": "worker-gpu"
    }
    labels = gpu["spec"]["template"]["metadata"]["labels"]
    assert labels["ray.kubeflow.org/worker-group"] == "gpu"
    pod = gpu["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["wait-gcs"]
    (container,) = pod["containers"]
    assert container["args"] == [
        "start", "--address=$(RAY_HEAD_SERVICE):6379", "--num-gpus=1",
        f"--memory={30 * 2**30}", '--resources={"accelerator_a10g":1.0}', "--block",
    ]
    env = {e["name"] for e in container["env"]}
    assert {"RAY_HEAD_SERVICE", "RAY_NODE_IP"} <= env
    # A group without a template gets the default worker's; spec.worker itself is unchanged.
    assert cpu["spec"]["template"]["spec"]["containers"][0]["args"] == (
        plain["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    assert plain == children_of("ray-simple.yaml")[2]


def test_a_user_s_own_ray_start_flags_win() -> None:
    group = yaml.safe_load(yaml.safe_dump(GPU_GROUP))
    group["template"]["spec"]["containers"][0]["args"].insert(1, "--num-gpus=0")
    (deployment,) = _children_with(workerGroups=[group])[3:]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--num-gpus")] == ["--num-gpus=0"]


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ([{"name": "GPU"}], "spec.workerGroups[0].name: 'GPU' is not valid; a DNS label"),
        ([{"name": "a" * 30}], "within 46 characters (its pods' names must be host names): at "
         "most 24 characters here"),
        ([{"name": "a"}, {"name": "a"}], "spec.workerGroups[1].name: 'a' is not valid; a name of "
         "its own (spec.workerGroups[0] has it)"),
        ([{"name": "a", "rayResources": {"GPU": 1}}], "spec.workerGroups[0].rayResources.GPU"),
        ([{"name": "a", "rayResources": {"x": -1}}], "an amount of at least 0"),
        ([{"name": "a", "rayResources": {"x": 1}, "template": {"spec": {"containers": [
            {"name": "w", "image": "i", "command": ["sh", "-c", "ray start --block"]}]}}}],
         "spec.workerGroups[0].rayResources: {'x': 1.0} is not valid; custom resources for a Ray "
         "container that runs `ray start` itself"),
        ([{"name": "a", "replica": 2}], "spec.workerGroups[0].replica"),
        ([{"name": "a", "replicas": -1}], "spec.workerGroups[0].replicas"),
    ],
)
def test_a_bad_worker_group_is_named(groups: list[dict[str, Any]], message: str) -> None:
    manifest = yaml.safe_load((EXAMPLES / "ray-simple.yaml").read_text())
    manifest["spec"]["workerGroups"] = groups
    report = validate_ray(manifest)
    assert not report.ok
    assert message in report.message(), report.message()


def test_gcs_fault_tolerance_gives_the_head_redis_and_the_workers_patience() -> None:
    ft = {
        "redisAddress": "redis.ray-system.svc:6379",
        "redisPasswordSecret": {"name": "redis", "key": "password"},
    }
    _, head, worker, group = _children_with(gcsFaultTolerance=ft, workerGroups=[{"name": "g"}])
    (ray_head,) = head["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in ray_head["env"]}
    assert env["RAY_REDIS_ADDRESS"]["value"] == "redis.ray-system.svc:6379"
    assert env["RAY_external_storage_namespace"]["value"] == "0000-uid"  # the Ray's uid
    assert env["REDIS_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "redis", "key": "password"}
    }
    assert "--redis-password=$(REDIS_PASSWORD)" in ray_head["args"]
    assert ray_head["args"][-1] == "--block"
    for deployment in (worker, group):
        pod = deployment["spec"]["template"]["spec"]
        for container in [*pod["initContainers"], *pod["containers"]]:
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert env["RAY_gcs_rpc_server_reconnect_timeout_s"] == "600"
            assert "RAY_REDIS_ADDRESS" not in env
    named = _children_with(gcsFaultTolerance={"redisAddress": "r:6379",
                                              "externalStorageNamespace": "team-a"})
    head_env = {e["name"]: e.get("value") for e in
                named[1]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert head_env["RAY_external_storage_namespace"] == "team-a"
    assert "REDIS_PASSWORD" not in head_env


@pytest.mark.parametrize(
    ("ft", "message"),
    [
        ({"redisAddress": "redis://r:6379"}, "spec.gcsFaultTolerance.redisAddress: "
         "'redis://r:6379' is not valid; host:port of a Redis"),
        ({"redisAddress": "r:70000"}, "spec.gcsFaultTolerance.redisAddress"),
        ({}, "spec.gcsFaultTolerance.redisAddress"),
        ({"redisAddress": "r:6379", "redisPasswordSecret": {"name": "s"}},
         "spec.gcsFaultTolerance.redisPasswordSecret.key"),
    ],
)
def test_a_bad_gcs_fault_tolerance_section_is_named(ft: dict[str, Any], message: str) -> None:
    manifest = yaml.safe_load((EXAMPLES / "ray-simple.yaml").read_text())
    manifest["spec"]["gcsFaultTolerance"] = ft
    report = validate_ray(manifest)
    assert not report.ok
    assert message in report.message(), report.message()


def test_a_password_needs_a_head_that_runs_ray_start_itself() -> None:
    manifest = yaml.safe_load((EXAMPLES / "ray-full.yaml").read_text())
    manifest["spec"]["head"]["template"]["spec"]["containers"][0]["command"] = ["sh", "-c"]
    manifest["spec"]["gcsFaultTolerance"] = {
        "redisAddress": "r:6379", "redisPasswordSecret": {"name": "s", "key": "k"}
    }
    report = validate_ray(manifest)
    assert "spec.gcsFaultTolerance.redisPasswordSecret" in report.message(), report.message()


def test_the_gcs_cleanup_job_runs_ray_s_own_cleanup_in_the_head_s_image_and_ends() -> None:
    from ray_operator.builders.gcs_cleanup import build_cleanup_job, job_outcome

    manifest = yaml.safe_load((EXAMPLES / "ray-simple.yaml").read_text())
    manifest["metadata"].update(namespace="ml", uid="0000-uid")
    manifest["spec"]["gcsFaultTolerance"] = {
        "redisAddress": "redis:6379", "redisPasswordSecret": {"name": "r", "key": "p"}
    }
    report = validate_ray(manifest)
    assert report.resource is not None
    job = build_cleanup_job(plan_cluster(report.resource, current_defaults(IMAGE)))
    assert job["metadata"]["name"] == "sample-cluster-gcs-cleanup"
    assert job["spec"]["activeDeadlineSeconds"] == 300  # an unreachable Redis never holds it
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == IMAGE and "cleanup_redis_storage" in container["command"][2]
    env = {e["name"]: e for e in container["env"]}
    assert env["RAY_external_storage_namespace"]["value"] == "0000-uid"
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "r", "key": "p"}
    assert pod["securityContext"]["runAsNonRoot"] is True  # restricted, like the head
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert job["metadata"]["ownerReferences"][0]["uid"] == "0000-uid"

    def with_conditions(*conditions: dict[str, str], failed: int = 0) -> dict[str, Any]:
        return {"status": {"conditions": list(conditions), "failed": failed}}

    assert job_outcome(with_conditions())[0] == "Running"
    assert job_outcome(with_conditions(failed=2)) == ("Running", "2 failed attempt(s) so far")
    assert job_outcome(with_conditions({"type": "Complete", "status": "True"}))[0] == "Succeeded"
    failed = with_conditions({"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                              "message": "Job was active longer than specified deadline"})
    assert job_outcome(failed) == (
        "Failed", "DeadlineExceeded: Job was active longer than specified deadline"
    )


@pytest.mark.parametrize(
    ("peer", "message"),
    [
        ({"podSelector": {"matchLabels": {"a": 1}}}, "podSelector.matchLabels: {'a': 1}"),
        ({"podSelector": {"matchExpressions": "x"}}, "podSelector.matchExpressions: 'x'"),
        ({"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
         "namespaceSelector.matchExpressions[0]"),
        ({"ipBlock": {"cidr": "nonsense"}}, "allowFrom[0].ipBlock: {'cidr': 'nonsense'}"),
        ({"ipBlock": {"cidr": "10.0.0.0/8", "foo": 1}}, "allowFrom[0].ipBlock"),
    ],
)
def test_a_network_peer_the_apiserver_would_refuse_is_named_first(
    peer: dict[str, Any], message: str
) -> None:
    manifest = yaml.safe_load((EXAMPLES / "ray-simple.yaml").read_text())
    manifest["spec"]["networkPolicy"] = {"enabled": True, "allowFrom": [peer]}
    report = validate_ray(manifest)
    assert message in report.message(), report.message()


def test_fine_peers_pass() -> None:
    manifest = yaml.safe_load((EXAMPLES / "ray-simple.yaml").read_text())
    manifest["spec"]["networkPolicy"] = {"enabled": True, "allowFrom": [
        {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}},
        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
    ]}
    assert validate_ray(manifest).ok


def test_settings_taken_out_of_the_spec_are_drift_on_the_deployments() -> None:
    from ray_operator.builders.ray_cluster import setting_leftovers

    with_auth = _children_with(auth={"mode": "token"})[2]  # the head Deployment
    without = children_of("ray-simple.yaml")[1]
    assert setting_leftovers(without, with_auth) == [
        "spec.template.spec.containers[ray-head].env[RAY_AUTH_MODE]",
        "spec.template.spec.containers[ray-head].env[RAY_AUTH_TOKEN]",
    ]
    assert setting_leftovers(with_auth, with_auth) == []
    assert setting_leftovers(without, without) == []


def test_secrets_go_to_the_ray_containers_only_not_to_a_user_s_sidecar() -> None:
    manifest = yaml.safe_load((EXAMPLES / "ray-full.yaml").read_text())
    containers = manifest["spec"]["worker"]["template"]["spec"]["containers"]
    containers.append({"name": "log-shipper", "image": "fluent-bit"})
    manifest["metadata"].update(namespace="ml", uid="u")
    manifest["spec"]["auth"] = {"mode": "token"}
    report = validate_ray(manifest)
    assert report.resource is not None, report.message()
    worker = build_children(plan_cluster(report.resource, current_defaults(IMAGE)))[3]
    pod = worker["spec"]["template"]["spec"]
    with_token = [c["name"] for c in [*pod["initContainers"], *pod["containers"]]
                  if "RAY_AUTH_TOKEN" in str(c.get("env"))]
    assert with_token == ["wait-gcs", containers[0]["name"]]
