from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ray_operator.api.pipeline import RayPipelineResource, load_pipeline, parse_pipeline
from ray_operator.api.pipeline_step import ENV_ADDRESS, ENV_INPUT, ENV_RUN_ID, ENV_STEP, StepRun
from ray_operator.api.ray import RaySpec
from ray_operator.cli.pipeline import app
from ray_operator.pipelines.asl import (
    CLUSTER_POLL_SECONDS,
    CLUSTER_READY_SECONDS,
    EKS_CALL,
    RUN_JOB_RULES,
    RUN_JOB_SYNC,
    TRANSIENT_ERRORS,
    AslOptions,
    build_state_machine,
    kubernetes_rules,
)
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
SMALL = {"worker": {"replicas": 2}}


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


# --- a small interpreter of the definitions this module writes --------------------------------
# Enough of the States Language to follow an execution: Pass, Task, Choice, Wait, Fail; Retry and
# Catch; JSONPath of the forms used here; the intrinsics used here. Tasks are answered by a fake.


class TaskFailedError(Exception):
    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(error)
        self.error, self.cause = error, cause


def _path(expr: str, data: Any, context: dict[str, Any]) -> Any:
    root, rest = (context, expr[2:]) if expr.startswith("$$") else (data, expr[1:])
    value = root
    for part in [p for p in rest.split(".") if p]:
        if not isinstance(value, dict) or part not in value:
            raise KeyError(expr)
        value = value[part]
    return value


def _split_args(text: str) -> list[str]:
    args, depth, quoted, start, i = [], 0, False, 0, 0
    while i < len(text):
        char = text[i]
        if quoted and char == "\\":
            i += 2
            continue
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        elif not quoted and depth == 0 and char == ",":
            args.append(text[start:i].strip())
            start = i + 1
        i += 1
    tail = text[start:].strip()
    return [*args, tail] if tail else args


def _evaluate(expr: str, data: Any, context: dict[str, Any]) -> Any:
    expr = expr.strip()
    if expr.startswith("'"):
        return re.sub(r"\\(.)", r"\1", expr[1:-1])
    if expr.startswith("$"):
        return _path(expr, data, context)
    if re.fullmatch(r"-?\d+", expr):
        return int(expr)
    name, _, rest = expr.partition("(")
    args = [_evaluate(a, data, context) for a in _split_args(rest[:-1])]
    if name == "States.Format":
        text, values = args[0], iter(args[1:])
        return re.sub(r"\{\}", lambda _: str(next(values)), text)
    if name == "States.UUID":
        return str(uuid.uuid4())
    if name == "States.StringSplit":
        return [part for part in re.split(f"[{re.escape(args[1])}]", args[0]) if part]
    if name == "States.ArrayGetItem":
        return args[0][args[1]]
    if name == "States.MathAdd":
        return args[0] + args[1]
    if name == "States.JsonToString":
        return json.dumps(args[0], separators=(",", ":"))
    raise AssertionError(f"intrinsic {name} is not simulated")


def _fill(template: Any, data: Any, context: dict[str, Any]) -> Any:
    if isinstance(template, dict):
        out = {}
        for key, value in template.items():
            if key.endswith(".$"):
                out[key[:-2]] = _evaluate(value, data, context)
            else:
                out[key] = _fill(value, data, context)
        return out
    if isinstance(template, list):
        return [_fill(item, data, context) for item in template]
    return template


def _put(data: Any, result_path: str | None, result: Any) -> Any:
    if result_path is None:
        return data
    if result_path == "$":
        return result
    data = json.loads(json.dumps(data))
    parts = result_path[2:].split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = result
    return data


def _matches(rule: dict[str, Any], data: Any, context: dict[str, Any]) -> bool:
    try:
        value = _path(rule["Variable"], data, context)
    except KeyError:
        if "IsPresent" in rule:
            return rule["IsPresent"] is False
        raise AssertionError(f"States.Runtime: {rule['Variable']} is missing") from None
    if "IsPresent" in rule:
        return rule["IsPresent"] is True
    if "StringEquals" in rule:
        return bool(value == rule["StringEquals"])
    if "NumericGreaterThanEquals" in rule:
        return bool(value >= rule["NumericGreaterThanEquals"])
    raise AssertionError(f"choice rule {rule} is not simulated")


