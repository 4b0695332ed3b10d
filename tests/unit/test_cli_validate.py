"""``ray-operator validate``: every kind of ours checked, everything else named, no tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ray_operator.cli import app

EXAMPLES = Path(__file__).parents[2] / "examples"


def validate(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["validate", *args], input=stdin)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_every_example_of_ours_is_valid() -> None:
    code, out = validate(str(EXAMPLES / "ray-simple.yaml"), str(EXAMPLES / "rayjob.yaml"))
    assert code == 0, out
    assert "Ray/sample-cluster: valid" in out and "RayJob/" in out


def test_a_rayjob_is_checked_like_the_operator_checks_it(tmp_path: Path) -> None:
    job = yaml.safe_load((EXAMPLES / "rayjob.yaml").read_text())
    del job["spec"]["cluster"]
    job["spec"]["address"] = "ray://head:10001"
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    code, out = validate(str(path))
    assert code == 1
    assert "spec.address='ray://head:10001': use an http:// or https:// URL" in out


def test_a_raypipeline_is_checked_field_by_field(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({
        "apiVersion": "ray.kubeflow.org/v1", "kind": "RayPipeline", "metadata": {"name": "p"},
        "spec": {"stpes": []},
    }))
    code, out = validate(str(path))
    assert code == 1 and "RayPipeline/p: error: spec.stpes: unknown field" in out


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "k"}},
         "RayCluster/k: apiVersion ray.io/v1 is KubeRay's: this operator serves "
         "ray.kubeflow.org/v1 Ray"),
        ({"apiVersion": "ray.io/v1", "kind": "Ray", "metadata": {"name": "r"}},
         "Ray/r: apiVersion='ray.io/v1' is not accepted: ray.kubeflow.org/v1"),
        ({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}},
         "Deployment/d: kind='Deployment' is not accepted: one of Ray, RayJob, RayPipeline"),
        ({"apiVersion": "ray.kubeflow.org/v1", "kind": "Ray", "metadata": ""},
         "metadata='' is not accepted: a mapping with a name"),
        ({"apiVersion": "ray.kubeflow.org/v1", "kind": "Ray", "metadata": "x"},
         "metadata='x' is not accepted"),
        ({"apiVersion": "ray.kubeflow.org/v1", "kind": "Ray", "spec": {"worker": {}}},
         "document 1 (Ray): metadata.name is missing"),
        (["a", "list"], "document 1: a list, not a Kubernetes object"),
    ],
)
def test_what_is_not_ours_is_an_error_that_says_what_it_is(
    tmp_path: Path, document: object, message: str
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(document))
    code, out = validate(str(path))
    assert code == 1 and message in out, out


def test_unreadable_files_are_named_not_tracebacks(tmp_path: Path) -> None:
    empty, binary, broken = tmp_path / "empty.yaml", tmp_path / "bin.yaml", tmp_path / "bad.yaml"
    empty.write_text("# nothing\n")
    binary.write_bytes(b"kind: Ray\n\xff\xfe")
    broken.write_text("kind: [Ray\n")
    code, out = validate(str(empty), str(binary), str(broken), str(tmp_path / "missing.yaml"))
    assert code == 1
    assert f"{empty}: error: no objects in it" in out
    assert f"{binary}: error: cannot read: not UTF-8 text (byte 10)" in out
    assert f"{broken}: error: not YAML:" in out
    assert "missing.yaml: error: cannot read: No such file or directory" in out


def test_brackets_in_values_are_printed_as_they_are(tmp_path: Path) -> None:
    ray = yaml.safe_load((EXAMPLES / "ray-simple.yaml").read_text())
    ray["spec"]["worker"]["replicas"] = "[/tmp]"
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(ray))
    code, out = validate(str(path))
    assert code == 1 and "'[/tmp]'" in out


def test_standard_input_is_read_for_a_dash() -> None:
    code, out = validate("-", stdin=(EXAMPLES / "ray-simple.yaml").read_text())
    assert code == 0 and "-: Ray/sample-cluster: valid" in out


def test_version_is_printed() -> None:
    from ray_operator import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"ray-operator {__version__}\n"


def test_a_rayjob_takes_ray_s_env_vars_for_env(tmp_path: Path) -> None:
    """RayPipeline steps (and Ray) say env_vars; a RayJob written that way keeps them."""
    import json

    from ray_operator.cli.render import render_rayjob

    job = yaml.safe_load((EXAMPLES / "rayjob.yaml").read_text())
    job["spec"]["runtimeEnv"] = {"env_vars": {"MODE": "fast"}}
    (config_map,) = [c for c in render_rayjob(job, "runner:1") if c["kind"] == "ConfigMap"]
    assert json.loads(config_map["data"]["jobdata.scriptMetadata"]) == {"env": {"MODE": "fast"}}
    job["spec"]["runtimeEnv"]["env"] = {"MODE": "slow"}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    code, out = validate(str(path))
    assert code == 1 and "runtimeEnv.env and runtimeEnv.env_vars are the same setting" in out
