"""A ``RayJob``'s validity, target address and status: pure functions of what the controller saw.

The runner writes the job's state into its ConfigMap (``status.*`` keys and ``id``); the
controller mirrors those into the resource with :func:`compute_rayjob_status`, adding its own
message while the job cannot start (invalid spec, Ray not Healthy, a child it could not create).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from ray_operator.api.constants import (
    DNS_SUBDOMAIN,
    LABEL_MANAGED_BY,
    LABEL_RAYJOB,
    PORT_DASHBOARD,
)
from ray_operator.api.jobdata import (
    KEY_ID,
    STATUS_END_TIME,
    STATUS_JOB,
    STATUS_LOGS_URL,
    STATUS_MESSAGE,
    STATUS_REASON,
    STATUS_START_TIME,
    STATUS_SUBMIT_TIME,
    ConfigError,
    S3Location,
)
from ray_operator.api.rayjob import RayJobSpec

Obj = dict[str, Any]

# ConfigMap key -> RayJob status field.
MIRRORED: Final = {
    KEY_ID: "submissionId",
    STATUS_JOB: "jobStatus",
    STATUS_SUBMIT_TIME: "submitTime",
    STATUS_START_TIME: "startTime",
    STATUS_END_TIME: "endTime",
    STATUS_MESSAGE: "message",
    STATUS_REASON: "reason",
    STATUS_LOGS_URL: "logsURL",
}
# Status fields of the controller's own, kept from one write to the next.
RUNNER_RESTARTS: Final = "runnerRestarts"
# The runner gave a job up as lost (its job API unreachable for too long): the job may still run
# on Ray, so the controller keeps trying to stop it; this records that it did.
REASON_JOB_LOST: Final = "JobLost"
LOST_JOB_STOPPED: Final = "lostJobStopped"
LOST_JOB_STOPPED_NOTE: Final = "; the job was stopped on Ray once its job API answered again"
_OWN: Final = frozenset({*MIRRORED.values(), RUNNER_RESTARTS, LOST_JOB_STOPPED})
_URL: Final = re.compile(r"^https?://[^/\s]+")
# Ray's terminal job states (not imported from jobs.ray_api: builders stay free of httpx).
TERMINAL_STATES: Final = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


@dataclass(frozen=True)
class SpecCheck:
    """A spec read from the resource: the model when valid, else a message naming the field."""

    spec: RayJobSpec | None
    error: str | None


def check_spec(raw: Any) -> SpecCheck:
    """Validate ``spec`` beyond what the CRD schema checks (which the apiserver already did)."""
    try:
        spec = RayJobSpec.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
            message = err["msg"]
            if err["type"] == "extra_forbidden" and "runnerTemplate" in where:
                message = (
                    "not accepted: the operator sets it, or it is not the runner's to have "
                    "(runnerTemplate takes metadata.labels and .annotations, spec.nodeSelector, "
                    ".tolerations, .affinity, .priorityClassName, .imagePullSecrets, .volumes and "
                    "the 'runner' container's resources, env and volumeMounts)"
                )
            problems.append(f"spec{where}={err.get('input')!r}: {message}")
        return SpecCheck(None, "; ".join(problems))
    error = spec.target_error()
    if error is None and spec.address and not _URL.match(spec.address):
        error = (
            f"spec.address={spec.address!r}: use an http:// or https:// URL of the Ray job API, "
            f"e.g. http://head:{PORT_DASHBOARD}"
        )
    if error is None and spec.scriptFrom is not None and spec.script.strip():
        error = (
            f"spec.script={spec.script[:40]!r} and spec.scriptFrom given: set one (the script "
            "itself, or the ConfigMap key that holds it)"
        )
    if error is None and spec.scriptFrom is None and not spec.script.strip():
        error = (
            "spec.script='': give the script text, an S3 object or a file path, or "
            "spec.scriptFrom.configMapKeyRef {name, key}"
        )
    if error is None and spec.scriptFrom is None and spec.scriptLocation == "s3":
        try:
            S3Location.parse("spec.script", spec.script)
        except ConfigError as exc:
            error = str(exc)
    if error is None:
        relative = [p for p in spec.uploadFiles or [] if not p.startswith("/")]
        if relative:
            error = (
                f"spec.uploadFiles={relative!r}: list absolute paths of files the runner can read "
                "(e.g. on a volume shared with the Ray cluster)"
            )
    if error is None and spec.serviceAccountName is not None:
        if not DNS_SUBDOMAIN.match(spec.serviceAccountName):
            error = (
                f"spec.serviceAccountName={spec.serviceAccountName!r}: the name of a "
                "ServiceAccount in this namespace (lower-case letters, digits, '-' and '.')"
            )
    if error is None and spec.runnerTemplate is not None:
        error = _runner_template_error(spec)
    return SpecCheck(None if error else spec, error)


# What the runner Pod needs and a runnerTemplate may not touch.
RESERVED_ENV_PREFIX: Final = "RAY_JOB_"
RESERVED_VOLUMES: Final = frozenset({"s3", "ray-token", "script-from"})
RESERVED_MOUNT_PREFIXES: Final = ("/etc/ray-job", "/var/run/secrets/kubernetes.io")


def _runner_template_error(spec: RayJobSpec) -> str | None:
    template = spec.runnerTemplate
    assert template is not None
    where = "spec.runnerTemplate"
    for key in (template.metadata.labels or {}) if template.metadata else {}:
        if key in (LABEL_MANAGED_BY, LABEL_RAYJOB):
            return f"{where}.metadata.labels[{key!r}]: set by the operator; use another label"
    pod = template.spec
    if pod is None:
        return None
    volumes = {str(v.get("name")) for v in pod.volumes or []}
    for index, volume in enumerate(pod.volumes or []):
        if volume.get("name") in RESERVED_VOLUMES:
            return (
                f"{where}.spec.volumes[{index}].name={volume.get('name')!r}: the runner's own "
                f"volume name; use another ({', '.join(sorted(RESERVED_VOLUMES))} are taken)"
            )
    for container in pod.containers or []:
        cwhere = f"{where}.spec.containers[0]"
        for index, item in enumerate(container.env or []):
            name = str(item.get("name", ""))
            if name.startswith(RESERVED_ENV_PREFIX):
                return (
                    f"{cwhere}.env[{index}].name={name!r}: the runner's own setting; variables "
                    f"starting with {RESERVED_ENV_PREFIX} are set by the operator"
                )
        for index, mount in enumerate(container.volumeMounts or []):
            path = str(mount.get("mountPath", ""))
            if path.startswith(RESERVED_MOUNT_PREFIXES):
                return (
                    f"{cwhere}.volumeMounts[{index}].mountPath={path!r}: the runner's own mounts "
                    f"are there; mount elsewhere"
                )
            if mount.get("name") not in volumes:
                return (
                    f"{cwhere}.volumeMounts[{index}].name={mount.get('name')!r}: no such volume "
                    f"in {where}.spec.volumes ({', '.join(sorted(volumes)) or 'none given'})"
                )
    return None


def job_address(spec: RayJobSpec, namespace: str) -> str:
    """The job API URL: ``spec.address``, or the named Ray's head Service."""
    if spec.address:
        return spec.address.rstrip("/")
    return f"http://{spec.cluster}-head.{namespace}.svc:{PORT_DASHBOARD}"