Answer = Callable[[str, str, dict[str, Any]], Any]


def _run_task(name: str, state: dict[str, Any], parameters: dict[str, Any], answer: Answer) -> Any:
    """The Task's result, or the TaskFailedError left when its Retry rules are used up."""
    attempts: dict[int, int] = {}
    while True:
        try:
            return answer(name, state["Resource"], parameters)
        except TaskFailedError as failure:
            rules = state.get("Retry", [])
            retry = next(
                (i for i, r in enumerate(rules) if failure.error in r["ErrorEquals"]), None
            )
            if retry is None or attempts.get(retry, 0) >= rules[retry]["MaxAttempts"]:
                return failure
            attempts[retry] = attempts.get(retry, 0) + 1


def run_execution(
    definition: dict[str, Any], execution_input: dict[str, Any], answer: Answer
) -> dict[str, Any]:
    """Follow one execution; ``answer(state, resource, parameters)`` plays the services."""
    context = {
        "Execution": {
            "Id": "arn:exec",
            "Name": "exec-1",
            "Input": execution_input,
            "StartTime": "2026-01-01T00:00:00Z",
        }
    }
    data: Any = execution_input
    name = definition["StartAt"]
    visited: list[str] = []
    waited = 0
    for _ in range(2000):
        visited.append(name)
        state = definition["States"][name]
        kind = state["Type"]
        if kind == "Fail":
            return {
                "status": "FAILED",
                "state": name,
                "visited": visited,
                "waited": waited,
                "error": _path(state["ErrorPath"], data, context),
                "cause": _path(state["CausePath"], data, context),
            }
        if kind == "Choice":
            name = next(
                (r["Next"] for r in state["Choices"] if _matches(r, data, context)),
                state["Default"],
            )
            continue
        if kind == "Wait":
            waited += state["Seconds"]
        elif kind == "Pass":
            result = _fill(state.get("Parameters", {}), data, context)
            data = _put(data, state.get("ResultPath", "$"), result)
        elif kind == "Task":
            parameters = _fill(state["Parameters"], data, context)
            outcome = _run_task(name, state, parameters, answer)
            if isinstance(outcome, TaskFailedError):
                catch = next(
                    (
                        c
                        for c in state.get("Catch", [])
                        if {outcome.error, "States.ALL"} & set(c["ErrorEquals"])
                    ),
                    None,
                )
                if catch is None:
                    return {
                        "status": "FAILED",
                        "state": name,
                        "visited": visited,
                        "waited": waited,
                        "error": outcome.error,
                        "cause": outcome.cause,
                    }
                data = _put(
                    data, catch["ResultPath"], {"Error": outcome.error, "Cause": outcome.cause}
                )
                name = catch["Next"]
                continue
            data = _put(data, state.get("ResultPath", "$"), outcome)
        if state.get("End"):
            return {"status": "SUCCEEDED", "visited": visited, "waited": waited}
        name = state["Next"]
    raise AssertionError(f"no end after 2000 transitions: {visited[-10:]}")


class FakeCluster:
    """The Kubernetes API as the state machine sees it: Rays that become healthy, Jobs that run."""

    def __init__(self, healthy_after: int | None = 2, failing_step: str | None = None) -> None:
        self.healthy_after = healthy_after
        self.failing_step = failing_step
        self.rays: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []  # (method or "job", ray name or step)
        self.jobs: list[dict[str, Any]] = []
        self.reads = 0
        self.refuse: dict[str, str] = {}  # method -> error

    def __call__(self, state: str, resource: str, parameters: dict[str, Any]) -> Any:
        if resource == RUN_JOB_SYNC:
            job = parameters["Job"]
            step = job["metadata"]["labels"]["ray.kubeflow.org/step"]
            self.calls.append(("job", step))
            self.jobs.append(job)
            if step == self.failing_step:
                raise TaskFailedError("States.TaskFailed", f"step {step}: FAILED")
            return {"logs": {}}
        assert resource == EKS_CALL, resource
        method, path = parameters["Method"], parameters["Path"]
        assert path.startswith("/apis/ray.kubeflow.org/v1/namespaces/ray/rays"), path
        if method in self.refuse:
            self.calls.append((method, "refused"))
            raise TaskFailedError(self.refuse[method], f"{method} {path}: refused")
        if method == "POST":
            body = parameters["RequestBody"]
            self.rays[body["metadata"]["name"]] = body
            self.calls.append(("POST", body["metadata"]["name"]))
            return {"StatusCode": 201, "ResponseBody": body}
        name = path.rsplit("/", 1)[1]
        self.calls.append((method, name))
        if name not in self.rays:
            raise TaskFailedError("EKS.404", f"rays {name} not found")
        if method == "DELETE":
            del self.rays[name]
            return {"StatusCode": 200, "ResponseBody": {}}
        self.reads += 1
        ray = dict(self.rays[name])
        if self.reads > 1:  # a new Ray has no status at all at first
            health = "True" if self.healthy_after and self.reads >= self.healthy_after else "False"
            ray["status"] = {"health": health}
        return {"StatusCode": 200, "ResponseBody": ray}


