"""The finalizer of a Ray with GCS fault tolerance: its keys leave Redis before it goes.

On deletion the head goes first (its GCS would write the keys again), then a Job in the head's
image removes them (``builders.gcs_cleanup``); the finalizer goes when the Job ends, whether it
succeeded or gave up (at most ``CLEANUP_DEADLINE_SECONDS``): a deletion waits for Redis, it is
never held by it. Meanwhile the Ray's condition ``GcsStorageCleanup`` says what it waits for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final

from ray_operator.builders.drift import controller_uid
from ray_operator.builders.gcs_cleanup import (
    CLEANUP_DEADLINE_SECONDS,
    FINALIZER,
    build_cleanup_job,
    cleanup_job_name,
    job_outcome,
)
from ray_operator.builders.ray_cluster import ClusterPlan, head_name
from ray_operator.kube import DEPLOYMENT, JOB, RAY, Kube, KubeError
from ray_operator.runtime.events import EventRecorder, now_rfc3339
from ray_operator.runtime.informer import Informer

log = logging.getLogger(__name__)
Obj = dict[str, Any]

COND_CLEANUP: Final = "GcsStorageCleanup"
REASON_CLEANING: Final = "CleaningRedis"
REASON_CLEANED: Final = "RedisCleaned"
REASON_CLEANUP_FAILED: Final = "RedisCleanupFailed"


@dataclass
class RedisCleanup:
    """Adds, honours and removes the finalizer for the Ray controller."""

    kube: Kube
    events: EventRecorder
    rays: Informer
    deployments: Informer
    jobs: Informer

    async def keep_finalizer(self, body: Obj, wanted: bool) -> Obj:
        """The finalizer on the Ray exactly while it has GCS fault tolerance (no write else)."""
        meta = body["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if (FINALIZER in finalizers) == wanted:
            return body
        others = [f for f in finalizers if f != FINALIZER]
        # resourceVersion makes it a compare-and-set: a finalizer added meanwhile is kept (a
        # conflict is retried by the queue with the newer version).
        patch = {
            "metadata": {
                "finalizers": [*others, FINALIZER] if wanted else others,
                "resourceVersion": meta["resourceVersion"],
            }
        }
        try:
            updated = await self.kube.patch(RAY, meta["name"], patch, meta["namespace"])
        except KubeError as exc:
            if exc.not_found:
                return body
            raise
        self.rays.remember(updated)
        return updated

    async def finish(self, body: Obj, plan: ClusterPlan | None) -> None:
        """One step of a deletion: stop the head, run the Job, then let the Ray go."""
        meta = body["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta.get("uid")
        if plan is None or plan.gcs_ft is None:
            await self.keep_finalizer(body, False)  # nothing we can clean: never hold it
            return
        head = self.deployments.get(ns, head_name(name))
        if head is not None and controller_uid(head) == uid:
            if not head["metadata"].get("deletionTimestamp"):
                # Foreground: the Deployment stays until its pods are gone, and its DELETED
                # event brings the next step.
                await self.kube.delete(DEPLOYMENT, head_name(name), ns, "Foreground")
                await self._condition(body, "Unknown", "StoppingHead",
                                      "the head stops first: its GCS would write the keys again")
            return
        job = self.jobs.get(ns, cleanup_job_name(name))
        if job is None:
            desired = build_cleanup_job(plan)
            try:
                job = await self.kube.create(JOB, desired, ns)
            except KubeError as exc:
                if not exc.conflict:
                    raise
                job = await self.kube.get(JOB, desired["metadata"]["name"], ns)
            self.jobs.remember(job)
            self.events.emit(body, "Normal", REASON_CLEANING,
                             f"removing the cluster's keys from Redis at "
                             f"{plan.gcs_ft.redisAddress} (Job {cleanup_job_name(name)})")
        if controller_uid(job) != uid:
            await self._give_up(body, f"Job {ns}/{cleanup_job_name(name)} is not this Ray's")
            return
        outcome, detail = job_outcome(job)
        where = f"Redis at {plan.gcs_ft.redisAddress}"
        if outcome == "Succeeded":
            self.events.emit(body, "Normal", REASON_CLEANED, f"{where}: {detail}")
            await self.keep_finalizer(body, False)
        elif outcome == "Failed":
            await self._give_up(body, f"{where}: {detail}")
        else:
            await self._condition(
                body, "Unknown", "WaitingForRedis",
                f"{where}: {detail}; the Ray is deleted once its keys are removed, or after "
                f"{CLEANUP_DEADLINE_SECONDS} s at most",
            )

    async def _give_up(self, body: Obj, why: str) -> None:
        ns = body["metadata"]["namespace"]
        message = f"the cluster's keys may stay in Redis: {why}"
        log.warning("Ray %s/%s: %s", ns, body["metadata"]["name"], message)
        self.events.emit(body, "Warning", REASON_CLEANUP_FAILED, message)
        await self.keep_finalizer(body, False)

    async def _condition(self, body: Obj, status: str, reason: str, message: str) -> None:
        """The cleanup's condition on the Ray, written only when it changes."""
        meta = body["metadata"]
        conditions = list((body.get("status") or {}).get("conditions") or [])
        mine = next((c for c in conditions if c.get("type") == COND_CLEANUP), None)
        if mine is not None and (mine.get("reason"), mine.get("message")) == (reason, message):
            return
        condition = {"type": COND_CLEANUP, "status": status, "reason": reason,
                     "message": message, "lastTransitionTime": now_rfc3339()}
        conditions = [c for c in conditions if c.get("type") != COND_CLEANUP] + [condition]
        try:
            updated = await self.kube.patch(
                RAY, meta["name"], {"status": {"conditions": conditions}}, meta["namespace"],
                subresource="status",
            )
        except KubeError as exc:
            if exc.not_found:
                return
            raise
        self.rays.remember(updated)
