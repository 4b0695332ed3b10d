"""Pure builders of a ``RayPipeline``: step ``RayJob``s, the embedded ``Ray``, and the next move.

A pipeline runs step after step, each as a ``RayJob`` owned by the pipeline. The run id is the
pipeline's uid, so every reconcile computes the same names and parameters: creating a child that
already exists means it was created before, never a second run. :func:`plan_pipeline` is the
whole state machine: from the pipeline, its RayJobs and its cluster as observed, it computes the
status to write and the few actions to take.
"""

from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from ray_operator.api.constants import API_VERSION, GROUP, LABEL_MANAGED_BY, MANAGED_BY
from ray_operator.api.pipeline import (
    KIND,
    PIPELINE_FAILED,
    PIPELINE_PENDING,
    PIPELINE_RUNNING,
    PIPELINE_SUCCEEDED,
    REASON_DEADLINE_EXCEEDED,
    REASON_STEP_FAILED,
    STEP_FAILED,
    STEP_PENDING,
    STEP_RUNNING,
    STEP_SKIPPED,
    STEP_STOPPED,
    STEP_SUCCEEDED,
    PipelineSpec,
    PipelineStatus,
    PipelineStep,
    StepStatus,
)
from ray_operator.api.pipeline_step import StepRun
from ray_operator.api.rayjob import RayJobRuntimeEnv, RayJobS3, RayJobSpec
from ray_operator.builders.defaults import CURRENT_REVISION, builtin_templates

Obj = dict[str, Any]

LABEL_PIPELINE: Final = f"{GROUP}/raypipeline"
LABEL_STEP: Final = f"{GROUP}/pipeline-step"
LABEL_ATTEMPT: Final = f"{GROUP}/pipeline-attempt"
EXPORT_VOLUME: Final = "pipeline-export"
# Why the pipeline set spec.kill on a RayJob: a status write lost after the kill still tells.
ANNOTATION_STOPPED_BY: Final = f"{GROUP}/stopped-by"
# RayJob names become label values (<= 63); a Ray's name gets "-head" for its Service (<= 63).
RAYJOB_NAME_MAX: Final = 63
RAY_NAME_MAX: Final = 58

REASON_INVALID_SPEC: Final = "InvalidSpec"
REASON_WAITING_FOR_CLUSTER: Final = "WaitingForCluster"
REASON_STEP_STARTED: Final = "StepStarted"
REASON_STEP_SUCCEEDED: Final = "StepSucceeded"
REASON_SUCCEEDED: Final = "Succeeded"
REASON_CLUSTER_DELETED: Final = "ClusterDeleted"

RAYJOB_TERMINAL: Final = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
_TERMINAL_PHASES: Final = frozenset({PIPELINE_SUCCEEDED, PIPELINE_FAILED})
_REQUIREMENT: Final = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*(?:\[[^\]]*\])?)\s*(.*?)\s*$")


class PipelineBuildError(ValueError):
    """A valid pipeline file that the in-cluster resource cannot run; names field and fix."""


# --- names ------------------------------------------------------------------------------------
def fit_name(name: str, limit: int) -> str:
    """``name`` itself when short enough, else its start and a hash (stable, unique enough)."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


def pipeline_label(pipeline: str) -> str:
    """The value of :data:`LABEL_PIPELINE` on the pipeline's children."""
    return fit_name(pipeline, 63)


def step_job_name(pipeline: str, step: str, attempt: int = 1) -> str:
    """``<pipeline>-<step>``, ``-2``, ``-3`` for retries."""
    suffix = f"-{attempt}" if attempt > 1 else ""
    return fit_name(f"{pipeline}-{step}{suffix}", RAYJOB_NAME_MAX)


def cluster_name(pipeline: str) -> str:
    """The name of the Ray a pipeline creates from its embedded cluster spec."""
    return fit_name(f"{pipeline}-ray", RAY_NAME_MAX)