def per_execution(**options: Any) -> AslOptions:
    return AslOptions(**{**FULL.__dict__, "ray_cluster": RaySpec.model_validate(SMALL), **options})


def example(options: AslOptions, **spec: Any) -> dict[str, Any]:
    pipeline = load_pipeline(EXAMPLE)
    if spec:
        pipeline = pipeline.model_copy(update={"spec": pipeline.spec.model_copy(update=spec)})
    return build_state_machine(pipeline, options, base_dir=EXAMPLE.parent)


def export_volumes(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in pod.get("volumes", []) if "persistentVolumeClaim" in v]


# --- tests --------------------------------------------------------------------------------------


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
        "name": ENV_ADDRESS,
        "value.$": "$.rayAddress",
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
    assert env[ENV_INPUT]["value.$"] == "States.JsonToString($$.Execution.Input)"
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


def test_steps_keep_retry_catch_timeout_and_input_on_a_cluster_of_their_own() -> None:
    """The per-execution cluster changes where the steps run, not how they are run."""
    existing = example(FULL)
    created = example(per_execution())
    for step in ("train", "inference"):
        before, after = existing["States"][step], created["States"][step]
        for key in ("Resource", "Retry", "TimeoutSeconds", "ResultPath"):
            assert after[key] == before[key], key
        assert after["Catch"][0]["ErrorEquals"] == ["States.ALL"]
        assert after["Catch"][0]["ResultPath"] == "$.error"
        assert env_of(job_of(after))[ENV_INPUT] == env_of(job_of(before))[ENV_INPUT]
    assert created["TimeoutSeconds"] == existing["TimeoutSeconds"]


def test_each_execution_creates_a_cluster_with_the_volume_runs_on_it_and_deletes_it() -> None:
    definition = example(per_execution(pvc_name="fsx-claim", ray_service_account="ray-runner"))
    fake = FakeCluster(healthy_after=3)
    execution_input = {"parameters": {"epochs": "2"}}
    result = run_execution(definition, execution_input, fake)
    assert result["status"] == "SUCCEEDED", result
    (name,) = {n for method, n in fake.calls if method == "POST"}
    assert fake.calls == [
        ("POST", name),
        ("GET", name),
        ("GET", name),
        ("GET", name),
        ("job", "train"),
        ("job", "inference"),
        ("DELETE", name),
    ]
    assert name.startswith("train-inference-") and len(name) <= 58
    assert result["waited"] == 2 * CLUSTER_POLL_SECONDS
    assert not fake.rays  # deleted
    # The Ray's pods, where training writes its checkpoints and inference reads them, have the
    # claim at the export path (its sub-path ray/export, as the original mounted it).
    posted = definition["States"]["Create the Ray cluster"]["Parameters"]["RequestBody"]
    assert posted["kind"] == "Ray" and posted["apiVersion"] == "ray.kubeflow.org/v1"
    for role in ("head", "worker"):
        pod = posted["spec"][role]["template"]["spec"]
        assert pod["serviceAccountName"] == "ray-runner"
        assert export_volumes(pod) == [
            {"name": "export", "persistentVolumeClaim": {"claimName": "fsx-claim"}}
        ]
        for container in pod["containers"]:
            assert {"name": "export", "mountPath": "/ray/export/", "subPath": "ray/export"} in (
                container["volumeMounts"]
            )
    assert posted["spec"]["worker"]["replicas"] == 2
    for job in fake.jobs:
        env = env_of(job)
        assert env[ENV_ADDRESS]["value"] == f"http://{name}-head.$(POD_NAMESPACE).svc:8265"
        assert json.loads(env[ENV_INPUT]["value"]) == execution_input  # nothing of the state
        assert StepRun.model_validate_json(env[ENV_STEP]["value"]).exportPath == "/ray/export/"
        assert "volumes" not in job["spec"]["template"]["spec"]  # the runner only submits


