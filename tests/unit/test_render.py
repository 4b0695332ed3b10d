"""``ray-operator render`` offline: the children of the examples, and validate's errors."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from ray_operator.cli import app

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_render_prints_the_children_of_every_ray_and_rayjob() -> None:
    result = CliRunner().invoke(
        app, ["render", str(EXAMPLES / "ray-simple.yaml"), str(EXAMPLES / "rayjob.yaml")]
    )
    assert result.exit_code == 0, result.output
    kinds = [(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(result.stdout)]
    assert kinds[:3] == [
        ("Service", "sample-cluster-head"),
        ("Deployment", "sample-cluster-head"),
        ("Deployment", "sample-cluster-worker"),
    ]
    assert [k for k, _ in kinds[3:]] == [
        "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Pod"
    ]


def test_render_uses_the_default_image_the_operator_would(tmp_path: Path) -> None:
    env = {"RAY_OPERATOR_RAY_IMAGE": "registry.example/ray:2.60.0"}
    result = CliRunner().invoke(app, ["render", str(EXAMPLES / "ray-simple.yaml")], env=env)
    head = list(yaml.safe_load_all(result.stdout))[1]
    assert head["spec"]["template"]["spec"]["containers"][0]["image"] == env[
        "RAY_OPERATOR_RAY_IMAGE"
    ]


def test_render_refuses_what_validate_refuses(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({
        "apiVersion": "ray.kubeflow.org/v1", "kind": "Ray", "metadata": {"name": "bad"},
        "spec": {"head": {"replicas": 2}, "worker": {}},
    }))
    result = CliRunner().invoke(app, ["render", str(bad)])
    assert result.exit_code == 1
    assert "spec.head.replicas" in result.output and "0 or 1" in result.output


def test_a_job_with_its_own_cluster_renders_that_ray_first_and_points_at_it() -> None:
    result = CliRunner().invoke(app, ["render", str(EXAMPLES / "rayjob-own-cluster.yaml")])
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.output))
    ray = docs[0]
    assert (ray["kind"], ray["metadata"]["name"]) == ("Ray", "count-nodes-ray")
    assert ray["metadata"]["ownerReferences"][0]["kind"] == "RayJob"
    assert ray["spec"] == {"worker": {"replicas": 1}}
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    assert configmap["data"]["resourceURL"] == "http://count-nodes-ray-head.default.svc:8265"
