"""kopf handlers for ``RayPipeline``: route watch events to the pipeline reconciler."""

from __future__ import annotations

from typing import Any

import kopf

from ray_operator.api.constants import GROUP, VERSION
from ray_operator.builders.raypipeline import LABEL_PIPELINE
from ray_operator.controllers.raypipeline_reconciler import PipelineReconciler
from ray_operator.controllers.runtime import reconciler


@kopf.on.event(GROUP, VERSION, "raypipelines")
async def raypipeline_event(type: str | None, body: kopf.Body, **_: Any) -> None:  # noqa: A002
    """A RayPipeline was listed, added, changed or deleted."""
    reconciler(PipelineReconciler).on_pipeline_event(type, dict(body))


@kopf.on.event(GROUP, VERSION, "rayjobs", labels={LABEL_PIPELINE: kopf.PRESENT})
async def pipeline_rayjob_event(body: kopf.Body, **_: Any) -> None:
    """A step's RayJob changed state."""
    reconciler(PipelineReconciler).on_job_event(dict(body))


@kopf.on.event(GROUP, VERSION, "rays")
async def pipeline_ray_event(body: kopf.Body, **_: Any) -> None:
    """A Ray changed: a pipeline may be waiting for it to be healthy."""
    reconciler(PipelineReconciler).on_ray_event(dict(body))