def test_without_a_pvc_nothing_is_mounted() -> None:
    definition = example(per_execution())
    posted = definition["States"]["Create the Ray cluster"]["Parameters"]["RequestBody"]
    # No volume and no service account to add: the spec goes as written, the operator's
    # defaults fill the pods.
    assert posted["spec"] == SMALL
    assert "persistentVolumeClaim" not in json.dumps(definition)
    with_account = example(per_execution(ray_service_account="sa"))
    body = with_account["States"]["Create the Ray cluster"]["Parameters"]["RequestBody"]
    assert "persistentVolumeClaim" not in json.dumps(body)
    assert body["spec"]["head"]["template"]["spec"]["serviceAccountName"] == "sa"


def test_a_failed_step_still_deletes_the_cluster_and_fails_with_its_cause() -> None:
    fake = FakeCluster(failing_step="train")
    result = run_execution(example(per_execution(pvc_name="fsx")), {}, fake)
    assert result["status"] == "FAILED"
    assert result["state"] == "train failed"
    assert result["error"] == "States.TaskFailed" and result["cause"] == "step train: FAILED"
    assert [c for c in fake.calls if c[0] == "job"] == [("job", "train")]  # inference not run
    assert fake.calls[-1][0] == "DELETE" and not fake.rays


def test_a_cluster_that_never_gets_healthy_fails_after_a_bounded_wait() -> None:
    fake = FakeCluster(healthy_after=None)
    result = run_execution(example(per_execution(pvc_name="fsx")), {}, fake)
    assert result["status"] == "FAILED"
    assert result["state"] == "Ray cluster failed"
    assert result["error"] == "RayClusterNotHealthy"
    polls = CLUSTER_READY_SECONDS // CLUSTER_POLL_SECONDS
    assert fake.reads == polls
    assert result["waited"] == (polls - 1) * CLUSTER_POLL_SECONDS
    assert result["waited"] <= CLUSTER_READY_SECONDS
    assert not [c for c in fake.calls if c[0] == "job"]
    assert fake.calls[-1][0] == "DELETE" and not fake.rays
    assert "kubectl describe ray" in result["cause"]


def test_a_refused_create_reports_its_own_error_though_the_cleanup_finds_nothing() -> None:
    fake = FakeCluster()
    fake.refuse["POST"] = "EKS.403"
    result = run_execution(example(per_execution()), {}, fake)
    assert result["status"] == "FAILED"
    assert result["error"] == "EKS.403"  # not the cleanup's 404
    assert [m for m, _ in fake.calls] == ["POST", "DELETE"]


def test_transient_api_errors_are_retried() -> None:
    fake = FakeCluster()
    calls = 0

    def flaky(state: str, resource: str, parameters: dict[str, Any]) -> Any:
        nonlocal calls
        if parameters.get("Method") == "GET" and calls < 2:
            calls += 1
            raise TaskFailedError("EKS.503", "busy")
        return fake(state, resource, parameters)

    assert run_execution(example(per_execution()), {}, flaky)["status"] == "SUCCEEDED"


def test_keep_cluster_leaves_it_running() -> None:
    fake = FakeCluster(failing_step="inference")
    definition = example(per_execution(), keepCluster=True)
    assert "DELETE" not in json.dumps(definition)
    result = run_execution(definition, {}, fake)
    assert result["state"] == "inference failed"
    assert len(fake.rays) == 1


