from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ray_operator.api.pipeline import (
    DEFAULT_EXPORT_PATH,
    PipelineSpecError,
    load_pipeline,
    parse_pipeline,
)
from ray_operator.api.pipeline_step import step_runs
from ray_operator.cli.pipeline import app

EXAMPLES = Path(__file__).parents[3] / "examples" / "pipelines"


def spec(**fields: Any) -> dict[str, Any]:
    return {"spec": {"steps": [{"name": "a", "script": "x\ny"}], **fields}}


def problems(data: dict[str, Any]) -> str:
    with pytest.raises(PipelineSpecError) as info:
        parse_pipeline(data, "p.yaml")
    return str(info.value)


def test_defaults_match_the_original() -> None:
    pipeline = parse_pipeline(spec())
    assert pipeline.spec.timeoutMinutes == 360
    assert pipeline.spec.exportPath == DEFAULT_EXPORT_PATH == "/ray/export/"
    assert pipeline.spec.pvcName is None
    assert pipeline.spec.dataBucket is None


def test_empty_pvc_name_means_no_pvc() -> None:
    assert parse_pipeline(spec(pvcName="")).spec.pvcName is None


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"exportPath": "ray/export"}, "spec.exportPath: 'ray/export' is not accepted: give an "
         "absolute path starting with '/'"),
        ({"timeoutMinutes": 0}, "spec.timeoutMinutes: 0 is not accepted"),
        ({"dataBucket": "s3://b"}, "spec.dataBucket: 's3://b' is not accepted: give an S3 bucket"),
        ({"steps": []}, "spec.steps: [] is not accepted"),
        ({"exportpath": "/x"}, "spec.exportpath: unknown field"),
    ],
)
def test_errors_name_field_value_and_what_is_accepted(
    fields: dict[str, Any], expected: str
) -> None:
    assert expected in problems(spec(**fields))


def test_step_errors_name_the_step_field() -> None:
    text = problems({"spec": {"steps": [
        {"name": "Train_1", "script": "a.py"},
        {"name": "b", "script": "b.py", "retries": -1, "parameters": {"n": [1]}},
    ]}})
    assert "spec.steps.0.name: 'Train_1' is not accepted: use lower-case letters" in text
    assert "spec.steps.1.retries: -1 is not accepted" in text
    assert "spec.steps.1.parameters: n=[1] is not accepted: values are strings" in text


def test_duplicate_step_names_rejected() -> None:
    steps = [{"name": "a", "script": "x"}, {"name": "a", "script": "y"}]
    text = problems({"spec": {"steps": steps}})
    assert "step name 'a' is used twice" in text


def test_yaml_numbers_become_strings() -> None:
    step = {"name": "a", "script": "s3://b/k", "parameters": {"n": 3, "f": True}}
    pipeline = parse_pipeline({"spec": {"steps": [step]}})
    assert pipeline.spec.steps[0].parameters == {"n": "3", "f": "true"}
    assert pipeline.spec.steps[0].script_is_s3


def test_missing_script_file_named(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("spec:\n  steps: [{name: a, script: nothere.py}]\n")
    pipeline = load_pipeline(tmp_path / "p.yaml")
    with pytest.raises(PipelineSpecError, match="'nothere.py' cannot be read"):
        step_runs(pipeline.name, pipeline.spec, tmp_path)


def test_parameters_every_step_gets() -> None:
    pipeline = parse_pipeline(
        {"metadata": {"name": "p"}, "spec": {"dataBucket": "my-bucket", "steps": [
            {"name": "a", "script": "x\ny"},
            {"name": "b", "script": "x\ny", "parameters": {"k": "v"}},
        ]}}
    )
    first, second = step_runs("p", pipeline.spec, None)
    assert second.all_parameters("r9") == {
        "export_path": "/ray/export/",
        "data_bucket": "my-bucket",
        "run_id": "r9",
        "output_dir": "/ray/export/r9/b",
        "input_dir": "/ray/export/r9/a",
        "k": "v",
    }
    assert first.all_parameters("r9")["input_dir"] == ""


def test_cli_validate(tmp_path: Path) -> None:
    ok = CliRunner().invoke(app, ["validate", str(EXAMPLES / "train-inference" / "pipeline.yaml")])
    assert ok.exit_code == 0, ok.output
    assert "valid pipeline 'train-inference': train -> inference" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "kind: RayPipeline\nspec:\n  timeoutMinutes: -5\n  steps: [{name: a, script: x}]\n"
    )
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1  # invalid; 2 is for usage errors, as `ray-operator validate`
    assert "spec.timeoutMinutes: -5 is not accepted" in result.stderr
    usage = CliRunner().invoke(app, ["validate"])
    assert usage.exit_code == 2


