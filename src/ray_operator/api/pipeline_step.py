"""One step, ready to run anywhere: what ``pipeline run``, ``run-step`` and the ASL export share.

A :class:`StepRun` carries everything a step needs except the run id and the Ray address,
which are only known where it runs (a Step Functions execution name, a resource's uid, a local
id). The Kubernetes Job of the Step Functions export passes it to ``ray-operator pipeline
run-step`` as JSON in the environment variable ``RAY_PIPELINE_STEP``.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict

from ray_operator.api.pipeline import (
    PARAM_DATA_BUCKET,
    PARAM_EXPORT_PATH,
    PARAM_INPUT_DIR,
    PARAM_OUTPUT_DIR,
    PARAM_RUN_ID,
    PipelineSpec,
    resolve_script,
    step_output_dir,
)

ENV_STEP: Final = "RAY_PIPELINE_STEP"
ENV_RUN_ID: Final = "RAY_PIPELINE_RUN_ID"
ENV_INPUT: Final = "RAY_PIPELINE_INPUT"
ENV_ADDRESS: Final = "RAY_ADDRESS"
# The script file name on the cluster: what a traceback shows.
SCRIPT_NAME: Final = "step.py"


class StepRun(BaseModel):
    """One step of one pipeline, with the pipeline settings it needs."""

    model_config = ConfigDict(extra="forbid")

    pipeline: str
    step: str
    index: int
    script: str | None = None  # the text, when known where the pipeline is read
    scriptLocation: str | None = None  # noqa: N815  s3://bucket/key or bucket:key
    parameters: dict[str, str]
    runtimeEnv: dict[str, Any] | None = None  # noqa: N815
    activeDeadlineSeconds: int | None = None  # noqa: N815
    exportPath: str  # noqa: N815
    dataBucket: str | None = None  # noqa: N815
    previousStep: str | None = None  # noqa: N815
    # Step Functions: the whole execution's deadline, counted from RAY_PIPELINE_STARTED.
    pipelineTimeoutSeconds: int | None = None  # noqa: N815

    def all_parameters(self, run_id: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The pipeline's parameters for this run, the step's own, then ``extra`` (which win)."""
        base = {
            PARAM_EXPORT_PATH: self.exportPath,
            PARAM_DATA_BUCKET: self.dataBucket or "",
            PARAM_RUN_ID: run_id,
            PARAM_OUTPUT_DIR: step_output_dir(self.exportPath, run_id, self.step),
            PARAM_INPUT_DIR: (
                step_output_dir(self.exportPath, run_id, self.previousStep)
                if self.previousStep
                else ""
            ),
        }
        return {**base, **self.parameters, **(extra or {})}

    def submission_id(self, run_id: str) -> str:
        """The Ray submission id of this step in this run: chosen before submitting."""
        return f"{self.pipeline}-{run_id}-{self.step}"


def step_runs(pipeline_name: str, spec: PipelineSpec, base_dir: Path | None) -> list[StepRun]:
    """Every step of ``spec``, scripts read from files relative to ``base_dir``."""
    runs = []
    for index, step in enumerate(spec.steps):
        text = resolve_script(step, base_dir)
        runs.append(
            StepRun(
                pipeline=pipeline_name,
                step=step.name,
                index=index,
                script=text,
                scriptLocation=None if text is not None else step.script,
                parameters=dict(step.parameters),
                runtimeEnv=step.runtimeEnv,
                activeDeadlineSeconds=step.activeDeadlineSeconds,
                exportPath=spec.exportPath,
                dataBucket=spec.dataBucket,
                previousStep=spec.steps[index - 1].name if index > 0 else None,
            )
        )
    return runs


def entrypoint(script_text: str, parameters: dict[str, str]) -> str:
    """The Ray job entrypoint: the script written to a file, then run with ``--kwargs k=v``.

    The script travels inside the entrypoint, so the step runs on any cluster without uploading
    a working directory; every value is shell-quoted and arrives in the script exactly as given.
    """
    kwargs = " ".join(shlex.quote(f"{k}={v}") for k, v in parameters.items())
    write = (
        "import sys,pathlib;pathlib.Path(sys.argv[1]).write_text(sys.argv[2])"
    )
    script_path = f"/tmp/ray-pipeline-$$-{SCRIPT_NAME}"  # $$: the shell's pid, one per job
    return (
        f"python -c {shlex.quote(write)} {script_path} {shlex.quote(script_text)}"
        f" && python {script_path}" + (f" --kwargs {kwargs}" if kwargs else "")
    )
