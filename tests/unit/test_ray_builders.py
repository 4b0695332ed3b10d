"""Golden tests of the pure builders: what the operator would create for each example."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from ray_operator.api.validation import validate_ray
from ray_operator.builders.defaults import current_defaults, legacy_defaults
from ray_operator.builders.ray_cluster import build_children, plan_cluster, service_ports

EXAMPLES = Path(__file__).parents[2] / "examples"
GOLDEN = Path(__file__).parent / "golden"
IMAGE = "rayproject/ray:2.60.0"


def children_of(example: str, revision: int = 2) -> list[dict[str, Any]]:
    manifest = yaml.safe_load((EXAMPLES / example).read_text())
    manifest["metadata"].update(namespace="ml", uid="0000-uid")
    report = validate_ray(manifest)
    assert report.ok and report.resource is not None
    defaults = current_defaults(IMAGE) if revision == 2 else legacy_defaults({}, IMAGE)
    plan = plan_cluster(report.resource, defaults, report.unknown_fields)
    return build_children(plan)


@pytest.mark.parametrize(
    ("example", "revision"),
    [("ray-simple.yaml", 2), ("ray-full.yaml", 2), ("ray-simple.yaml", 1)],
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