def _inference_module() -> Any:
    path = EXAMPLES / "train-inference" / "inference.py"
    module_spec = importlib.util.spec_from_file_location("example_inference", path)
    assert module_spec and module_spec.loader
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def test_inference_picks_newest_checkpoint_by_epoch_not_by_name(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    # Names sort the other way round from epochs: a glob's "last" would be epoch 9.
    for name, epoch in [("checkpoint_9", 9), ("checkpoint_10", 10), ("checkpoint_b", 2)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.pt").write_bytes(b"")
        (tmp_path / name / "meta.json").write_text(json.dumps({"epoch": epoch}))
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "meta.json").write_text(json.dumps({"epoch": 99}))  # no model.pt
    path, info = _inference_module().newest_checkpoint(tmp_path)
    assert path == tmp_path / "checkpoint_10"
    assert info["epoch"] == 10


@pytest.mark.parametrize(
    ("yaml_text", "inline", "s3"),
    [
        ("script: |\n      print('one line')\n", True, False),
        ("script: |\n      print('a:b')\n", True, False),
        ("script: \"print('a:b')\"\n", False, False),  # one line, no break: a (missing) file
        ("script: my-bucket:scripts/train.py\n", False, True),
        ("script: s3://my-bucket/scripts/train.py\n", False, True),
        ("script: train.py\n", False, False),
        ("script: C:train.py\n", False, False),  # no bucket name is one letter
    ],
)
def test_where_a_script_is_read_from(
    tmp_path: Path, yaml_text: str, inline: bool, s3: bool
) -> None:
    import yaml

    text = "spec:\n  steps:\n  - name: a\n    " + yaml_text
    (step,) = parse_pipeline(yaml.safe_load(text)).spec.steps
    assert (step.script_is_inline, step.script_is_s3) == (inline, s3)
    if inline:
        (run,) = step_runs("p", parse_pipeline(yaml.safe_load(text)).spec, tmp_path)
        assert run.script == step.script and run.scriptLocation is None


def test_manifest_puts_file_scripts_inline_so_the_cluster_can_run_them(tmp_path: Path) -> None:
    """The example as written cannot be a RayPipeline (its scripts are files beside it);
    `pipeline manifest` makes one that the operator accepts, with the scripts' text."""
    import yaml

    from ray_operator.builders.raypipeline import check_buildable
    from ray_operator.cli import app as main_app

    example = Path(__file__).parents[3] / "examples" / "pipelines" / "train-inference"
    original = load_pipeline(example / "pipeline.yaml")
    assert check_buildable(original.spec)  # refused as it is
    result = CliRunner().invoke(
        main_app, ["pipeline", "manifest", str(example / "pipeline.yaml"), "--cluster", "other"]
    )
    assert result.exit_code == 0, result.output
    document = yaml.safe_load(result.output)
    assert document["kind"] == "RayPipeline" and document["metadata"] == {"name": "train-inference"}
    applied = parse_pipeline(document)
    assert check_buildable(applied.spec) == []
    assert applied.spec.cluster == "other"
    train, inference = applied.spec.steps
    assert train.script == (example / "train.py").read_text()
    assert inference.script == (example / "inference.py").read_text()
    assert train.parameters == original.spec.steps[0].parameters
    assert "script: |" in result.output  # readable blocks, not one escaped line


def test_a_script_can_say_where_it_is_and_then_nothing_is_guessed(tmp_path: Path) -> None:
    def step(**fields: Any) -> Any:
        (found,) = parse_pipeline({"spec": {"steps": [{"name": "a", **fields}]}}).spec.steps
        return found

    one_line = step(script="print('a:b')", scriptLocation="inline")
    assert one_line.script_is_inline and not one_line.script_is_s3
    (run,) = step_runs("p", parse_pipeline({"spec": {"steps": [
        {"name": "a", "script": "print('a:b')", "scriptLocation": "inline"}]}}).spec, tmp_path)
    assert run.script == "print('a:b')"
    assert step(script="my-bucket:train.py", scriptLocation="file").script_location == "file"
    assert step(script="s3://b/k.py", scriptLocation="s3").script_is_s3
    with pytest.raises(PipelineSpecError, match="scriptLocation 's3' is not accepted"):
        step(script="train.py", scriptLocation="s3")
    with pytest.raises(PipelineSpecError, match="scriptLocation"):
        step(script="x", scriptLocation="configmap")


def test_validate_warns_where_the_location_is_guessed(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print(1)\n")
    path = tmp_path / "p.yaml"
    path.write_text("spec:\n  steps:\n  - {name: a, script: train.py}\n"
                    "  - {name: b, script: train.py, scriptLocation: file}\n")
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert ("warning: spec.steps[0] (a): script read as file (guessed); write scriptLocation: "
            "file to say so") in result.stderr
    assert "spec.steps[1]" not in result.stderr


def test_in_the_cluster_the_example_s_script_files_go_in_a_configmap_the_steps_mount() -> None:
    from ray_operator.builders.raypipeline import build_step_rayjob, check_buildable
    from ray_operator.pipelines.in_cluster import cluster_manifests, owned_by

    example = Path(__file__).parents[3] / "examples" / "pipelines" / "train-inference"
    made = cluster_manifests(load_pipeline(example / "pipeline.yaml"), example)
    assert made.scripts is not None
    assert made.scripts["metadata"]["name"] == "train-inference-scripts"
    assert made.scripts["data"] == {
        "train.py": (example / "train.py").read_text(),
        "inference.py": (example / "inference.py").read_text(),
    }
    applied = parse_pipeline(made.pipeline)
    assert check_buildable(applied.spec) == []
    assert [s.scriptFrom.configMapKeyRef.key for s in applied.spec.steps if s.scriptFrom] == [
        "train.py", "inference.py"
    ]
    job = build_step_rayjob(pipeline="train-inference", namespace="ns", uid="u",
                            spec=applied.spec, index=0, cluster="ray")
    assert job["spec"]["scriptFrom"] == {
        "configMapKeyRef": {"name": "train-inference-scripts", "key": "train.py"}
    }
    assert "script" not in job["spec"]
    owner = owned_by({"apiVersion": "ray.kubeflow.org/v1", "kind": "RayPipeline",
                      "metadata": {"name": "train-inference", "uid": "u"}})
    assert owner["metadata"]["ownerReferences"][0]["uid"] == "u"


def test_two_script_files_of_one_name_get_two_keys(tmp_path: Path) -> None:
    from ray_operator.pipelines.in_cluster import cluster_manifests

    for step in ("a", "b"):
        (tmp_path / step).mkdir()
        (tmp_path / step / "main.py").write_text(f"print({step!r})\n")
    (tmp_path / "p.yaml").write_text(
        "apiVersion: ray.kubeflow.org/v1\nkind: RayPipeline\nmetadata: {name: p}\nspec:\n"
        "  cluster: ray\n  steps:\n  - {name: a, script: a/main.py}\n"
        "  - {name: b, script: b/main.py}\n  - {name: c, script: \"print(3)\\n\"}\n"
    )
    made = cluster_manifests(load_pipeline(tmp_path / "p.yaml"), tmp_path)
    assert made.scripts is not None
    assert made.scripts["data"] == {"main.py": "print('a')\n", "b.main.py": "print('b')\n"}
    assert made.pipeline["spec"]["steps"][2]["script"] == "print(3)\n"  # inline stays


def test_a_step_from_a_configmap_cannot_run_outside_the_cluster(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "apiVersion: ray.kubeflow.org/v1\nkind: RayPipeline\nmetadata: {name: p}\nspec:\n"
        "  cluster: ray\n  steps:\n"
        "  - {name: a, scriptFrom: {configMapKeyRef: {name: s, key: a.py}}}\n"
    )
    checked = CliRunner().invoke(app, ["validate", str(tmp_path / "p.yaml")])
    assert checked.exit_code == 0, checked.output  # a valid RayPipeline
    ran = CliRunner().invoke(app, ["run", str(tmp_path / "p.yaml"), "--address", "http://x:1"])
    assert ran.exit_code != 0
    assert "scriptFrom: ConfigMap 's' key 'a.py' is read in the cluster only" in ran.output