def is_terminal(status: Obj | None) -> bool:
    """The job will not change state again."""
    return (status or {}).get("jobStatus") in TERMINAL_STATES


def ray_not_ready(ray: Obj | None, name: str, namespace: str) -> str | None:
    """Why the named Ray cannot take a job yet, or None when it is Healthy."""
    if ray is None:
        return (
            f"waiting for Ray {name!r} (spec.cluster): it does not exist in namespace {namespace}"
        )
    status = ray.get("status") or {}
    health = status.get("health")
    if health == "True":
        return None
    why = next(
        (
            c.get("message") or c.get("reason")
            for c in status.get("conditions") or []
            if c.get("type") == "Health" and (c.get("message") or c.get("reason"))
        ),
        None,
    )
    return f"waiting for Ray {name!r} (spec.cluster) to be Healthy: status.health={health!r}" + (
        f" ({why})" if why else ""
    )


def compute_rayjob_status(
    previous: Obj | None,
    data: dict[str, str] | None,
    submission_id: str | None = None,
    note: str | None = None,
    note_reason: str | None = None,
) -> Obj:
    """The status to show: the ConfigMap's keys mirrored, else the controller's ``note``.

    ``previous`` keeps what was mirrored before (the ConfigMap may be gone after the job ended);
    ``note`` says why the job cannot make progress and wins unless the job already ended.
    """
    status: Obj = {k: v for k, v in (previous or {}).items() if k in _OWN}
    if submission_id:
        status["submissionId"] = submission_id
    for key, field in MIRRORED.items():
        value = (data or {}).get(key)
        if value:
            status[field] = value
    if note and not is_terminal(status):
        status["message"] = note
        if note_reason:
            status["reason"] = note_reason
        else:
            status.pop("reason", None)
    elif data is not None and not data.get(STATUS_MESSAGE) and not is_terminal(status):
        # The controller's earlier note (e.g. "waiting for Ray") no longer applies.
        status.pop("message", None)
        if not data.get(STATUS_REASON):
            status.pop("reason", None)
    if status.get(LOST_JOB_STOPPED) and not str(status.get("message", "")).endswith(
        LOST_JOB_STOPPED_NOTE
    ):
        status["message"] = f"{status.get('message', '')}{LOST_JOB_STOPPED_NOTE}"
    return status