def test_cluster_from_the_pipeline_and_namespace_from_the_input(tmp_path: Path) -> None:
    pipeline = five_steps(rayClusterSpec=SMALL, pvcName="claim", exportPath="/")
    definition = build_state_machine(pipeline, AslOptions(runner_image="img:1"))
    assert validate(definition, tmp_path).returncode == 0
    create = definition["States"]["Create the Ray cluster"]["Parameters"]
    assert create["Path.$"] == (
        "States.Format('/apis/ray.kubeflow.org/v1/namespaces/{}/rays', $.cluster.namespace)"
    )
    assert create["ClusterName.$"] == "$.cluster.name"
    # An export path of "/" is the claim's root: no sub-path.
    mounts = create["RequestBody"]["spec"]["worker"]["template"]["spec"]["containers"][0]
    assert {"name": "export", "mountPath": "/"} in mounts["volumeMounts"]


def test_validator_accepts_the_per_execution_definition(tmp_path: Path) -> None:
    definition = example(per_execution(pvc_name="fsx", ray_service_account="sa"))
    result = validate(definition, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rbac_rules_are_what_the_definition_calls() -> None:
    jobs = [dict(rule) for rule in RUN_JOB_RULES]
    assert kubernetes_rules(example(FULL)) == jobs
    assert kubernetes_rules(example(per_execution())) == [
        *jobs,
        {
            "apiGroups": ["ray.kubeflow.org"],
            "resources": ["rays"],
            "verbs": ["create", "delete", "get"],
        },
    ]
    assert kubernetes_rules(example(per_execution(), keepCluster=True))[-1]["verbs"] == [
        "create",
        "get",
    ]


def test_one_place_to_run() -> None:
    with pytest.raises(ValueError, match="one place for the steps to run"):
        build_state_machine(five_steps(rayClusterSpec=SMALL, cluster="ray"), FULL)
    with pytest.raises(ValueError, match="ray_cluster and ray_address"):
        per_execution(ray_address="http://x:8265")


def test_bad_options_name_the_value() -> None:
    with pytest.raises(ValueError, match="export_path='relative' is not accepted"):
        AslOptions(export_path="relative")
    with pytest.raises(ValueError, match="timeout_seconds=0 is not accepted"):
        AslOptions(timeout_seconds=0)
    with pytest.raises(ValueError, match="cluster_ready_seconds=1 is not accepted"):
        AslOptions(cluster_ready_seconds=1)


def test_job_and_cluster_names_fit_kubernetes_limits() -> None:
    long = parse_pipeline(
        {
            "metadata": {"name": "a-very-long-pipeline-name-that-goes-on-and-on-forever-and-ever"},
            "spec": {"steps": [{"name": "x" * 30, "script": "a\nb"}], "rayClusterSpec": SMALL},
        }
    )
    definition = build_state_machine(long, FULL)
    expr = job_of(definition["States"]["x" * 30])["metadata"]["name.$"]
    prefix = expr.split("'")[1].replace("{}", "")
    assert len(prefix) + 8 <= 63
    fake = FakeCluster(healthy_after=1)
    assert run_execution(definition, {}, fake)["status"] == "SUCCEEDED"
    (name,) = {n for method, n in fake.calls if method == "POST"}
    assert len(name) <= 58 and len(f"{name}-head") <= 63


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


def test_gpu_recipe_runs_on_its_cluster_which_mounts_the_pvc_itself(tmp_path: Path) -> None:
    """gpu-ray (ray-cluster.yaml) mounts the claim; the runner pods get only the path."""
    gpu = EXAMPLE.parents[1] / "gptj-deepspeed" / "pipeline.yaml"
    definition = build_state_machine(load_pipeline(gpu), FULL, base_dir=gpu.parent)
    assert validate(definition, tmp_path).returncode == 0
    assert EKS_CALL not in json.dumps(definition)  # an existing cluster: nothing created
    job = job_of(definition["States"]["finetune"])
    assert "volumes" not in job["spec"]["template"]["spec"]
    assert env_of(job)[ENV_ADDRESS]["value"] == "http://gpu-ray-head.$(POD_NAMESPACE).svc:8265"
    assert StepRun.model_validate_json(env_of(job)[ENV_STEP]["value"]).exportPath == "/ray/export/"
