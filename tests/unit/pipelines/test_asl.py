from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ray_operator.api.pipeline import RayPipelineResource, load_pipeline, parse_pipeline
from ray_operator.cli.pipeline import app
from ray_operator.pipelines.asl import (
    RUN_JOB_SYNC,
    TRANSIENT_ERRORS,
    AslOptions,
    build_state_machine,
)
from ray_operator.pipelines.step import ENV_ADDRESS, ENV_INPUT, ENV_RUN_ID, ENV_STEP, StepRun
from tests.unit.pipelines.asl_validator import validate

EXAMPLE = Path(__file__).parents[3] / "examples" / "pipelines" / "train-inference" / "pipeline.yaml"
FULL = AslOptions(
    cluster_name="eks-1",
    endpoint="https://abc.eks.amazonaws.com",
    certificate_authority="Q0E=",
    namespace="ray",
    runner_image="example.com/ray-operator:1.0",
    service_account="ray-runner",
)


def five_steps(**spec: Any) -> RayPipelineResource:
    steps = [
        {"name": f"s{i}", "script": f"import sys\nprint({i})\n", "retries": i % 3}
        for i in range(1, 6)
    ]
    return parse_pipeline({"metadata": {"name": "five"}, "spec": {"steps": steps, **spec}})


def job_of(state: dict[str, Any]) -> dict[str, Any]:
    job: dict[str, Any] = state["Parameters"]["Job"]
    return job


def env_of(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item for item in container["env"]}


def test_example_definition_passes_asl_validator(tmp_path: Path) -> None:
    definition = build_state_machine(load_pipeline(EXAMPLE), FULL, base_dir=EXAMPLE.parent)
    result = validate(definition, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_five_step_definition_passes_asl_validator_from_execution_input(tmp_path: Path) -> None:
    definition = build_state_machine(five_steps(), AslOptions(runner_image="img:1"))
    result = validate(definition, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # Chained in order, the last one ends the execution, each catches into its own Fail state.
    tasks = [name for name, s in definition["States"].items() if s["Type"] == "Task"]
    assert tasks == ["s1", "s2", "s3", "s4", "s5"]
    assert definition["StartAt"] == "s1"
    for first, second in zip(tasks, tasks[1:], strict=False):
        assert definition["States"][first]["Next"] == second
    assert definition["States"]["s5"]["End"] is True
    params = definition["States"]["s1"]["Parameters"]
    assert params["ClusterName.$"] == "$.cluster.name"
    assert params["Endpoint.$"] == "$.cluster.endpoint"
    assert params["CertificateAuthority.$"] == "$.cluster.certificateAuthority"
    assert params["Namespace.$"] == "$.cluster.namespace"
    assert "ClusterName" not in params
    # No cluster and no address in the pipeline: the Ray address comes from the input too.
    assert env_of(job_of(definition["States"]["s1"]))[ENV_ADDRESS] == {
        "name": ENV_ADDRESS, "value.$": "$.rayAddress"
    }


def test_validator_rejects_a_broken_definition(tmp_path: Path) -> None:
    # Guard that the validator really validates: a transition to a missing state fails it.
    definition = build_state_machine(five_steps(), FULL)
    definition["States"]["s2"]["Next"] = "nowhere"
    assert validate(definition, tmp_path).returncode != 0


def test_tasks_run_jobs_with_correct_bodies() -> None:
    definition = build_state_machine(load_pipeline(EXAMPLE), FULL, base_dir=EXAMPLE.parent)
    train = definition["States"]["train"]
    assert train["Resource"] == RUN_JOB_SYNC == "arn:aws:states:::eks:runJob.sync"
    params = train["Parameters"]
    assert params["ClusterName"] == "eks-1"
    assert params["Endpoint"] == "https://abc.eks.amazonaws.com"
    assert params["CertificateAuthority"] == "Q0E="
    assert params["Namespace"] == "ray"
    job = job_of(train)
    assert job["apiVersion"] == "batch/v1"
    assert job["kind"] == "Job"
    assert "apiversion" not in json.dumps(job)  # the original's misspelling
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] == 1  # train has retries: 1
    assert job_of(definition["States"]["inference"])["spec"]["backoffLimit"] == 0
    assert pod["serviceAccountName"] == "ray-runner"
    container = pod["containers"][0]
    assert container["image"] == "example.com/ray-operator:1.0"
    assert container["command"] == ["ray-operator", "pipeline", "run-step"]
    # No PVC in the example: no volume, no mount.
    assert "volumes" not in pod
    assert "volumeMounts" not in container
    # Unique Job names per execution (a retried Task must not collide with the first Job).
    assert job["metadata"]["name.$"].startswith("States.Format('train-inference-train-{}'")
    env = env_of(job)
    assert env[ENV_RUN_ID]["value.$"] == "$$.Execution.Name"
    assert env[ENV_INPUT]["value.$"] == "States.JsonToString($)"
    assert env[ENV_ADDRESS]["value"] == "http://ray-head.$(POD_NAMESPACE).svc:8265"
    step = StepRun.model_validate_json(env[ENV_STEP]["value"])
    assert step.step == "train" and step.previousStep is None
    assert "TorchTrainer" in (step.script or "")  # the local script travels in the Job
    assert step.parameters == {"epochs": "8", "num_workers": "2", "samples": "4000"}
    inference = StepRun.model_validate_json(
        env_of(job_of(definition["States"]["inference"]))[ENV_STEP]["value"]
    )
    assert inference.previousStep == "train"
    assert inference.all_parameters("exec-1")["input_dir"] == "/ray/export/exec-1/train"


def test_retry_catch_and_timeouts() -> None:
    definition = build_state_machine(load_pipeline(EXAMPLE), FULL, base_dir=EXAMPLE.parent)
    assert definition["TimeoutSeconds"] == 30 * 60
    train = definition["States"]["train"]
    assert train["Retry"][0]["ErrorEquals"] == list(TRANSIENT_ERRORS)
    assert "States.ALL" not in train["Retry"][0]["ErrorEquals"]
    assert train["Catch"] == [
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "train failed"}
    ]
    fail = definition["States"]["train failed"]
    assert fail["Type"] == "Fail"
    assert fail["CausePath"] == "$.error.Cause"
    assert fail["ErrorPath"] == "$.error.Error"
    # Step deadline 900 s plus the grace for the pod; never beyond the pipeline timeout.
    assert train["TimeoutSeconds"] == min(900 + 600, 1800)
    assert job_of(train)["spec"]["activeDeadlineSeconds"] == train["TimeoutSeconds"]
    assert train["ResultPath"] is None  # the execution input reaches every step