def owner_reference(pipeline: str, uid: str) -> Obj:
    """The pipeline owns its RayJobs and cluster: deleting it deletes them."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": pipeline,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(pipeline: str, namespace: str, uid: str, name: str, extra: dict[str, str]) -> Obj:
    return {
        "name": name,
        "namespace": namespace,
        "labels": {
            LABEL_PIPELINE: pipeline_label(pipeline),
            LABEL_MANAGED_BY: MANAGED_BY,
            **extra,
        },
        "ownerReferences": [owner_reference(pipeline, uid)],
    }


# --- step -> RayJob -----------------------------------------------------------------------------
def _script(step: PipelineStep, index: int) -> tuple[str, str]:
    """(script, scriptLocation) of the RayJob; a file next to the pipeline file cannot work here."""
    if step.scriptFrom is not None:
        return "", "inline"  # the RayJob gets scriptFrom itself
    if step.script_is_inline:
        return step.script, "inline"
    if step.script_is_s3:
        return step.script, "s3"
    if step.script.startswith("/"):
        return step.script, "file"  # a path the runner Pod can read (e.g. in its image)
    raise PipelineBuildError(
        f"spec.steps[{index}].script: {step.script!r} is not accepted in a RayPipeline resource: "
        "a file relative to the pipeline file is not in the cluster; use `ray-operator pipeline "
        "apply` (it puts the files in a ConfigMap, scriptFrom), write the script inline "
        "(script: |), give s3://bucket/key or bucket:key, or an absolute path in the runner image"
    )


def _runtime_env(step: PipelineStep, index: int) -> RayJobRuntimeEnv | None:
    """Ray's runtime env (``pip``, ``env_vars``) in the RayJob's form (``pip``, ``env``)."""
    env = step.runtimeEnv
    if not env:
        return None
    field_name = f"spec.steps[{index}].runtimeEnv"
    unknown = sorted(set(env) - {"pip", "env_vars"})
    if unknown:
        raise PipelineBuildError(
            f"{field_name}: keys {unknown} are not accepted in a RayPipeline resource: "
            "use 'pip' and 'env_vars'"
        )
    pip: dict[str, str] | None = None
    raw_pip = env.get("pip")
    if isinstance(raw_pip, dict):
        pip = {str(k): str(v or "") for k, v in raw_pip.items()}
    elif isinstance(raw_pip, list):
        pip = {}
        for requirement in raw_pip:
            match = _REQUIREMENT.match(str(requirement))
            if not match:
                raise PipelineBuildError(
                    f"{field_name}.pip: {requirement!r} is not accepted: "
                    "give a requirement such as 'numpy' or 'torch==2.5.1'"
                )
            pip[match.group(1)] = match.group(2)
    elif raw_pip is not None:
        raise PipelineBuildError(
            f"{field_name}.pip: {raw_pip!r} is not accepted: give a list of requirements"
        )
    env_vars = env.get("env_vars")
    if env_vars is not None and not isinstance(env_vars, dict):
        raise PipelineBuildError(
            f"{field_name}.env_vars: {env_vars!r} is not accepted: give a mapping NAME: value"
        )
    return RayJobRuntimeEnv(
        pip=pip or None,
        env={str(k): str(v) for k, v in env_vars.items()} if env_vars else None,
    )


def step_parameters(spec: PipelineSpec, index: int, run_id: str) -> dict[str, str]:
    """The step's parameters: export path, bucket, run id, input/output dirs, then its own."""
    step = spec.steps[index]
    run = StepRun(
        pipeline="",
        step=step.name,
        index=index,
        parameters=dict(step.parameters),
        exportPath=spec.exportPath,
        dataBucket=spec.dataBucket,
        previousStep=spec.steps[index - 1].name if index > 0 else None,
    )
    return run.all_parameters(run_id)


def build_step_rayjob(
    *,
    pipeline: str,
    namespace: str,
    uid: str,
    spec: PipelineSpec,
    index: int,
    cluster: str | None,
    attempt: int = 1,
) -> Obj:
    """The RayJob of step ``index`` (attempt ``attempt``) on Ray ``cluster`` or ``spec.address``.

    The run id is the pipeline's ``uid``: every step of one run writes under the same
    ``<exportPath>/<uid>/``, and a step finds the previous one's files in ``input_dir``.
    """
    step = spec.steps[index]
    script, location = _script(step, index)
    job = RayJobSpec(
        cluster=None if spec.address else cluster,
        address=spec.address,
        script=script,
        scriptLocation=location,  # type: ignore[arg-type]  # one of the Literal's values
        scriptFrom=step.scriptFrom,
        # Empty values (no bucket; the first step's input_dir) are left out: the test apiserver
        # refuses "" in the RayJob's parameters map ("must be of type string: null"), and a
        # script reads them with kwargs.get(key, "") anyway.
        parameters={k: v for k, v in step_parameters(spec, index, uid).items() if v != ""},
        runtimeEnv=_runtime_env(step, index),
        # An S3 script needs the runner's S3 client: AWS's credential chain unless told.
        s3=RayJobS3() if location == "s3" else None,
        activeDeadlineSeconds=step.activeDeadlineSeconds,
    )
    name = step_job_name(pipeline, step.name, attempt)
    return {
        "apiVersion": API_VERSION,
        "kind": "RayJob",
        "metadata": _meta(
            pipeline, namespace, uid, name, {LABEL_STEP: step.name, LABEL_ATTEMPT: str(attempt)}
        ),
        "spec": job.model_dump(exclude_none=True, exclude_defaults=True),
    }


