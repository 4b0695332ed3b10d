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

from ray_operator.api.constants import PORT_DASHBOARD
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
_OWN: Final = frozenset({*MIRRORED.values(), RUNNER_RESTARTS})
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
        problems = [
            f"spec.{'.'.join(str(p) for p in err['loc'])}={err.get('input')!r}: {err['msg']}"
            for err in exc.errors()
        ]
        return SpecCheck(None, "; ".join(problems))
    error = spec.target_error()
    if error is None and spec.address and not _URL.match(spec.address):
        error = (
            f"spec.address={spec.address!r}: use an http:// or https:// URL of the Ray job API, "
            f"e.g. http://head:{PORT_DASHBOARD}"
        )
    if error is None and not spec.script.strip():
        error = "spec.script='': give the script text, an S3 object or a file path"
    if error is None and spec.scriptLocation == "s3":
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
    return SpecCheck(None if error else spec, error)


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
    return status


def status_patch(previous: Obj | None, new: Obj) -> Obj | None:
    """A merge patch from ``previous`` to ``new`` (None when equal); removed fields become null."""
    old = {k: v for k, v in (previous or {}).items() if k in _OWN}
    if old == new:
        return None
    patch: Obj = {k: None for k in old if k not in new}
    patch.update({k: v for k, v in new.items() if old.get(k) != v})
    return patch
