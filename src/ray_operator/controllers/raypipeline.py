"""The level-triggered reconcile of ``RayPipeline`` resources.

Watch events of pipelines, of their RayJobs and of Rays only say *which* pipeline to look at;
each reconcile reads the pipeline, its RayJobs and its Ray afresh, asks
:func:`~ray_operator.builders.raypipeline.plan_pipeline` what to do, does it, and writes the
status when it changed. A timer at the pipeline's deadline and the periodic resync catch what no
event announces (time passing).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ray_operator.api.constants import REASON_CREATED, REASON_FAILED_CREATE
from ray_operator.api.pipeline import KIND, PipelineSpecError, PipelineStatus, parse_pipeline
from ray_operator.builders.raypipeline import (
    LABEL_PIPELINE,
    REASON_INVALID_SPEC,
    Observed,
    Plan,
    check_buildable,
    cluster_name,
    invalid_status,
    kill_patch,
    pipeline_label,
    plan_pipeline,
)
from ray_operator.kube import RAY, RAYJOB, RAYPIPELINE, Kube, KubeError
from ray_operator.runtime.events import EventRecorder
from ray_operator.runtime.informer import Informer
from ray_operator.runtime.workqueue import WorkQueue
from ray_operator.settings import Settings

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)
_STATUS_FIELDS = frozenset(PipelineStatus.model_fields)


@dataclass
class PipelineController:
    """Routes events to pipelines and reconciles one pipeline at a time per key."""

    kube: Kube
    settings: Settings
    events: EventRecorder
    pipelines: Informer
    jobs: Informer
    rays: Informer
    name: str = "raypipeline"
    timers: dict[Key, asyncio.TimerHandle] = field(default_factory=dict)
    queue: WorkQueue = field(init=False)

    def __post_init__(self) -> None:
        self.queue = WorkQueue(self.name, self._reconcile_key)
        self.pipelines.subscribe(self._on_pipeline)
        self.jobs.subscribe(self._on_job)
        self.rays.subscribe(self._on_ray)

    # --- watch feed -------------------------------------------------------------------------
    def _on_pipeline(self, event_type: str, body: Obj, _: Obj | None) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if event_type == "DELETED":
            self.queue.forget(key)
            self.events.forget(str(meta.get("uid")))
            timer = self.timers.pop(key, None)
            if timer:
                timer.cancel()
            return
        self.queue.add(key)

    def _on_job(self, _: str, body: Obj, __: Obj | None) -> None:
        """A RayJob of a pipeline changed: look at its pipeline."""
        meta = body["metadata"]
        if LABEL_PIPELINE not in (meta.get("labels") or {}):
            return
        for ref in meta.get("ownerReferences") or []:
            if ref.get("kind") == KIND and self.pipelines.get(meta["namespace"], ref.get("name")):
                self.queue.add((meta["namespace"], ref["name"]))

    def _on_ray(self, _: str, body: Obj, __: Obj | None) -> None:
        """A Ray changed (e.g. became healthy): look at the pipelines that run on it."""
        meta = body["metadata"]
        for pipeline in self.pipelines.items():
            pmeta = pipeline["metadata"]
            if pmeta["namespace"] == meta["namespace"] and _cluster_of(pipeline) == meta["name"]:
                self.queue.add((pmeta["namespace"], pmeta["name"]))

    async def close(self) -> None:
        """Cancel the deadline timers."""
        for timer in self.timers.values():
            timer.cancel()
        self.timers.clear()

    def resync(self) -> None:
        """Reconcile every known pipeline (the periodic safety net)."""
        for pipeline in self.pipelines.items():
            self.queue.add((pipeline["metadata"]["namespace"], pipeline["metadata"]["name"]))

    def _wake_at(self, key: Key, when: datetime) -> None:
        old = self.timers.pop(key, None)
        if old:
            old.cancel()
        delay = max(0.0, (when - datetime.now(UTC)).total_seconds()) + 0.5
        loop = asyncio.get_running_loop()
        self.timers[key] = loop.call_later(delay, self.queue.add, key)

    # --- reconcile --------------------------------------------------------------------------
    async def _reconcile_key(self, key: Hashable) -> None:
        assert isinstance(key, tuple)
        namespace, name = key
        body = self.pipelines.get(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return  # the garbage collector removes its RayJobs and cluster
        await self.reconcile(body)

    async def reconcile(self, body: Obj) -> None:
        """Take the next step of one pipeline and write its status."""
        meta = body["metadata"]
        key: Key = (meta["namespace"], meta["name"])
        try:
            spec = parse_pipeline(dict(body), f"RayPipeline {key[0]}/{key[1]}").spec
            problems = check_buildable(spec)
        except PipelineSpecError as exc:
            spec, problems = None, exc.problems
        if spec is None or problems:
            message = "invalid spec: " + "; ".join(problems)
            await self._report_once(body, "Warning", REASON_INVALID_SPEC, message)
            await self._write_status(body, invalid_status(body.get("status"), message))
            return
        observed = await self._observe(body, spec.cluster, spec.rayClusterSpec is not None)
        plan = plan_pipeline(body, spec, observed, self.settings.ray_image)
        await self._act(body, plan)
        await self._write_status(body, plan.status)
        for kind, reason, message in plan.events:
            self.events.emit(body, kind, reason, message)
        if plan.wake_at is not None:
            self._wake_at(key, plan.wake_at)

    async def _observe(self, body: Obj, named: str | None, creates: bool) -> Observed:
        meta = body["metadata"]
        namespace, uid = meta["namespace"], meta.get("uid")
        label = pipeline_label(meta["name"])
        jobs = {
            job["metadata"]["name"]: job
            for job in self.jobs.items()
            if job["metadata"]["namespace"] == namespace
            and (job["metadata"].get("labels") or {}).get(LABEL_PIPELINE) == label
            # The label is a name: only children of this very object (not a namesake) count.
            and any(r.get("uid") == uid for r in job["metadata"].get("ownerReferences") or [])
        }
        ray_name = cluster_name(meta["name"]) if creates else named
        cluster = self.rays.get(namespace, ray_name) if ray_name else None
        return Observed(jobs=jobs, cluster=cluster, now=datetime.now(UTC))

    async def _act(self, body: Obj, plan: Plan) -> None:
        namespace = body["metadata"]["namespace"]
        for kind, cache, desired in (
            (RAY, self.rays, plan.create_cluster),
            (RAYJOB, self.jobs, plan.create_job),
        ):
            if desired is None:
                continue
            noun = f"{desired['kind']} {desired['metadata']['name']}"
            try:
                cache.remember(await self.kube.create(kind, desired))
            except KubeError as exc:
                if not exc.conflict:  # "already exists": created by an earlier reconcile
                    message = f"Failed to create the {noun}: {exc.message}"
                    await self._report_once(body, "Warning", REASON_FAILED_CREATE, message)
                    plan.events.clear()
                    raise
            else:
                self.events.emit(body, "Normal", REASON_CREATED, f"Successfully create the {noun}")
        reason = str(plan.status.get("reason") or "PipelineFinished")
        for job in plan.kill_jobs:
            try:
                await self.kube.patch(RAYJOB, job, kill_patch(reason), namespace)
            except KubeError as exc:
                if not exc.not_found:
                    raise
        if plan.delete_cluster:
            await self.kube.delete(RAY, plan.delete_cluster, namespace)

    async def _write_status(self, body: Obj, status: Obj) -> None:
        previous = {k: v for k, v in (body.get("status") or {}).items() if k in _STATUS_FIELDS}
        if previous == status:
            return
        # A merge patch keeps keys it is not given: clear the ones the new status dropped.
        patch = {**{k: None for k in previous if k not in status}, **status}
        meta = body["metadata"]
        try:
            updated = await self.kube.patch(
                RAYPIPELINE,
                meta["name"],
                {"status": patch},
                meta["namespace"],
                subresource="status",
            )
        except KubeError as exc:
            if not exc.not_found:
                raise
            return
        self.pipelines.remember(updated)

    async def _report_once(self, body: Obj, kind: str, reason: str, message: str) -> None:
        self.events.emit_once(body, kind, reason, message)


def _cluster_of(pipeline: Obj) -> str | None:
    """The Ray a pipeline runs on: the one it creates, or the one it names."""
    spec = pipeline.get("spec") or {}
    if spec.get("rayClusterSpec"):
        return cluster_name(pipeline["metadata"]["name"])
    cluster = spec.get("cluster")
    return cluster if isinstance(cluster, str) else None
