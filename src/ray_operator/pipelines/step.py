"""Moved to :mod:`ray_operator.api.pipeline_step` (builders may only use ``api``)."""

from ray_operator.api.pipeline_step import (
    ENV_ADDRESS,
    ENV_INPUT,
    ENV_RUN_ID,
    ENV_STEP,
    SCRIPT_NAME,
    StepRun,
    entrypoint,
    step_runs,
)

__all__ = [
    "ENV_ADDRESS",
    "ENV_INPUT",
    "ENV_RUN_ID",
    "ENV_STEP",
    "SCRIPT_NAME",
    "StepRun",
    "entrypoint",
    "step_runs",
]
