"""The pipeline as an AWS Step Functions state machine (Amazon States Language).

Each step becomes one ``arn:aws:states:::eks:runJob.sync`` Task that runs a Kubernetes
``batch/v1`` Job with this project's runner image; the Job's container runs
``ray-operator pipeline run-step``, which submits the step to the Ray cluster, follows it to the
end and exits 0 only when it SUCCEEDED (so the Job, and the Task, fail with the step).

Where the steps run:

- with a cluster spec (``AslOptions.ray_cluster``, else the pipeline's ``rayClusterSpec``), every
  execution creates its own ``Ray`` first (``eks:call``), polls it until its ``status.health`` is
  "True" (a bounded loop), runs the steps on it and deletes it, on success and on every failure
  path, unless the pipeline sets ``keepCluster``. With ``pvcName`` the claim is mounted into that
  cluster's head and worker pods, where the steps' Ray jobs run and write;
- otherwise on an existing cluster: ``AslOptions.ray_address``, else the pipeline's ``address``,
  else its ``cluster`` (``http://<cluster>-head.<namespace>.svc:8265``), else ``$.rayAddress``.
  Such a cluster mounts any volume itself (its own manifest); the runner pods mount nothing.

What comes from where: the EKS cluster name, endpoint, certificate and namespace come from
:class:`AslOptions`, or, for each one left ``None``, the execution input (``$.cluster.name``,
``$.cluster.endpoint``, ``$.cluster.certificateAuthority``, ``$.cluster.namespace``). The run id
of every step is the execution's name; the whole execution input reaches every step
(``RAY_PIPELINE_INPUT``), and its ``parameters`` map is added to each step's parameters.

The function is pure: no network, no clock, no environment.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ray_operator.api.constants import (
    API_VERSION,
    DEFAULT_RAY_IMAGE,
    GROUP,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    PORT_DASHBOARD,
)
from ray_operator.api.pipeline import RayPipelineResource
from ray_operator.api.pipeline_step import (
    ENV_ADDRESS,
    ENV_INPUT,
    ENV_RUN_ID,
    ENV_STEP,
    StepRun,
    step_runs,
)
from ray_operator.api.ray import RaySpec
from ray_operator.builders.defaults import CURRENT_REVISION, builtin_templates

RUN_JOB_SYNC: Final = "arn:aws:states:::eks:runJob.sync"
EKS_CALL: Final = "arn:aws:states:::eks:call"
# Errors of the EKS service integration worth retrying: the service side failing or being
# unavailable. A failed step is not among them: the Job's backoffLimit (the step's `retries`)
# reruns a failed step, and a Task retry would only repeat a definite failure.
TRANSIENT_ERRORS: Final = ("EKS.ServerException", "EKS.ServiceUnavailableException")
# eks:call reports a Kubernetes API answer as EKS.<HTTP status> (AWS documents EKS.401); the
# apiserver being busy or briefly unavailable is worth another try, a refusal is not.
CALL_TRANSIENT_ERRORS: Final = (*TRANSIENT_ERRORS, "EKS.429", "EKS.500", "EKS.503")
TRANSIENT_MAX_ATTEMPTS: Final = 3
# Time for pulling the runner image and scheduling the pod, beyond a step's own deadline.
STEP_GRACE_SECONDS: Final = 600
# The cause carried to the Fail state includes the end of the runner's log: keep it small.
LOG_TAIL_LINES: Final = "40"
JOB_TTL_SECONDS: Final = 86400
RUNNER_CONTAINER: Final = "runner"
EXPORT_VOLUME: Final = "export"
LABEL_PIPELINE: Final = f"{GROUP}/pipeline"
LABEL_STEP: Final = f"{GROUP}/step"
ANNOTATION_EXECUTION: Final = f"{GROUP}/execution"
ENV_NAMESPACE: Final = "POD_NAMESPACE"
ENV_STARTED: Final = "RAY_PIPELINE_STARTED"
K8S_NAME_MAX: Final = 63
JOB_SUFFIX_LEN: Final = 8  # the first group of a UUID: 8 hex characters
# A Ray's name gets "-head" for its Service, which must stay a 63-character DNS label.
RAY_NAME_MAX: Final = 58
# The per-execution cluster: how long it may take to become healthy (pulling a Ray image of a
# few GB onto a fresh node takes minutes), how often it is read meanwhile, each call's bound.
CLUSTER_READY_SECONDS: Final = 900
CLUSTER_POLL_SECONDS: Final = 15
CALL_TIMEOUT_SECONDS: Final = 60
# Where the state machine keeps the per-execution cluster in the state (the steps read the
# execution input from the context object, so this never reaches them).
STATE_KEY: Final = "rayCluster"
RAY_PLURAL: Final = "rays"
ERROR_NOT_HEALTHY: Final = "RayClusterNotHealthy"

# State names of the per-execution cluster.
NAME_CLUSTER: Final = "Name the Ray cluster"
CREATE_CLUSTER: Final = "Create the Ray cluster"
READ_CLUSTER: Final = "Read the Ray cluster"
CHECK_HEALTH: Final = "Is the Ray cluster healthy?"
COUNT_WAIT: Final = "Count the wait"
CHECK_WAITED: Final = "Waited too long?"
WAIT_CLUSTER: Final = "Wait for the Ray cluster"
NOT_HEALTHY: Final = "Ray cluster not healthy"
CLUSTER_FAILED: Final = "Ray cluster failed"
DELETE_CLUSTER: Final = "Delete the Ray cluster"

#: What ``eks:runJob.sync`` does in the namespace: create the Job, follow it and its pod, read the
#: pod's log (``LogOptions``), delete the Job when an execution is stopped. Nothing else.
RUN_JOB_RULES: Final[tuple[dict[str, Any], ...]] = (
    {
        "apiGroups": ["batch"],
        "resources": ["jobs"],
        "verbs": ["create", "delete", "get", "list", "watch"],
    },
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
)
_CALL_VERBS: Final = {
    "GET": "get",
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}
_CALL_PATH: Final = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)/namespaces/[^/]+/(?P<resource>[a-z0-9.-]+)"
)


@dataclass(frozen=True)
class AslOptions:
    """Where the state machine runs the steps; ``None`` means "from the execution input".

    ``ray_cluster`` makes every execution create its own Ray from that spec (it wins over the
    pipeline's ``cluster``, ``address`` and ``rayClusterSpec``); ``ray_image`` fills the head and
    worker templates that spec leaves out when they must carry the export volume or
    ``ray_service_account`` (the account the Ray pods, where the steps' code runs, use).
    """

    cluster_name: str | None = None
    endpoint: str | None = None
    certificate_authority: str | None = None
    namespace: str | None = None
    runner_image: str = "ray-operator:latest"
    service_account: str | None = None
    timeout_seconds: int | None = None
    pvc_name: str | None = None
    export_path: str | None = None
    ray_address: str | None = None
    ray_cluster: RaySpec | None = None
    ray_image: str = DEFAULT_RAY_IMAGE
    ray_service_account: str | None = None
    cluster_ready_seconds: int = CLUSTER_READY_SECONDS

    def __post_init__(self) -> None:
        if self.timeout_seconds is not None and self.timeout_seconds < 1:
            raise ValueError(
                f"timeout_seconds={self.timeout_seconds!r} is not accepted: give a positive number"
            )
        if self.export_path is not None and not self.export_path.startswith("/"):
            raise ValueError(
                f"export_path={self.export_path!r} is not accepted: "
                "give an absolute path starting with '/'"
            )
        if not self.runner_image:
            raise ValueError("runner_image='' is not accepted: give the runner's container image")
        if not self.ray_image:
            raise ValueError("ray_image='' is not accepted: give a Ray container image")
        if self.cluster_ready_seconds < CLUSTER_POLL_SECONDS:
            raise ValueError(
                f"cluster_ready_seconds={self.cluster_ready_seconds!r} is not accepted: give at"
                f" least {CLUSTER_POLL_SECONDS} (one poll)"
            )
        if self.ray_cluster is not None and self.ray_address is not None:
            raise ValueError(
                "ray_cluster and ray_address are both given: the steps run on one cluster"
            )


# Execution-input paths used when an option is not given.
INPUT_PATHS: Final = {
    "ClusterName": "$.cluster.name",
    "Endpoint": "$.cluster.endpoint",
    "CertificateAuthority": "$.cluster.certificateAuthority",
    "Namespace": "$.cluster.namespace",
}
INPUT_RAY_ADDRESS: Final = "$.rayAddress"
CLUSTER_NAME_PATH: Final = f"$.{STATE_KEY}.name"
POLLS_PATH: Final = f"$.{STATE_KEY}.polls"
OBSERVED_PATH: Final = f"$.{STATE_KEY}.observed"
HEALTH_PATH: Final = f"{OBSERVED_PATH}.ResponseBody.status.health"


def _value_or_path(key: str, value: str | None, path: str) -> dict[str, str]:
    return {key: value} if value is not None else {f"{key}.$": path}


def _connection(options: AslOptions) -> dict[str, Any]:
    """The EKS cluster every Task talks to: from the options, else from the execution input."""
    parameters: dict[str, Any] = _value_or_path(
        "ClusterName", options.cluster_name, INPUT_PATHS["ClusterName"]
    )
    parameters |= _value_or_path(
        "CertificateAuthority", options.certificate_authority, INPUT_PATHS["CertificateAuthority"]
    )
    parameters |= _value_or_path("Endpoint", options.endpoint, INPUT_PATHS["Endpoint"])
    return parameters


def _retry(errors: tuple[str, ...]) -> list[dict[str, Any]]:
    return [
        {
            "ErrorEquals": list(errors),
            "IntervalSeconds": 10,
            "MaxAttempts": TRANSIENT_MAX_ATTEMPTS,
            "BackoffRate": 2.0,
            "JitterStrategy": "FULL",
        }
    ]


def job_name_prefix(pipeline: str, step: str) -> str:
    """``<pipeline>-<step>-`` cut so that the prefix plus the random suffix fits 63 characters."""
    room = K8S_NAME_MAX - JOB_SUFFIX_LEN - 1 - len(step) - 1
    head = pipeline[: max(room, 1)].rstrip("-")
    return f"{head}-{step}-"


def ray_name_prefix(pipeline: str) -> str:
    """``<pipeline>-`` cut so that it and the random suffix fit :data:`RAY_NAME_MAX`.

    The head Service is named after the Ray, and a Service name starts with a letter.
    """
    head = pipeline if pipeline[:1].isalpha() else f"ray-{pipeline}"
    return head[: RAY_NAME_MAX - JOB_SUFFIX_LEN - 1].rstrip("-") + "-"


def _random_name(prefix: str) -> str:
    """An intrinsic giving ``<prefix><8 hex>``: unique per evaluation (a retry gets a new one)."""
    return (
        f"States.Format('{prefix}{{}}', "
        "States.ArrayGetItem(States.StringSplit(States.UUID(), '-'), 0))"
    )


def _export_mount(export_path: str) -> dict[str, Any]:
    """The claim's ``<export path without the leading />`` at ``export_path``.

    As the original orchestrator did: one claim (an FSx for Lustre file system, say) can serve
    several export paths, each in a directory of its own.
    """
    mount: dict[str, Any] = {"name": EXPORT_VOLUME, "mountPath": export_path}
    sub_path = export_path.strip("/")
    if sub_path:
        mount["subPath"] = sub_path
    return mount


def _with_export(template: dict[str, Any], pvc_name: str, export_path: str) -> None:
    """Mount the claim in every container of ``template`` (replacing a volume of that name)."""
    pod = template.setdefault("spec", {})
    volumes = [v for v in pod.get("volumes") or [] if v.get("name") != EXPORT_VOLUME]
    volumes.append({"name": EXPORT_VOLUME, "persistentVolumeClaim": {"claimName": pvc_name}})
    pod["volumes"] = volumes
    for container in pod.get("containers") or []:
        mounts = [m for m in container.get("volumeMounts") or [] if m.get("name") != EXPORT_VOLUME]
        mounts.append(_export_mount(export_path))
        container["volumeMounts"] = mounts


def build_ray(
    pipeline: str,
    spec: RaySpec,
    *,
    pvc_name: str | None,
    export_path: str,
    ray_image: str,
    service_account: str | None,
) -> dict[str, Any]:
    """The ``Ray`` an execution creates (its name filled in by Step Functions).

    A role without a template gets the operator's current default one when the pods need the
    volume or the service account; without either, the spec goes as written and the operator
    applies its own defaults.
    """
    ray_spec: dict[str, Any] = spec.model_dump(exclude_none=True, by_alias=True)
    if pvc_name or service_account:
        defaults = builtin_templates(CURRENT_REVISION, ray_image)
        for role, default in defaults.items():
            replica = ray_spec.setdefault(role, {})
            template = copy.deepcopy(replica.get("template") or default)
            if service_account:
                template.setdefault("spec", {}).setdefault("serviceAccountName", service_account)
            if pvc_name:
                _with_export(template, pvc_name, export_path)
            replica["template"] = template
    return {
        "apiVersion": API_VERSION,
        "kind": "Ray",
        "metadata": {
            "name.$": CLUSTER_NAME_PATH,
            "labels": {LABEL_PIPELINE: pipeline, LABEL_MANAGED_BY: MANAGED_BY},
            "annotations": {f"{ANNOTATION_EXECUTION}.$": "$$.Execution.Id"},
        },
        "spec": ray_spec,
    }


def build_job(
    run: StepRun,
    *,
    options: AslOptions,
    retries: int,
    ray_address: str | None,
    ray_cluster: str | None,
    created_cluster: bool,
    deadline_seconds: int,
) -> dict[str, Any]:
    """The ``batch/v1`` Job that runs one step (with ``.$`` keys Step Functions fills in)."""
    labels = {LABEL_PIPELINE: run.pipeline, LABEL_STEP: run.step, LABEL_MANAGED_BY: MANAGED_BY}
    env: list[dict[str, Any]] = [
        {"name": ENV_NAMESPACE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": ENV_RUN_ID, "value.$": "$$.Execution.Name"},
        {"name": ENV_STARTED, "value.$": "$$.Execution.StartTime"},
        # The execution's own input, whatever the state machine keeps beside it in the state.
        {"name": ENV_INPUT, "value.$": "States.JsonToString($$.Execution.Input)"},
        {"name": ENV_STEP, "value": run.model_dump_json(exclude_none=True)},
    ]
    # $(POD_NAMESPACE) is expanded by Kubernetes from the variable defined above.
    head = f"-head.$({ENV_NAMESPACE}).svc:{PORT_DASHBOARD}"
    if created_cluster:
        address = f"States.Format('http://{{}}{head}', {CLUSTER_NAME_PATH})"
        env.append({"name": ENV_ADDRESS, "value.$": address})
    elif ray_address is not None:
        env.append({"name": ENV_ADDRESS, "value": ray_address})
    elif ray_cluster is not None:
        env.append({"name": ENV_ADDRESS, "value": f"http://{ray_cluster}{head}"})
    else:
        env.append({"name": ENV_ADDRESS, "value.$": INPUT_RAY_ADDRESS})
    container: dict[str, Any] = {
        "name": RUNNER_CONTAINER,
        "image": options.runner_image,
        "command": ["ray-operator", "pipeline", "run-step"],
        "env": env,
    }
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if options.service_account:
        pod_spec["serviceAccountName"] = options.service_account
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name.$": _random_name(job_name_prefix(run.pipeline, run.step)),
            "labels": labels,
            "annotations": {f"{ANNOTATION_EXECUTION}.$": "$$.Execution.Id"},
        },
        "spec": {
            "backoffLimit": retries,
            "activeDeadlineSeconds": deadline_seconds,
            "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def _rays_path(options: AslOptions, *, named: bool) -> dict[str, str]:
    """``Path`` of the namespace's rays (``named``: of this execution's Ray)."""
    base = f"/apis/{API_VERSION}/namespaces/{{}}/{RAY_PLURAL}"
    args = [] if options.namespace is not None else [INPUT_PATHS["Namespace"]]
    if options.namespace is not None:
        base = base.replace("{}", options.namespace)
    if named:
        base += "/{}"
        args.append(CLUSTER_NAME_PATH)
    if not args:
        return {"Path": base}
    return {"Path.$": f"States.Format('{base}', {', '.join(args)})"}


def _call(options: AslOptions, method: str, *, named: bool) -> dict[str, Any]:
    return {
        **_connection(options),
        "Method": method,
        **_rays_path(options, named=named),
    }


def _cluster_states(
    pipeline: str, ray: dict[str, Any], options: AslOptions, first_step: str
) -> dict[str, Any]:
    """Name, create and wait for the execution's Ray; then the first step."""
    polls = max(1, options.cluster_ready_seconds // CLUSTER_POLL_SECONDS)
    cleanup = cleanup_state_name(CLUSTER_FAILED)

    def catch() -> list[dict[str, Any]]:
        return [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": cleanup}]

    return {
        NAME_CLUSTER: {
            "Type": "Pass",
            "Comment": "A name of its own for this execution's Ray (a UUID's first group).",
            "Parameters": {
                "name.$": _random_name(ray_name_prefix(pipeline)),
                "polls": {"count": 0},
            },
            "ResultPath": f"$.{STATE_KEY}",
            "Next": CREATE_CLUSTER,
        },
        CREATE_CLUSTER: {
            "Type": "Task",
            "Resource": EKS_CALL,
            "Parameters": {**_call(options, "POST", named=False), "RequestBody": ray},
            "ResultPath": None,
            "TimeoutSeconds": CALL_TIMEOUT_SECONDS,
            "Retry": _retry(CALL_TRANSIENT_ERRORS),
            "Catch": catch(),
            "Next": READ_CLUSTER,
        },
        READ_CLUSTER: {
            "Type": "Task",
            "Resource": EKS_CALL,
            "Parameters": _call(options, "GET", named=True),
            "ResultPath": OBSERVED_PATH,
            "TimeoutSeconds": CALL_TIMEOUT_SECONDS,
            "Retry": _retry(CALL_TRANSIENT_ERRORS),
            "Catch": catch(),
            "Next": CHECK_HEALTH,
        },
        CHECK_HEALTH: {
            "Type": "Choice",
            # Rules are tried in order: the comparison only runs once the field exists (a new
            # Ray has no status yet, and comparing a missing field is a runtime error).
            "Choices": [
                {"Variable": HEALTH_PATH, "IsPresent": False, "Next": COUNT_WAIT},
                {"Variable": HEALTH_PATH, "StringEquals": "True", "Next": first_step},
            ],
            "Default": COUNT_WAIT,
        },
        COUNT_WAIT: {
            "Type": "Pass",
            "Parameters": {"count.$": f"States.MathAdd({POLLS_PATH}.count, 1)"},
            "ResultPath": POLLS_PATH,
            "Next": CHECK_WAITED,
        },
        CHECK_WAITED: {
            "Type": "Choice",
            "Choices": [
                {
                    "Variable": f"{POLLS_PATH}.count",
                    "NumericGreaterThanEquals": polls,
                    "Next": NOT_HEALTHY,
                }
            ],
            "Default": WAIT_CLUSTER,
        },
        WAIT_CLUSTER: {
            "Type": "Wait",
            "Seconds": CLUSTER_POLL_SECONDS,
            "Next": READ_CLUSTER,
        },
        NOT_HEALTHY: {
            "Type": "Pass",
            "Parameters": {
                "Error": ERROR_NOT_HEALTHY,
                "Cause.$": (
                    "States.Format('Ray {} was not healthy after {} polls "
                    f"{CLUSTER_POLL_SECONDS} seconds apart: see kubectl describe ray {{}}', "
                    f"{CLUSTER_NAME_PATH}, {POLLS_PATH}.count, {CLUSTER_NAME_PATH})"
                ),
            },
            "ResultPath": "$.error",
            "Next": cleanup,
        },
    }


def _delete_state(options: AslOptions, after_failure: str | None) -> dict[str, Any]:
    """Delete the execution's Ray: at the end (``None``), or before the Fail state named."""
    state: dict[str, Any] = {
        "Type": "Task",
        "Resource": EKS_CALL,
        "Parameters": _call(options, "DELETE", named=True),
        "ResultPath": None,
        "TimeoutSeconds": CALL_TIMEOUT_SECONDS,
        "Retry": _retry(CALL_TRANSIENT_ERRORS),
    }
    if after_failure is None:
        state["Comment"] = "The steps succeeded: the cluster goes."
        state["End"] = True
    else:
        state["Comment"] = f"Before {after_failure!r}: the cluster goes, whatever failed."
        # A failed delete (say, the Ray was never created) must not hide the first error.
        state["Catch"] = [
            {"ErrorEquals": ["States.ALL"], "ResultPath": "$.cleanupError", "Next": after_failure}
        ]
        state["Next"] = after_failure
    return state


def _fail_state(comment: str) -> dict[str, Any]:
    return {
        "Type": "Fail",
        "Comment": comment,
        "ErrorPath": "$.error.Error",
        "CausePath": "$.error.Cause",
    }


def cluster_spec(pipeline: RayPipelineResource, options: AslOptions) -> RaySpec | None:
    """The spec of the Ray each execution creates, or None (the steps run on an existing one)."""
    if options.ray_cluster is not None:
        return options.ray_cluster
    spec = pipeline.spec
    if spec.rayClusterSpec is not None and (spec.cluster or spec.address or options.ray_address):
        raise ValueError(
            "the pipeline gives rayClusterSpec and also cluster or address (or ray_address is"
            " set): give one place for the steps to run"
        )
    return spec.rayClusterSpec


def build_state_machine(
    pipeline: RayPipelineResource, options: AslOptions, base_dir: Path | None = None
) -> dict[str, Any]:
    """The Step Functions definition of ``pipeline`` (scripts read relative to ``base_dir``)."""
    spec = pipeline.spec
    timeout = options.timeout_seconds or spec.timeout_seconds
    pvc_name = options.pvc_name if options.pvc_name is not None else spec.pvcName
    pvc_name = pvc_name or None
    export_path = options.export_path or spec.exportPath
    runs = step_runs(pipeline.name, spec, base_dir)
    ray_spec = cluster_spec(pipeline, options)
    creates = ray_spec is not None
    cleans_up = creates and not spec.keepCluster
    ray_address = None if creates else options.ray_address or spec.address
    states: dict[str, Any] = {}
    if ray_spec is not None:
        ray = build_ray(
            pipeline.name,
            ray_spec,
            pvc_name=pvc_name,
            export_path=export_path,
            ray_image=options.ray_image,
            service_account=options.ray_service_account,
        )
        states |= _cluster_states(pipeline.name, ray, options, spec.steps[0].name)
        if cleans_up:
            states[cleanup_state_name(CLUSTER_FAILED)] = _delete_state(options, CLUSTER_FAILED)
        else:
            states[NOT_HEALTHY]["Next"] = CLUSTER_FAILED
            for name in (CREATE_CLUSTER, READ_CLUSTER):
                states[name]["Catch"][0]["Next"] = CLUSTER_FAILED
        states[CLUSTER_FAILED] = _fail_state("The Ray cluster could not be made ready.")
    for index, (step, run) in enumerate(zip(spec.steps, runs, strict=True)):
        run = run.model_copy(update={"exportPath": export_path, "pipelineTimeoutSeconds": timeout})
        step_timeout = (
            min(step.activeDeadlineSeconds + STEP_GRACE_SECONDS, timeout)
            if step.activeDeadlineSeconds
            else timeout
        )
        job = build_job(
            run,
            options=options,
            retries=step.retries,
            ray_address=ray_address,
            ray_cluster=None if ray_address or creates else spec.cluster,
            created_cluster=creates,
            deadline_seconds=step_timeout,
        )
        parameters: dict[str, Any] = {
            **_connection(options),
            **_value_or_path("Namespace", options.namespace, INPUT_PATHS["Namespace"]),
        }
        parameters["LogOptions"] = {
            "RetrieveLogs": True,
            "RawLogs": True,
            "LogParameters": {"tailLines": [LOG_TAIL_LINES]},
        }
        parameters["Job"] = job
        failed = fail_state_name(step.name)
        after_failure = cleanup_state_name(failed) if cleans_up else failed
        task: dict[str, Any] = {
            "Type": "Task",
            "Comment": f"Step {index + 1} of {len(spec.steps)}: {step.name}",
            "Resource": RUN_JOB_SYNC,
            "Parameters": parameters,
            # Keep the state as it was; outputs go to the export path.
            "ResultPath": None,
            "TimeoutSeconds": step_timeout,
            "Retry": _retry(TRANSIENT_ERRORS),
            "Catch": [
                {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": after_failure}
            ],
        }
        if index + 1 < len(spec.steps):
            task["Next"] = spec.steps[index + 1].name
        elif cleans_up:
            task["Next"] = DELETE_CLUSTER
        else:
            task["End"] = True
        states[step.name] = task
        if cleans_up:
            states[after_failure] = _delete_state(options, failed)
        states[failed] = _fail_state(f"Step {step.name} failed; later steps were not run.")
    if cleans_up:
        states[DELETE_CLUSTER] = _delete_state(options, None)
    return {
        "Comment": f"Ray pipeline {pipeline.name}: {' -> '.join(s.name for s in spec.steps)}",
        "StartAt": NAME_CLUSTER if creates else spec.steps[0].name,
        "TimeoutSeconds": timeout,
        "States": states,
    }


def fail_state_name(step: str) -> str:
    """The Fail state a step's Catch leads to."""
    return f"{step} failed"


def cleanup_state_name(fail_state: str) -> str:
    """The Task that deletes the execution's Ray before the Fail state ``fail_state``."""
    return f"{DELETE_CLUSTER} ({fail_state})"


def kubernetes_rules(definition: dict[str, Any]) -> list[dict[str, Any]]:
    """The namespaced RBAC rules the definition's Tasks need: what it calls, nothing more.

    ``eks:runJob.sync`` needs :data:`RUN_JOB_RULES`; each ``eks:call`` needs its HTTP method's
    verb on the resource its path names.
    """
    rules: list[dict[str, Any]] = []
    calls: dict[tuple[str, str], set[str]] = {}
    for state in definition["States"].values():
        resource = state.get("Resource")
        if resource == RUN_JOB_SYNC and not rules:
            rules = [copy.deepcopy(rule) for rule in RUN_JOB_RULES]
        elif resource == EKS_CALL:
            parameters = state["Parameters"]
            path = parameters.get("Path") or parameters["Path.$"].split("'")[1]
            match = _CALL_PATH.match(path)
            if match is None:
                raise ValueError(f"eks:call path {path!r} names no namespaced resource")
            key = (match["group"] or "", match["resource"])
            calls.setdefault(key, set()).add(_CALL_VERBS[parameters["Method"]])
    for (group, resource), verbs in sorted(calls.items()):
        rules.append({"apiGroups": [group], "resources": [resource], "verbs": sorted(verbs)})
    return rules


def to_json(definition: dict[str, Any]) -> str:
    """The definition as the JSON Step Functions takes (stable key order for diffs)."""
    return json.dumps(definition, indent=2)