def check_buildable(spec: PipelineSpec) -> list[str]:
    """Every reason a step cannot become a RayJob, and cluster settings that contradict."""
    problems: list[str] = []
    for index, step in enumerate(spec.steps):
        for check in (_script, _runtime_env):
            try:
                check(step, index)
            except PipelineBuildError as exc:
                problems.append(str(exc))
    targets = [
        name
        for name, given in (
            ("cluster", spec.cluster),
            ("address", spec.address),
            ("rayClusterSpec", spec.rayClusterSpec is not None),
        )
        if given
    ]
    if len(targets) != 1:
        problems.append(
            f"spec: {', '.join(targets) or 'none'} given: set exactly one of cluster (a Ray in "
            "this namespace), address (a Ray job API URL) or rayClusterSpec (a Ray to create)"
        )
    return problems


# --- embedded cluster -> Ray ----------------------------------------------------------------------
def _mount_export(template: Obj, pvc: str, export_path: str) -> Obj:
    template = copy.deepcopy(template)
    pod = template.setdefault("spec", {})
    volumes = [v for v in pod.get("volumes") or [] if v.get("name") != EXPORT_VOLUME]
    volumes.append({"name": EXPORT_VOLUME, "persistentVolumeClaim": {"claimName": pvc}})
    pod["volumes"] = volumes
    for container in pod.get("containers") or []:
        mounts = [m for m in container.get("volumeMounts") or [] if m.get("name") != EXPORT_VOLUME]
        mounts.append({"name": EXPORT_VOLUME, "mountPath": export_path})
        container["volumeMounts"] = mounts
    return template


def build_cluster(
    *, pipeline: str, namespace: str, uid: str, spec: PipelineSpec, ray_image: str
) -> Obj:
    """The Ray a pipeline creates from ``spec.rayClusterSpec``.

    With ``pvcName`` the claim is mounted at ``exportPath`` in every head and worker container;
    a role without a template gets the operator's default one (``ray_image``) to mount it in.
    """
    assert spec.rayClusterSpec is not None
    ray_spec: Obj = spec.rayClusterSpec.model_dump(exclude_none=True, by_alias=True)
    if spec.pvcName:
        defaults = builtin_templates(CURRENT_REVISION, ray_image)
        for role, default in defaults.items():
            replica = ray_spec.setdefault(role, {})
            template = replica.get("template") or default
            replica["template"] = _mount_export(template, spec.pvcName, spec.exportPath)
    return {
        "apiVersion": API_VERSION,
        "kind": "Ray",
        "metadata": _meta(pipeline, namespace, uid, cluster_name(pipeline), {}),
        "spec": ray_spec,
    }


# --- the state machine ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Observed:
    """What exists now: the pipeline's RayJobs (by name) and the Ray it runs on, if any."""

    jobs: dict[str, Obj]
    cluster: Obj | None
    now: datetime


@dataclass
class Plan:
    """What to do in one reconcile, and the status to write."""

    status: Obj
    create_cluster: Obj | None = None
    create_job: Obj | None = None
    kill_jobs: list[str] = field(default_factory=list)
    delete_cluster: str | None = None
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    wake_at: datetime | None = None  # reconcile again then (the deadline)


def rfc3339(moment: datetime) -> str:
    """As Kubernetes writes times."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    """An RFC 3339 time, or None."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def invalid_status(previous: Obj | None, message: str) -> Obj:
    """Status of a spec that cannot run: Failed, reason InvalidSpec (a fixed spec starts over)."""
    status = PipelineStatus.model_validate(previous or {})
    status.phase = PIPELINE_FAILED
    status.reason = REASON_INVALID_SPEC
    status.message = message
    status.currentStep = None
    return status.model_dump(exclude_none=True)


def _job_state(job: Obj) -> str | None:
    state = (job.get("status") or {}).get("jobStatus")
    return str(state) if state else None


def _latest_attempt(jobs: dict[str, Obj], step: str) -> tuple[int, Obj | None]:
    best: tuple[int, Obj | None] = (0, None)
    for job in jobs.values():
        labels = job["metadata"].get("labels") or {}
        if labels.get(LABEL_STEP) != step:
            continue
        try:
            attempt = int(labels.get(LABEL_ATTEMPT, "1"))
        except ValueError:
            attempt = 1
        if attempt > best[0]:
            best = (attempt, job)
    return best