def test_pvc_mounted_at_export_path_only_when_given() -> None:
    definition = build_state_machine(
        five_steps(pvcName="fsx-claim", exportPath="/data/out/"), FULL
    )
    for name in ("s1", "s5"):
        pod = job_of(definition["States"][name])["spec"]["template"]["spec"]
        assert pod["volumes"] == [
            {"name": "export", "persistentVolumeClaim": {"claimName": "fsx-claim"}}
        ]
        assert pod["containers"][0]["volumeMounts"] == [
            {"name": "export", "mountPath": "/data/out/"}
        ]


def test_options_override_pipeline_settings() -> None:
    options = AslOptions(
        runner_image="img:2", timeout_seconds=120, pvc_name="other", export_path="/mnt/x/"
    )
    definition = build_state_machine(five_steps(pvcName="fsx-claim"), options)
    assert definition["TimeoutSeconds"] == 120
    job = job_of(definition["States"]["s1"])
    assert job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"] == {
        "claimName": "other"
    }
    assert StepRun.model_validate_json(env_of(job)[ENV_STEP]["value"]).exportPath == "/mnt/x/"


def test_bad_options_name_the_value() -> None:
    with pytest.raises(ValueError, match="export_path='relative' is not accepted"):
        AslOptions(export_path="relative")
    with pytest.raises(ValueError, match="timeout_seconds=0 is not accepted"):
        AslOptions(timeout_seconds=0)


def test_job_names_fit_kubernetes_limits() -> None:
    long = parse_pipeline(
        {
            "metadata": {"name": "a-very-long-pipeline-name-that-goes-on-and-on-forever"},
            "spec": {"steps": [{"name": "x" * 30, "script": "a\nb"}]},
        }
    )
    expr = job_of(build_state_machine(long, FULL)["States"]["x" * 30])["metadata"]["name.$"]
    prefix = expr.split("'")[1].replace("{}", "")
    assert len(prefix) + 8 <= 63


def test_cli_prints_only_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["export-asl", str(EXAMPLE), "--runner-image", "img:3", "--namespace", "ml"],
    )
    assert result.exit_code == 0, result.output
    definition = json.loads(result.stdout)
    params = definition["States"]["train"]["Parameters"]
    assert params["Namespace"] == "ml"
    assert params["ClusterName.$"] == "$.cluster.name"
    assert validate(definition, tmp_path).returncode == 0


def test_cli_reports_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("spec:\n  exportPath: ray/export\n  steps: [{name: a, script: x.py}]\n")
    result = CliRunner().invoke(app, ["export-asl", str(bad)])
    assert result.exit_code == 2
    assert "spec.exportPath" in result.stderr
    assert "'ray/export' is not accepted" in result.stderr
    assert result.stdout == ""


def test_gpu_recipe_exports_with_its_pvc(tmp_path: Path) -> None:
    gpu = EXAMPLE.parents[1] / "gptj-deepspeed" / "pipeline.yaml"
    definition = build_state_machine(load_pipeline(gpu), FULL, base_dir=gpu.parent)
    assert validate(definition, tmp_path).returncode == 0
    pod = job_of(definition["States"]["finetune"])["spec"]["template"]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "fsx-lustre-claim"
    assert pod["containers"][0]["volumeMounts"][0]["mountPath"] == "/ray/export/"