def status_patch(previous: Obj | None, new: Obj) -> Obj | None:
    """A merge patch from ``previous`` to ``new`` (None when equal); removed fields become null."""
    old = {k: v for k, v in (previous or {}).items() if k in _OWN}
    if old == new:
        return None
    patch: Obj = {k: None for k in old if k not in new}
    patch.update({k: v for k, v in new.items() if old.get(k) != v})
    return patch


# Why a kubelet keeps a container from starting; each needs someone to act (BackOff retries).
_STUCK_REASONS: Final = frozenset({
    "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
    "CreateContainerError", "RunContainerError", "ErrImageNeverPull",
})


def runner_start_problem(pod: Obj | None) -> str | None:
    """Why the runner Pod cannot start, in Kubernetes' own words; None when it can or did."""
    if pod is None or pod["metadata"].get("deletionTimestamp"):
        return None
    status = pod.get("status") or {}
    if status.get("phase") not in (None, "Pending"):
        return None
    name = pod["metadata"]["name"]
    for item in [*(status.get("initContainerStatuses") or []),
                 *(status.get("containerStatuses") or [])]:
        waiting = (item.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _STUCK_REASONS:
            detail = f": {waiting['message']}" if waiting.get("message") else ""
            return f"the runner pod {name} cannot start: {waiting['reason']}{detail}"
    for condition in status.get("conditions") or []:
        if (condition.get("type") == "PodScheduled" and condition.get("status") == "False"
                and condition.get("reason") == "Unschedulable"):
            return (
                f"the runner pod {name} cannot be scheduled: {condition.get('message', '')}"
                " (spec.runnerTemplate.spec.nodeSelector, tolerations, affinity and resources "
                "decide where it may run)"
            )
    return None


def lost_job_running(status: Obj) -> bool:
    """The runner gave the job up as lost and nobody has stopped it on Ray yet."""
    return (
        status.get("reason") == REASON_JOB_LOST
        and bool(status.get("submissionId"))
        and not status.get(LOST_JOB_STOPPED)
    )