def cluster_healthy(cluster: Obj | None) -> bool:
    """A Ray is healthy when all its pods are available (``status.health`` is "True")."""
    return bool(cluster) and (cluster or {}).get("status", {}).get("health") == "True"


def plan_pipeline(body: Obj, spec: PipelineSpec, observed: Observed, ray_image: str) -> Plan:
    """The next move of one pipeline, and its status, from what is observed."""
    meta = body["metadata"]
    name, namespace, uid = meta["name"], meta.get("namespace", "default"), meta.get("uid", "")
    previous = PipelineStatus.model_validate(body.get("status") or {})
    if previous.reason == REASON_INVALID_SPEC:
        previous = PipelineStatus()  # the spec was fixed: start the run
    now = observed.now
    creates_cluster = spec.rayClusterSpec is not None
    target = cluster_name(name) if creates_cluster else spec.cluster
    status = PipelineStatus(
        runId=uid,
        rayCluster=target,
        startTime=previous.startTime or rfc3339(now),
        endTime=previous.endTime,
        phase=previous.phase or PIPELINE_PENDING,
        reason=previous.reason,
        message=previous.message,
        currentStep=previous.currentStep,
    )
    before = {s.name: s for s in previous.steps}
    status.steps = [before.get(s.name) or StepStatus(name=s.name) for s in spec.steps]
    plan = Plan(status={})
    started = parse_time(status.startTime) or now
    deadline = started + timedelta(seconds=spec.timeout_seconds)

    if previous.phase in _TERMINAL_PHASES:
        _finish(plan, status, spec, observed, target if creates_cluster else None)
        return plan

    def fail(index: int, reason: str, message: str) -> None:
        status.phase = PIPELINE_FAILED
        status.reason = reason
        status.message = message
        status.currentStep = None
        status.endTime = rfc3339(now)
        for later in status.steps[index + 1 :]:
            later.state = STEP_SKIPPED
            later.message = f"not run: step {spec.steps[index].name!r} did not succeed"
        plan.events.append(("Warning", reason, message))

    timeout_message = f"pipeline timeout ({spec.timeoutMinutes} min) exceeded"
    for index, step in enumerate(spec.steps):
        step_status = status.steps[index]
        attempt, job = _latest_attempt(observed.jobs, step.name)
        if job is None:
            if now >= deadline:
                step_status.state = STEP_STOPPED
                step_status.message = "not started: the pipeline's timeout had passed"
                fail(
                    index,
                    REASON_DEADLINE_EXCEEDED,
                    f"{timeout_message} before step {step.name!r} started",
                )
                break
            if not spec.address and not cluster_healthy(observed.cluster):
                if creates_cluster and observed.cluster is None:
                    plan.create_cluster = build_cluster(
                        pipeline=name, namespace=namespace, uid=uid, spec=spec, ray_image=ray_image
                    )
                status.phase = PIPELINE_PENDING
                status.reason = REASON_WAITING_FOR_CLUSTER
                status.message = (
                    f"waiting for Ray {target!r} to be healthy"
                    if observed.cluster is not None
                    else f"waiting for Ray {target!r} to exist"
                )
                status.currentStep = step.name
                plan.wake_at = deadline
                break
            plan.create_job = build_step_rayjob(
                pipeline=name,
                namespace=namespace,
                uid=uid,
                spec=spec,
                index=index,
                cluster=target,
                attempt=1,
            )
            _start_step(step_status, plan.create_job["metadata"]["name"], now)
            plan.events.append(
                (
                    "Normal",
                    REASON_STEP_STARTED,
                    f"step {step.name!r}: created RayJob {step_status.rayJob}",
                )
            )
            _running(status, step.name)
            plan.wake_at = deadline
            break
        _mirror(step_status, job)
        state = _job_state(job)
        if state == STEP_SUCCEEDED:
            if previous_state(before, step.name) != STEP_SUCCEEDED:
                plan.events.append(
                    ("Normal", REASON_STEP_SUCCEEDED, f"step {step.name!r} succeeded")
                )
            continue
        if state in (STEP_FAILED, STEP_STOPPED):
            if state == STEP_FAILED and attempt <= step.retries and now < deadline:
                plan.create_job = build_step_rayjob(
                    pipeline=name,
                    namespace=namespace,
                    uid=uid,
                    spec=spec,
                    index=index,
                    cluster=target,
                    attempt=attempt + 1,
                )
                _start_step(step_status, plan.create_job["metadata"]["name"], now, keep_start=True)
                step_status.message = f"attempt {attempt + 1} of {step.retries + 1}"
                _running(status, step.name)
                plan.wake_at = deadline
                break
            step_status.state = state
            detail = step_status.message or f"its RayJob {job['metadata']['name']} is {state}"
            if _killed_for_deadline(job):
                step_status.state = STEP_STOPPED
                fail(
                    index,
                    REASON_DEADLINE_EXCEEDED,
                    f"{timeout_message} during step {step.name!r}: its Ray job was stopped",
                )
            else:
                fail(index, REASON_STEP_FAILED, f"step {step.name!r} failed: {detail}")
            break
        # Pending or running.
        if now >= deadline:
            plan.kill_jobs.append(job["metadata"]["name"])
            step_status.state = STEP_STOPPED
            step_status.endTime = rfc3339(now)
            step_status.message = f"stopped: {timeout_message}"
            fail(
                index,
                REASON_DEADLINE_EXCEEDED,
                f"{timeout_message} during step {step.name!r}: its RayJob "
                f"{job['metadata']['name']} was told to stop",
            )
            break
        _running(status, step.name)
        plan.wake_at = deadline
        break
    else:
        status.phase = PIPELINE_SUCCEEDED
        status.reason = None
        status.message = f"{len(spec.steps)} steps succeeded"
        status.currentStep = None
        status.endTime = status.endTime or rfc3339(now)
        plan.events.append(("Normal", REASON_SUCCEEDED, status.message))

    if status.phase in _TERMINAL_PHASES:
        _finish(plan, status, spec, observed, target if creates_cluster else None)
    plan.status = status.model_dump(exclude_none=True)
    return plan


