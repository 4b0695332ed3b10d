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
