"""The pipeline as an AWS Step Functions state machine (Amazon States Language).

Each step becomes one ``arn:aws:states:::eks:runJob.sync`` Task that runs a Kubernetes
``batch/v1`` Job with this project's runner image; the Job's container runs
``ray-operator pipeline run-step``, which submits the step to the Ray cluster, follows it to the
end and exits 0 only when it SUCCEEDED (so the Job, and the Task, fail with the step).

What comes from where:

- the EKS cluster name, endpoint, certificate and namespace: :class:`AslOptions`, or, for each one
  left ``None``, the execution input (``$.cluster.name``, ``$.cluster.endpoint``,
  ``$.cluster.certificateAuthority``, ``$.cluster.namespace``);
- the Ray job API: ``AslOptions.ray_address``, else the pipeline's ``address``, else its
  ``cluster`` (``http://<cluster>-head.<namespace>.svc:8265``), else ``$.rayAddress``;
- the run id of every step is the execution's name; the whole execution input reaches every
  step (``RAY_PIPELINE_INPUT``), and its ``parameters`` map is added to each step's parameters.

The function is pure: no network, no clock, no environment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ray_operator.api.constants import GROUP, LABEL_MANAGED_BY, MANAGED_BY, PORT_DASHBOARD
from ray_operator.api.pipeline import RayPipelineResource
from ray_operator.pipelines.step import (
    ENV_ADDRESS,
    ENV_INPUT,
    ENV_RUN_ID,
    ENV_STEP,
    StepRun,
    step_runs,
)

RUN_JOB_SYNC: Final = "arn:aws:states:::eks:runJob.sync"
# Errors of the EKS service integration worth retrying: the service side failing or being
# unavailable. A failed step is not among them: the Job's backoffLimit (the step's `retries`)
# reruns a failed step, and a Task retry would only repeat a definite failure.
TRANSIENT_ERRORS: Final = ("EKS.ServerException", "EKS.ServiceUnavailableException")
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


@dataclass(frozen=True)
class AslOptions:
    """Where the state machine runs the steps; ``None`` means "from the execution input"."""

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


# Execution-input paths used when an option is not given.
INPUT_PATHS: Final = {
    "ClusterName": "$.cluster.name",
    "Endpoint": "$.cluster.endpoint",
    "CertificateAuthority": "$.cluster.certificateAuthority",
    "Namespace": "$.cluster.namespace",
}
INPUT_RAY_ADDRESS: Final = "$.rayAddress"


def _value_or_path(key: str, value: str | None, path: str) -> dict[str, str]:
    return {key: value} if value is not None else {f"{key}.$": path}


def job_name_prefix(pipeline: str, step: str) -> str:
    """``<pipeline>-<step>-`` cut so that the prefix plus the random suffix fits 63 characters."""
    room = K8S_NAME_MAX - JOB_SUFFIX_LEN - 1 - len(step) - 1
    head = pipeline[: max(room, 1)].rstrip("-")
    return f"{head}-{step}-"


def build_job(
    run: StepRun,
    *,
    options: AslOptions,
    retries: int,
    pvc_name: str | None,
    export_path: str,
    ray_address: str | None,
    ray_cluster: str | None,
    deadline_seconds: int,
) -> dict[str, Any]:
    """The ``batch/v1`` Job that runs one step (with ``.$`` keys Step Functions fills in)."""
    labels = {LABEL_PIPELINE: run.pipeline, LABEL_STEP: run.step, LABEL_MANAGED_BY: MANAGED_BY}
    env: list[dict[str, Any]] = [
        {"name": ENV_NAMESPACE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": ENV_RUN_ID, "value.$": "$$.Execution.Name"},
        {"name": ENV_STARTED, "value.$": "$$.Execution.StartTime"},
        {"name": ENV_INPUT, "value.$": "States.JsonToString($)"},
        {"name": ENV_STEP, "value": run.model_dump_json(exclude_none=True)},
    ]
    if ray_address is not None:
        env.append({"name": ENV_ADDRESS, "value": ray_address})
    elif ray_cluster is not None:
        # $(POD_NAMESPACE) is expanded by Kubernetes from the variable defined above.
        address = f"http://{ray_cluster}-head.$({ENV_NAMESPACE}).svc:{PORT_DASHBOARD}"
        env.append({"name": ENV_ADDRESS, "value": address})
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
    if pvc_name:
        container["volumeMounts"] = [{"name": EXPORT_VOLUME, "mountPath": export_path}]
        pod_spec["volumes"] = [
            {"name": EXPORT_VOLUME, "persistentVolumeClaim": {"claimName": pvc_name}}
        ]
    prefix = job_name_prefix(run.pipeline, run.step)
    name_expr = (
        f"States.Format('{prefix}{{}}', "
        "States.ArrayGetItem(States.StringSplit(States.UUID(), '-'), 0))"
    )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name.$": name_expr,
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
    ray_address = options.ray_address or spec.address
    states: dict[str, Any] = {}
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
            pvc_name=pvc_name,
            export_path=export_path,
            ray_address=ray_address,
            ray_cluster=None if ray_address else spec.cluster,
            deadline_seconds=step_timeout,
        )
        parameters: dict[str, Any] = _value_or_path(
            "ClusterName", options.cluster_name, INPUT_PATHS["ClusterName"]
        )
        parameters |= _value_or_path(
            "CertificateAuthority",
            options.certificate_authority,
            INPUT_PATHS["CertificateAuthority"],
        )
        parameters |= _value_or_path("Endpoint", options.endpoint, INPUT_PATHS["Endpoint"])
        parameters |= _value_or_path("Namespace", options.namespace, INPUT_PATHS["Namespace"])
        parameters["LogOptions"] = {
            "RetrieveLogs": True,
            "RawLogs": True,
            "LogParameters": {"tailLines": [LOG_TAIL_LINES]},
        }
        parameters["Job"] = job
        failed = fail_state_name(step.name)
        task: dict[str, Any] = {
            "Type": "Task",
            "Comment": f"Step {index + 1} of {len(spec.steps)}: {step.name}",
            "Resource": RUN_JOB_SYNC,
            "Parameters": parameters,
            # Keep the execution input as every step's input; outputs go to the export path.
            "ResultPath": None,
            "TimeoutSeconds": step_timeout,
            "Retry": [
                {
                    "ErrorEquals": list(TRANSIENT_ERRORS),
                    "IntervalSeconds": 10,
                    "MaxAttempts": TRANSIENT_MAX_ATTEMPTS,
                    "BackoffRate": 2.0,
                    "JitterStrategy": "FULL",
                }
            ],
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": failed}],
        }
        if index + 1 < len(spec.steps):
            task["Next"] = spec.steps[index + 1].name
        else:
            task["End"] = True
        states[step.name] = task
        states[failed] = {
            "Type": "Fail",
            "Comment": f"Step {step.name} failed; later steps were not run.",
            "ErrorPath": "$.error.Error",
            "CausePath": "$.error.Cause",
        }
    return {
        "Comment": f"Ray pipeline {pipeline.name}: {' -> '.join(s.name for s in spec.steps)}",
        "StartAt": spec.steps[0].name,
        "TimeoutSeconds": timeout,
        "States": states,
    }


def fail_state_name(step: str) -> str:
    """The Fail state a step's Catch leads to."""
    return f"{step} failed"


def to_json(definition: dict[str, Any]) -> str:
    """The definition as the JSON Step Functions takes (stable key order for diffs)."""
    return json.dumps(definition, indent=2)