def previous_state(before: dict[str, StepStatus], step: str) -> str | None:
    """The step's state in the status read (None when new)."""
    found = before.get(step)
    return found.state if found else None


def _start_step(step: StepStatus, job: str, now: datetime, keep_start: bool = False) -> None:
    step.state = STEP_PENDING
    step.rayJob = job
    step.submissionId = None
    step.startTime = step.startTime if keep_start and step.startTime else rfc3339(now)
    step.endTime = None
    step.message = None


def _running(status: PipelineStatus, step: str) -> None:
    status.phase = PIPELINE_RUNNING
    status.reason = None
    status.message = f"step {step!r} is running"
    status.currentStep = step


def _mirror(step: StepStatus, job: Obj) -> None:
    """A step's state and times from its RayJob's status (the RayJob controller's mirror)."""
    job_status = job.get("status") or {}
    state = _job_state(job)
    step.rayJob = job["metadata"]["name"]
    step.state = {"PENDING": STEP_PENDING, "RUNNING": STEP_RUNNING}.get(
        state or "PENDING", state or STEP_PENDING
    )
    step.submissionId = job_status.get("submissionId") or step.submissionId
    step.startTime = (
        step.startTime or job_status.get("startTime") or job["metadata"].get("creationTimestamp")
    )
    step.endTime = job_status.get("endTime") or step.endTime
    if job_status.get("message"):
        step.message = job_status["message"]


def _killed_for_deadline(job: Obj) -> bool:
    return bool((job.get("spec") or {}).get("kill")) and (
        (job["metadata"].get("annotations") or {}).get(ANNOTATION_STOPPED_BY)
        == REASON_DEADLINE_EXCEEDED
    )


def kill_patch(reason: str) -> Obj:
    """The merge patch that stops a RayJob, saying why (read back after an operator restart)."""
    return {
        "metadata": {"annotations": {ANNOTATION_STOPPED_BY: reason}},
        "spec": {"kill": True},
    }


def _finish(
    plan: Plan, status: PipelineStatus, spec: PipelineSpec, observed: Observed, created: str | None
) -> None:
    """After the run: no RayJob of it keeps running; the created cluster goes unless kept."""
    for job_name, job in observed.jobs.items():
        if _job_state(job) not in RAYJOB_TERMINAL and not (job.get("spec") or {}).get("kill"):
            if job_name not in plan.kill_jobs:
                plan.kill_jobs.append(job_name)
    if created and not spec.keepCluster and observed.cluster is not None:
        if not observed.cluster["metadata"].get("deletionTimestamp"):
            plan.delete_cluster = created
            plan.events.append(
                ("Normal", REASON_CLUSTER_DELETED, f"deleted Ray {created!r}: the run is over")
            )
    plan.status = status.model_dump(exclude_none=True)
