"""Level-triggered reconcile of ``RayJob`` resources.

The shared watch caches hold the RayJobs, the Rays and the children labelled with their RayJob
(the apiserver filters them: no other Pod or ConfigMap is cached); one ``reconcile()`` per key
compares them with what should exist, creates what is missing while the job has not ended,
passes ``spec.kill`` to the runner, and mirrors the runner's ConfigMap into the status. A steady
job costs no API request: reads come from the caches.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from ray_operator.api.constants import (
    LABEL_RAYJOB,
    REASON_CREATED,
    REASON_FAILED_CREATE,
    REASON_INVALID_SPEC,
)
from ray_operator.api.jobdata import (
    KEY_ADDRESS,
    KEY_ID,
    KEY_KILL,
    STATUS_JOB,
)
from ray_operator.api.rayjob import RayJobSpec
from ray_operator.builders.drift import controller_name, controller_uid
from ray_operator.builders.ray_cluster import AUTH_TOKEN_KEY
from ray_operator.builders.rayjob import (
    build_job_cluster,
    build_rayjob_children,
    child_name,
    judge_job_cluster,
    on_own_cluster,
    with_cluster_token,
)
from ray_operator.builders.rayjob_status import (
    LOST_JOB_STOPPED,
    RUNNER_RESTARTS,
    check_spec,
    compute_rayjob_status,
    is_terminal,
    job_address,
    lost_job_running,
    ray_not_ready,
    runner_start_problem,
    status_patch,
)
from ray_operator.jobs.ray_api import (
    TERMINAL_STATES,
    RayApiError,
    RayJobNotFoundError,
    RayJobsClient,
    RayUnreachableError,
)
from ray_operator.jobs.status_store import new_submission_id
from ray_operator.kube import (
    CONFIGMAP,
    POD,
    RAY,
    RAYJOB,
    ROLE,
    ROLE_BINDING,
    SECRET,
    SERVICE_ACCOUNT,
    Kind,
    Kube,
    KubeError,
)
from ray_operator.runtime.events import EventRecorder
from ray_operator.runtime.informer import Informer
from ray_operator.runtime.workqueue import Backoff, WorkQueue
from ray_operator.settings import Settings

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)

FINALIZER: Final = "ray.kubeflow.org/stop-job"
REASON_WAITING: Final = "WaitingForCluster"
REASON_RUNNER_ENDED: Final = "RunnerEnded"
REASON_RUNNER_RESTARTED: Final = "RunnerRestarted"
REASON_STOPPED: Final = "StoppedJob"
REASON_FAILED_STOP: Final = "FailedStop"
REASON_CHILD_CONFLICT: Final = "ChildConflict"
REASON_RUNNER_NOT_STARTED: Final = "RunnerNotStarted"
REASON_CREATED_CLUSTER: Final = "CreatedCluster"
REASON_DELETED_CLUSTER: Final = "DeletedCluster"
# The children of RayJobs carry this label: the watches ask the apiserver for those only.
CHILD_SELECTOR: Final = LABEL_RAYJOB
# How long a deleted RayJob waits for its Ray job to be stopped before letting go anyway
# (a lost cluster must not block the deletion forever), and the timeout of each stop request.
STOP_GRACE_SECONDS: Final = 30.0
STOP_REQUEST_TIMEOUT: Final = 5.0
STOP_RETRY_SECONDS: Final = 2.0

# Created in this order: the Pod last, once its identity and its ConfigMap exist.
CHILD_KINDS: Final[dict[str, Kind]] = {
    "ServiceAccount": SERVICE_ACCOUNT,
    "Role": ROLE,
    "RoleBinding": ROLE_BINDING,
    "ConfigMap": CONFIGMAP,
    "Pod": POD,
}


@dataclass
class RayJobController:
    """Reconciles one ``RayJob`` at a time per key, from the shared caches."""

    kube: Kube
    settings: Settings
    events: EventRecorder
    jobs: Informer
    rays: Informer
    # The caches of each child kind, by kind name (see CHILD_KINDS).
    children: dict[str, Informer]
    name: str = "rayjob"
    queue: WorkQueue = field(init=False)
    # (namespace, name) -> the status fields that show the job's Ray, for the reconcile running.
    cluster_fields: dict[Key, Obj] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.queue = WorkQueue(self.name, self._reconcile_key)
        self.jobs.subscribe(self._on_job)
        self.rays.subscribe(self._on_ray)
        for cache in self.children.values():
            cache.subscribe(self._on_child)

    # --- watch feed -------------------------------------------------------------------------
    def _on_job(self, event_type: str, body: Obj, _: Obj | None) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if event_type == "DELETED":
            self.queue.forget(key)
            self.events.forget(str(body["metadata"].get("uid")))
            return
        self.queue.add(key)

    def _on_ray(self, _: str, body: Obj, __: Obj | None) -> None:
        """A Ray changed: the jobs waiting for it may start."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        owner = (body["metadata"].get("labels") or {}).get(LABEL_RAYJOB)
        if owner and self.jobs.get(ns, owner) is not None:
            self.queue.add((ns, owner))  # a Ray of the job's own
        for job in self.jobs.items():
            if (
                job["metadata"]["namespace"] == ns
                and (job.get("spec") or {}).get("cluster") == name
            ):
                self.queue.add((ns, job["metadata"]["name"]))

    def _on_child(self, _: str, body: Obj, __: Obj | None) -> None:
        """A child changed: mirror its status, or recreate it when it went away."""
        meta = body["metadata"]
        job = (meta.get("labels") or {}).get(LABEL_RAYJOB)
        if job and self.jobs.get(meta["namespace"], job) is not None:
            self.queue.add((meta["namespace"], job))

    async def close(self) -> None:
        """Nothing scheduled of its own to cancel."""

    def resync(self) -> None:
        """Reconcile every known RayJob from the caches (the periodic safety net)."""
        for job in self.jobs.items():
            self.queue.add((job["metadata"]["namespace"], job["metadata"]["name"]))

    def _later(self, key: Key, seconds: float) -> None:
        self.queue.add_after(key, seconds)

    # --- reconcile --------------------------------------------------------------------------
    async def _reconcile_key(self, key: Hashable) -> None:
        assert isinstance(key, tuple)
        body = self.jobs.get(*key)
        if body is None:
            return
        try:
            if body["metadata"].get("deletionTimestamp"):
                await self.finalize(body)
            else:
                await self.reconcile(body)
        finally:
            self.cluster_fields.pop(key, None)

    def _child(self, kind: str, ns: str, job: str) -> Obj | None:
        return self.children[kind].get(ns, child_name(job))

    async def reconcile(self, body: Obj) -> None:
        """Create what is missing, pass on ``spec.kill``, and mirror the runner's status."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        previous: Obj = body.get("status") or {}
        configmap = self._child("ConfigMap", ns, name)
        data: dict[str, str] | None = (
            dict(configmap.get("data") or {}) if configmap is not None else None
        )
        checked = check_spec(body.get("spec"))
        error = checked.error
        if checked.spec is not None and checked.spec.clusterSpec is not None:
            error = "; ".join(judge_job_cluster(name, checked.spec)[0]) or None
        if checked.spec is None or error is not None:
            await self._refuse(body, data, REASON_INVALID_SPEC, error or "invalid spec")
            return
        spec = checked.spec
        own_cluster = spec.clusterSpec is not None
        # From here on a job with clusterSpec runs on its own Ray as on one it names.
        spec = self._as_run(ns, name, spec)
        mirrored = compute_rayjob_status(previous, data)
        if not is_terminal(mirrored):
            # Not once ended: a shared Ray's changes must not rewrite every finished job.
            self.cluster_fields[(ns, name)] = self._cluster_fields(ns, spec)
        if is_terminal(mirrored) and lost_job_running(mirrored):
            await self._stop_lost_job(body, spec, data, mirrored)
            return
        if is_terminal(mirrored):
            # Ended: nothing to recreate, nothing left to stop on deletion.
            if own_cluster:
                await self._retire_cluster(body, spec, mirrored)
            await self._write_status(body, mirrored)
            await self._remove_finalizer(body)
            return
        if own_cluster and not previous.get("submitTime") and not spec.kill:
            conflict = await self._ensure_own_cluster(body, spec)
            if conflict is not None:
                await self._refuse(body, data, REASON_CHILD_CONFLICT, conflict)
                raise Backoff(conflict)
        if configmap is None and spec.cluster:
            waiting = ray_not_ready(self.rays.get(ns, spec.cluster), spec.cluster, ns)
            if waiting:
                await self._report_once(body, "Normal", REASON_WAITING, waiting)
                await self._write_status(
                    body,
                    compute_rayjob_status(previous, data, note=waiting, note_reason=REASON_WAITING),
                )
                return
        if configmap is None and spec.kill and not previous.get("submitTime"):
            await self._write_status(
                body,
                {
                    **previous,
                    "jobStatus": "STOPPED",
                    "reason": "Stopped",
                    "message": "spec.kill was set before the job was submitted",
                },
            )
            return
        body = await self._add_finalizer(body)
        # The submission id is chosen and stored in the status before anything can submit it:
        # a ConfigMap recreated after a loss carries the same id, so Ray never runs the job twice.
        submission_id = (data or {}).get(KEY_ID) or previous.get("submissionId")
        if not submission_id:
            submission_id = new_submission_id(name)
            body = await self._write_status(body, {**previous, "submissionId": submission_id})
        failure = await self._ensure_children(body, spec, submission_id)
        configmap = self._child("ConfigMap", ns, name)
        data = dict(configmap.get("data") or {}) if configmap is not None else None
        if spec.kill and data is not None and data.get(KEY_KILL) != "true":
            data = await self._set_kill(ns, name) or data
        restarts = int((body.get("status") or {}).get(RUNNER_RESTARTS) or 0)
        note: str | None
        reason: str | None
        if failure:
            note, reason = failure
        else:
            note, reason, restarts = await self._replace_ended_runner(body, spec, data, restarts)
        if note is None:
            stuck = runner_start_problem(self._child("Pod", ns, name))
            if stuck is not None:
                note, reason = stuck, REASON_RUNNER_NOT_STARTED
                self.events.emit_once(body, "Warning", REASON_RUNNER_NOT_STARTED, stuck)
        status = compute_rayjob_status(
            body.get("status"), data, submission_id, note=note, note_reason=reason
        )
        if restarts:
            status[RUNNER_RESTARTS] = restarts
        await self._write_status(body, status)
        if failure:
            raise Backoff(failure[0])  # reported in the status and an event; retried later

    async def _stop_lost_job(
        self, body: Obj, spec: RayJobSpec, data: dict[str, str] | None, status: Obj
    ) -> None:
        """Stop a job the runner gave up as lost (it may still run on Ray).

        Tried again with the queue's back-off until the job API answers; the finalizer stays
        until then, so neither a deletion nor the runner's exit leaves the job running.
        """
        ns = body["metadata"]["namespace"]
        address = (data or {}).get(KEY_ADDRESS) or job_address(spec, ns)
        error = await self._stop(address, status["submissionId"], ns, spec)
        if error is not None:
            await self._write_status(body, status)
            self.events.emit_once(
                body, "Warning", REASON_FAILED_STOP,
                f"the runner lost Ray job {status['submissionId']} at {address}; it may still "
                f"run: stopping it as soon as the job API answers ({error})",
            )
            raise Backoff(f"lost job not stopped yet: {error}")
        stopped = compute_rayjob_status({**status, LOST_JOB_STOPPED: True}, data)
        await self._write_status(body, stopped)
        self.events.emit(
            body, "Normal", REASON_STOPPED,
            f"stopped Ray job {status['submissionId']} at {address}, which the runner had lost",
        )
        await self._remove_finalizer(body)

    async def _replace_ended_runner(
        self, body: Obj, spec: RayJobSpec, data: dict[str, str] | None, restarts: int
    ) -> tuple[str | None, str | None, int]:
        """A runner Pod that ended while its job had not: replace it, up to spec.backoffLimit.

        The new runner resumes following the same submission (its id is in the ConfigMap), as
        a Job's new pod would. Returns (note, reason, restarts so far).
        """
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        pod_name = child_name(name)
        pod = self._child("Pod", ns, name)
        phase = ((pod or {}).get("status") or {}).get("phase")
        if pod is None or phase not in ("Failed", "Succeeded"):
            return None, None, restarts
        if pod["metadata"].get("deletionTimestamp") or (data or {}).get(STATUS_JOB) in (
            TERMINAL_STATES
        ):
            return None, None, restarts
        ended = f"the runner pod {pod_name} ended (phase {phase}) before the job did"
        if restarts >= spec.backoffLimit:
            # Kept for its log, as a Job keeps its failed pods.
            return (
                f"{ended}, and spec.backoffLimit={spec.backoffLimit} runners were started "
                "after the first; delete the pod to start one more, which resumes the same "
                "submission",
                REASON_RUNNER_ENDED,
                restarts,
            )
        # Only this very pod (its uid): a successor made meanwhile is never the one deleted.
        await self.kube.delete(POD, pod_name, ns, uid=pod["metadata"].get("uid"))
        # Out of the cache at once, and its uid buried: the next reconcile makes the successor
        # (a 409 while the old pod terminates brings it back into the cache, still deleting).
        self.children["Pod"].forget(pod)
        restarts += 1
        self.events.emit(
            body,
            "Warning",
            REASON_RUNNER_RESTARTED,
            f"{ended}; starting runner {restarts + 1} of {spec.backoffLimit + 1}, which resumes "
            "the same submission",
        )
        return None, None, restarts

    def _desired_children(self, body: Obj, spec: RayJobSpec, submission_id: str) -> list[Obj]:
        meta = body["metadata"]
        return build_rayjob_children(
            meta["name"],
            meta["uid"],
            meta["namespace"],
            spec,
            self.settings.runner_image,
            submission_id,
            body.get("status") or {},
            self.settings.runner_pull_secrets,
        )

    async def _ensure_children(
        self, body: Obj, spec: RayJobSpec, submission_id: str
    ) -> tuple[str, str] | None:
        """Create each missing child; returns (message, reason) of the first failure."""
        ns = body["metadata"]["namespace"]
        uid = body["metadata"]["uid"]
        for desired in self._desired_children(body, spec, submission_id):
            kind_name = desired["kind"]
            child = desired["metadata"]["name"]
            cache = self.children[kind_name]
            existing = cache.get(ns, child)
            if existing is None:
                kind = CHILD_KINDS[kind_name]
                try:
                    cache.remember(await self.kube.create(kind, desired, ns))
                except KubeError as exc:
                    if not exc.conflict:
                        message = f"Failed to create the {kind_name.lower()} {child}: {exc.message}"
                        self.events.emit_once(body, "Warning", REASON_FAILED_CREATE, message)
                        return message, REASON_FAILED_CREATE
                    # It exists but is not in our cache: ours a moment ago, or someone else's.
                    existing = await self.kube.get(kind, child, ns)
                    if controller_uid(existing) == uid:
                        cache.remember(existing)
                else:
                    self.events.emit(
                        body,
                        "Normal",
                        REASON_CREATED,
                        f"Successfully create the {kind_name.lower()} {child}",
                    )
                    continue
            if controller_uid(existing) != uid:
                message = (
                    f"{kind_name} {ns}/{child} already exists and is controlled by "
                    f"{controller_name(existing)}, not by this RayJob: it is left as it is; "
                    "delete it, or give the RayJob another name"
                )
                self.events.emit_once(body, "Warning", REASON_CHILD_CONFLICT, message)
                return message, REASON_CHILD_CONFLICT
        return None

    async def _set_kill(self, ns: str, name: str) -> dict[str, str] | None:
        """Tell the runner to stop the job (it watches its ConfigMap's ``kill`` key)."""
        try:
            updated = await self.kube.patch(
                CONFIGMAP, child_name(name), {"data": {KEY_KILL: "true"}}, ns
            )
        except KubeError as exc:
            if exc.not_found:
                return None
            raise
        self.children["ConfigMap"].remember(updated)
        return dict(updated.get("data") or {})

    async def _refuse(
        self, body: Obj, data: dict[str, str] | None, reason: str, message: str
    ) -> None:
        """Say why nothing goes ahead: a Warning event and the status' note."""
        await self._report_once(body, "Warning", reason, message)
        await self._write_status(
            body,
            compute_rayjob_status(body.get("status") or {}, data, note=message, note_reason=reason),
        )

    # --- the job's own Ray ----------------------------------------------------------------------
    def _cluster_fields(self, ns: str, spec: RayJobSpec) -> Obj:
        """``rayClusterName`` and ``rayClusterStatus`` (Healthy, the Health reason, Absent)."""
        if not spec.cluster:
            return {}
        ray = self.rays.get(ns, spec.cluster)
        if ray is None:
            phase = "Absent"
        else:
            status = ray.get("status") or {}
            health: Obj = next(
                (c for c in status.get("conditions") or [] if c.get("type") == "Health"), {}
            )
            phase = "Healthy" if status.get("health") == "True" else health.get("reason", "Pending")
        return {"rayClusterName": spec.cluster, "rayClusterStatus": phase}

    async def _ensure_own_cluster(self, body: Obj, spec: RayJobSpec) -> str | None:
        """Create the job's Ray when it is missing; a conflict's message when the name is taken."""
        meta = body["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], str(meta.get("uid", ""))
        assert spec.cluster is not None
        ray = self.rays.get(ns, spec.cluster)
        if ray is None:
            try:
                ray = await self.kube.create(RAY, build_job_cluster(name, uid, ns, spec), ns)
            except KubeError as exc:
                if not exc.conflict:
                    raise
                ray = await self.kube.get(RAY, spec.cluster, ns)
            else:
                self.events.emit(
                    body, "Normal", REASON_CREATED_CLUSTER, f"Created Ray {spec.cluster}"
                )
            self.rays.remember(ray)
            self.cluster_fields[(ns, name)] = self._cluster_fields(ns, spec)
        if controller_uid(ray) != uid:
            return (
                f"Ray {ns}/{spec.cluster} already exists and is controlled by "
                f"{controller_name(ray)}, not by this RayJob: it is left as it is; delete or "
                "rename it, or give the RayJob another name"
            )
        return None

    async def _retire_cluster(self, body: Obj, spec: RayJobSpec, status: Obj) -> None:
        """Delete the job's own Ray once the job has ended and the TTL has passed."""
        meta = body["metadata"]
        key: Key = (meta["namespace"], meta["name"])
        ray = self.rays.get(key[0], spec.cluster or "")
        fields = self.cluster_fields.setdefault(key, {})
        if not spec.deletes_its_cluster:
            return
        if ray is None or controller_uid(ray) != meta.get("uid"):
            fields["rayClusterStatus"] = "Deleted"
            return
        fields.update(self._cluster_fields(key[0], spec))
        runner = self._child("Pod", *key)
        phase = ((runner or {}).get("status") or {}).get("phase")
        if runner is not None and phase not in ("Succeeded", "Failed"):
            # The runner reads the log from this cluster after the job's end: not before it is
            # done (its Pod's change brings the next reconcile).
            fields["rayClusterStatus"] += "; kept until the runner has archived the job"
            return
        ended = status.get("endTime")
        left = spec.ttlSecondsAfterFinished - (_seconds_since(ended) if ended else 1e9)
        if left > 0:
            fields["rayClusterStatus"] += (
                f"; to be deleted {spec.ttlSecondsAfterFinished}s after the job ended"
            )
            self._later(key, left + 0.5)
            return
        await self.kube.delete(RAY, ray["metadata"]["name"], key[0], uid=ray["metadata"]["uid"])
        fields["rayClusterStatus"] = "Deleted"
        self.events.emit_once(
            body,
            "Normal",
            REASON_DELETED_CLUSTER,
            f"Deleted Ray {spec.cluster}: the job ended ({status.get('jobStatus')})",
        )

    async def _write_status(self, body: Obj, status: Obj) -> Obj:
        """Patch the status when it differs; returns the RayJob as now known."""
        meta = body["metadata"]
        status = {**status, **self.cluster_fields.get((meta["namespace"], meta["name"]), {})}
        patch = status_patch(body.get("status"), status)
        if patch is None:
            return body
        log.debug("RayJob %s/%s status: %s", meta["namespace"], meta["name"], patch)
        try:
            updated = await self.kube.patch(
                RAYJOB, meta["name"], {"status": patch}, meta["namespace"], subresource="status"
            )
        except KubeError as exc:
            if exc.not_found:
                return body
            raise
        self.jobs.remember(updated)
        return updated

    async def _report_once(self, body: Obj, kind: str, reason: str, message: str) -> None:
        self.events.emit_once(body, kind, reason, message)

    # --- finalizer --------------------------------------------------------------------------
    async def _set_finalizer(self, body: Obj, present: bool) -> Obj:
        """Add or remove our finalizer, keeping everyone else's."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        for attempt in range(3):
            finalizers = list(body["metadata"].get("finalizers") or [])
            if (FINALIZER in finalizers) == present:
                return body
            others = [f for f in finalizers if f != FINALIZER]
            wanted = [*others, FINALIZER] if present else others
            # resourceVersion makes this a compare-and-set: a finalizer added meanwhile is kept.
            version = body["metadata"]["resourceVersion"]
            patch = {"metadata": {"finalizers": wanted, "resourceVersion": version}}
            try:
                body = await self.kube.patch(RAYJOB, name, patch, ns)
                break
            except KubeError as exc:
                if exc.not_found:
                    return body
                if not exc.conflict or attempt == 2:
                    raise
                # Our cache is behind (a status write, or a watch event still on its way).
                body = await self.kube.get(RAYJOB, name, ns)
        self.jobs.remember(body)
        return body

    async def _add_finalizer(self, body: Obj) -> Obj:
        return await self._set_finalizer(body, present=True)

    async def _remove_finalizer(self, body: Obj) -> None:
        await self._set_finalizer(body, present=False)

    async def finalize(self, body: Obj) -> None:
        """A deleted RayJob: stop its Ray job if it still runs, then let the deletion proceed."""
        meta = body["metadata"]
        if FINALIZER not in (meta.get("finalizers") or []):
            return
        ns, name = meta["namespace"], meta["name"]
        configmap = self._child("ConfigMap", ns, name)
        data = dict(configmap.get("data") or {}) if configmap is not None else None
        status = compute_rayjob_status(body.get("status"), data)
        submission_id = status.get("submissionId")
        checked = check_spec(body.get("spec"))
        # Where the job was sent: the ConfigMap says it even if the spec was edited since.
        spec = checked.spec
        if spec is not None:
            spec = self._as_run(ns, name, spec)
        address = (data or {}).get(KEY_ADDRESS) or (job_address(spec, ns) if spec else "")
        if submission_id and address and (not is_terminal(status) or lost_job_running(status)):
            if data is not None and data.get(KEY_KILL) != "true":
                await self._set_kill(ns, name)  # the runner stops it too, with its own token
            if not self._may_have_submitted(ns, name, status):
                await self._remove_finalizer(body)
                return
            error = await self._stop(address, submission_id, ns, spec)
            if error is not None:
                waited = _seconds_since(meta["deletionTimestamp"])
                if waited < STOP_GRACE_SECONDS:
                    log.info("RayJob %s/%s: %s; retrying", ns, name, error)
                    self._later((ns, name), STOP_RETRY_SECONDS)
                    return
                self.events.emit(
                    body,
                    "Warning",
                    REASON_FAILED_STOP,
                    f"could not stop Ray job {submission_id} at {address} within "
                    f"{STOP_GRACE_SECONDS:g}s ({error}); deleting the RayJob anyway",
                )
            else:
                self.events.emit(
                    body,
                    "Normal",
                    REASON_STOPPED,
                    f"stopped Ray job {submission_id} at {address} before deleting the RayJob",
                )
        await self._remove_finalizer(body)

    def _may_have_submitted(self, ns: str, name: str, status: Obj) -> bool:
        """False only when no runner can have reached Ray: no submit time, no running Pod.

        (A runner that starts now reads ``kill`` first and does not submit.)
        """
        if status.get("submitTime"):
            return True
        pod = self._child("Pod", ns, name)
        return ((pod or {}).get("status") or {}).get("phase") == "Running"

    def _as_run(self, ns: str, name: str, spec: RayJobSpec) -> RayJobSpec:
        """The spec as it runs: on its own Ray (clusterSpec), with its Ray's token (spec.auth)."""
        spec = on_own_cluster(name, spec)
        return with_cluster_token(spec, self.rays.get(ns, spec.cluster or ""))

    async def _stop(
        self, address: str, submission_id: str, ns: str, spec: RayJobSpec | None
    ) -> str | None:
        """Stop one Ray job; None when stopped, already ended or never submitted, else why not.

        On a Ray with token authentication this is the one place the operator reads a token:
        the runner that holds it is gone.
        """
        token = None
        if spec is not None and spec.tokenSecretName:
            try:
                secret = await self.kube.get(SECRET, spec.tokenSecretName, ns)
            except KubeError as exc:
                return f"cannot read the token Secret {spec.tokenSecretName}: {exc.message}"
            encoded = (secret.get("data") or {}).get(AUTH_TOKEN_KEY, "")
            try:
                token = base64.b64decode(encoded).decode().strip() or None
            except (binascii.Error, UnicodeDecodeError):
                secret_name = spec.tokenSecretName
                return f"the token Secret {secret_name} holds no text under {AUTH_TOKEN_KEY!r}"
        try:
            async with RayJobsClient(address, token=token, timeout=STOP_REQUEST_TIMEOUT) as client:
                await client.stop(submission_id)
        except RayJobNotFoundError:
            return None  # never submitted: the runner goes with its Pod
        except (RayApiError, RayUnreachableError) as exc:
            return str(exc)
        return None


def _seconds_since(timestamp: str) -> float:
    try:
        moment = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return 0.0
    return max(0.0, time.time() - moment.timestamp())
