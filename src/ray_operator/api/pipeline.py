"""Pipelines: ordered Ray job steps with a deadline, a shared volume and a data bucket.

One definition runs everywhere: ``ray-operator pipeline run`` (any Ray cluster), the
``RayPipeline`` resource (in the cluster) and ``ray-operator pipeline export-asl`` (AWS Step
Functions). A pipeline file is a ``RayPipeline`` manifest; its ``spec`` is :class:`PipelineSpec`.

How a step uses the previous step's outputs
-------------------------------------------
Every step receives these parameters, beside its own (``--kwargs key=value``):

``export_path``  the pipeline's export path (the PVC mount when a PVC is given);
``data_bucket``  the data bucket ("" when none);
``run_id``       one id per run (local id, resource uid, Step Functions execution name);
``output_dir``   ``<export_path>/<run_id>/<step name>``: where the step writes what it produces;
``input_dir``    the previous step's ``output_dir`` ("" for the first step).

So a step reads its inputs from ``input_dir`` and never needs a hard-coded path; runs never
overwrite each other. A step's own parameters win over these names only if it sets them itself.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ray_operator.api.constants import API_VERSION
from ray_operator.api.ray import RaySpec
from ray_operator.api.rayjob import ScriptFrom

KIND: Final = "RayPipeline"
DEFAULT_TIMEOUT_MINUTES: Final = 360
DEFAULT_EXPORT_PATH: Final = "/ray/export/"
# Names end up in Kubernetes object names ("<pipeline>-<step>-<suffix>"), so keep them short.
STEP_NAME_MAX: Final = 30
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PARAM_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Parameters every step receives (see the module docstring).
PARAM_EXPORT_PATH: Final = "export_path"
PARAM_DATA_BUCKET: Final = "data_bucket"
PARAM_RUN_ID: Final = "run_id"
PARAM_OUTPUT_DIR: Final = "output_dir"
PARAM_INPUT_DIR: Final = "input_dir"

# Step and pipeline states shown in status and in the CLI summary.
STEP_PENDING: Final = "PENDING"
STEP_RUNNING: Final = "RUNNING"
STEP_SUCCEEDED: Final = "SUCCEEDED"
STEP_FAILED: Final = "FAILED"
STEP_STOPPED: Final = "STOPPED"
STEP_SKIPPED: Final = "SKIPPED"
PIPELINE_SUCCEEDED: Final = "Succeeded"
PIPELINE_FAILED: Final = "Failed"
PIPELINE_RUNNING: Final = "Running"
PIPELINE_PENDING: Final = "Pending"
REASON_DEADLINE_EXCEEDED: Final = "DeadlineExceeded"
REASON_STEP_FAILED: Final = "StepFailed"


# The original ``bucket:key``: an S3 bucket name (RFC-style, 3 to 63 characters), then a key
# without spaces. ``print('a:b')`` is neither.
_BUCKET_KEY: Final = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]:\S+")


class PipelineStep(BaseModel):
    """One step: a Ray job as in ``RayJob`` (script, parameters, runtime env, deadline, retries)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(description="Step name: a DNS label of at most 30 characters.")
    script: str = Field(
        default="",
        description=(
            "The Python script: a path relative to the pipeline file, s3://bucket/key, "
            "bucket:key, or the script text itself when it spans several lines; or scriptFrom."
        ),
    )
    scriptFrom: ScriptFrom | None = Field(  # noqa: N815
        default=None,
        description=(
            "The script from a ConfigMap key in the pipeline's namespace (RayPipeline only; "
            "`ray-operator pipeline apply` makes one from the files beside the pipeline)."
        ),
    )
    scriptLocation: Literal["inline", "file", "s3"] | None = Field(  # noqa: N815
        default=None,
        description=(
            "Where script is: its text (inline), a file (relative to the pipeline file, or an "
            "absolute path in the runner image) or an S3 object. Unset: guessed (text when it "
            "has a line break, S3 for s3:// or bucket:key, else a file), with a warning."
        ),
    )
    parameters: dict[str, str] = Field(
        default_factory=dict, description="Passed to the script as --kwargs key=value."
    )
    runtimeEnv: dict[str, Any] | None = Field(  # noqa: N815
        default=None, description="Ray runtime environment (pip, env_vars, ...)."
    )
    activeDeadlineSeconds: int | None = Field(  # noqa: N815
        default=None, ge=1, description="Stop the step after this many seconds."
    )
    retries: int = Field(default=0, ge=0, le=10, description="Extra attempts after a failure.")

    @field_validator("name")
    @classmethod
    def _name_is_dns_label(cls, value: str) -> str:
        if len(value) > STEP_NAME_MAX or not _DNS_LABEL.match(value):
            raise ValueError(
                f"{value!r} is not accepted: use lower-case letters, digits and '-', starting "
                f"and ending with a letter or digit, at most {STEP_NAME_MAX} characters"
            )
        return value

    @field_validator("script")
    @classmethod
    def _script_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("'' is not accepted: give a file path, s3://bucket/key or bucket:key")
        return value

    @model_validator(mode="after")
    def _s3_location_is_one(self) -> PipelineStep:
        if self.scriptFrom is not None:
            if self.script or self.scriptLocation is not None:
                raise ValueError(
                    "script and scriptFrom are both given: set one (the script or where it is, "
                    "or the ConfigMap key that holds it)"
                )
            return self
        if not self.script:
            raise ValueError(
                "no script: give script (a file path, s3://bucket/key, bucket:key or the text) "
                "or scriptFrom.configMapKeyRef {name, key}"
            )
        if self.scriptLocation == "s3" and not (
            self.script.startswith("s3://") or _BUCKET_KEY.fullmatch(self.script)
        ):
            raise ValueError(
                f"script {self.script!r} with scriptLocation 's3' is not accepted: write "
                "s3://bucket/key or bucket:key"
            )
        return self

    @field_validator("parameters", mode="before")
    @classmethod
    def _parameters_are_strings(cls, value: Any) -> Any:
        # YAML turns 3 into an int and yes into a bool; a script gets text either way.
        if isinstance(value, dict):
            out: dict[str, str] = {}
            for key, item in value.items():
                if not isinstance(key, str) or not _PARAM_KEY.match(key):
                    raise ValueError(
                        f"key {key!r} is not accepted: use letters, digits and '_', "
                        "not starting with a digit"
                    )
                if isinstance(item, dict | list) or item is None:
                    raise ValueError(
                        f"{key}={item!r} is not accepted: values are strings, numbers or booleans"
                    )
                out[key] = str(item).lower() if isinstance(item, bool) else str(item)
            return out
        return value

    @property
    def script_location(self) -> str:
        """``scriptLocation`` when given, else the guess of the original format.

        The guess: any line break makes it text (a one-line ``script: |`` block ends with one,
        and no path or S3 location has one); ``s3://`` or ``bucket:key`` is S3; else a file.
        """
        if self.scriptFrom is not None:
            return "configMap"
        if self.scriptLocation is not None:
            return self.scriptLocation
        if "\n" in self.script:
            return "inline"
        if self.script.startswith("s3://") or _BUCKET_KEY.fullmatch(self.script):
            return "s3"
        return "file"

    @property
    def script_is_inline(self) -> bool:
        """The script text is written in the pipeline file itself."""
        return self.script_location == "inline"

    @property
    def script_is_s3(self) -> bool:
        """The script lives in S3 (``s3://bucket/key`` or the original ``bucket:key``)."""
        return self.script_location == "s3"


class PipelineSpec(BaseModel):
    """What to run, in which order, with which deadline, volume and bucket."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    steps: list[PipelineStep] = Field(min_length=1, description="Steps, run one after another.")
    timeoutMinutes: int = Field(  # noqa: N815
        default=DEFAULT_TIMEOUT_MINUTES, ge=1, description="Deadline of the whole pipeline."
    )
    pvcName: str | None = Field(  # noqa: N815
        default=None, description="PersistentVolumeClaim mounted at exportPath (none: no mount)."
    )
    exportPath: str = Field(  # noqa: N815
        default=DEFAULT_EXPORT_PATH, description="Where steps write; must start with '/'."
    )
    dataBucket: str | None = Field(  # noqa: N815
        default=None, description="S3 bucket the steps may read and write."
    )
    cluster: str | None = Field(
        default=None, description="Name of a Ray resource in the same namespace to run on."
    )
    address: str | None = Field(default=None, description="Ray job API URL to run on.")
    rayClusterSpec: RaySpec | None = Field(  # noqa: N815
        default=None,
        description="Create this Ray cluster for the run (RayPipeline only), PVC mounted.",
    )
    keepCluster: bool = Field(  # noqa: N815
        default=False, description="Keep the created Ray cluster after the run."
    )

    @field_validator("exportPath")
    @classmethod
    def _export_path_absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"{value!r} is not accepted: give an absolute path starting with '/'")
        return value

    @field_validator("pvcName")
    @classmethod
    def _pvc_name(cls, value: str | None) -> str | None:
        if value == "":
            return None  # the original treated an empty name as "no PVC"
        if value is not None and (
            len(value) > 253 or not _DNS_LABEL.match(value.replace(".", "-"))
        ):
            raise ValueError(f"{value!r} is not accepted: give a Kubernetes object name")
        return value

    @field_validator("dataBucket")
    @classmethod
    def _bucket(cls, value: str | None) -> str | None:
        if value == "":
            return None
        if value is not None and not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", value):
            raise ValueError(
                f"{value!r} is not accepted: give an S3 bucket name (3-63 lower-case letters, "
                "digits, '.' or '-'), not a URL"
            )
        return value

    @model_validator(mode="after")
    def _unique_steps(self) -> PipelineSpec:
        seen: set[str] = set()
        for step in self.steps:
            if step.name in seen:
                raise ValueError(f"step name {step.name!r} is used twice: names must be unique")
            seen.add(step.name)
        if self.cluster and self.address:
            raise ValueError("give cluster or address, not both")
        return self

    @property
    def timeout_seconds(self) -> int:
        """The whole pipeline's deadline in seconds."""
        return self.timeoutMinutes * 60


def step_output_dir(export_path: str, run_id: str, step: str) -> str:
    """``<export_path>/<run_id>/<step>`` without doubled slashes."""
    return f"{export_path.rstrip('/')}/{run_id}/{step}"


class StepStatus(BaseModel):
    """One step as shown in the resource's status."""

    name: str
    state: str = STEP_PENDING
    rayJob: str | None = None  # noqa: N815
    submissionId: str | None = None  # noqa: N815
    startTime: str | None = None  # noqa: N815
    endTime: str | None = None  # noqa: N815
    message: str | None = None


class PipelineStatus(BaseModel):
    """Observed state of a pipeline run."""

    phase: str | None = None
    reason: str | None = None
    message: str | None = None
    runId: str | None = None  # noqa: N815
    currentStep: str | None = None  # noqa: N815
    rayCluster: str | None = None  # noqa: N815
    startTime: str | None = None  # noqa: N815
    endTime: str | None = None  # noqa: N815
    steps: list[StepStatus] = Field(default_factory=list)


class RayPipelineResource(BaseModel):
    """A whole ``RayPipeline`` object (also the format of a pipeline file)."""

    model_config = ConfigDict(extra="allow")

    apiVersion: str = API_VERSION  # noqa: N815
    kind: str = KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: PipelineSpec
    status: PipelineStatus | None = None

    @property
    def name(self) -> str:
        """``metadata.name`` (``pipeline`` when the file has none)."""
        return str(self.metadata.get("name") or "pipeline")


class PipelineSpecError(ValueError):
    """A pipeline file that cannot be used; the message names each field, value and the fix."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: invalid pipeline:\n" + "\n".join(f"  - {p}" for p in problems))
        self.source = source
        self.problems = problems


def _describe(error: ValidationError, prefix: str) -> list[str]:
    problems = []
    for item in error.errors():
        loc = ".".join(str(part) for part in (prefix, *item["loc"]) if part != "")
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see docs/pipelines.md for the fields)"
        elif "is not accepted" not in msg:
            msg = f"{item.get('input')!r} is not accepted: {msg}"
        problems.append(f"{loc}: {msg}")
    return problems


def parse_pipeline(data: Any, source: str = "<pipeline>") -> RayPipelineResource:
    """A pipeline from parsed YAML: a ``RayPipeline`` manifest or a bare spec."""
    if not isinstance(data, dict):
        raise PipelineSpecError(source, [f"the document is {type(data).__name__}, not a mapping"])
    if "spec" not in data and "steps" in data:
        data = {"spec": data}
    kind = data.get("kind", KIND)
    if kind != KIND:
        raise PipelineSpecError(source, [f"kind: {kind!r} is not accepted: use {KIND!r}"])
    try:
        return RayPipelineResource.model_validate(data)
    except ValidationError as exc:
        raise PipelineSpecError(source, _describe(exc, "")) from None


def load_pipeline(path: str | Path) -> RayPipelineResource:
    """Read and validate a pipeline file (YAML)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise PipelineSpecError(str(path), [f"cannot read the file: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        raise PipelineSpecError(str(path), [f"not valid YAML: {exc}"]) from None
    return parse_pipeline(data, str(path))


def resolve_script(step: PipelineStep, base_dir: Path | None) -> str | None:
    """The script's text when it is inline or a local file; None when it lives in S3."""
    if step.scriptFrom is not None:
        ref = step.scriptFrom.configMapKeyRef
        raise PipelineSpecError(
            str(base_dir or "."),
            [f"steps[{step.name}].scriptFrom: ConfigMap {ref.name!r} key {ref.key!r} is read in "
             "the cluster only (RayPipeline); here give script: a file beside the pipeline, "
             "s3://bucket/key or the text"],
        )
    if step.script_is_inline:
        return step.script
    if step.script_is_s3:
        return None
    path = Path(step.script)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        return path.read_text()
    except OSError as exc:
        raise PipelineSpecError(
            str(path),
            [f"steps[{step.name}].script: {step.script!r} cannot be read ({exc.strerror}); "
             "give a file path relative to the pipeline file, s3://bucket/key or bucket:key"],
        ) from None


def raypipeline_crd() -> dict[str, Any]:
    """The CRD of the ``RayPipeline`` resource."""
    from ray_operator.api.crd import crd

    definition = crd(
        kind=KIND,
        plural="raypipelines",
        short_names=["rpl"],
        spec_model=PipelineSpec,
        status_model=PipelineStatus,
        printer_columns=[
            {"name": "Cluster", "type": "string", "jsonPath": ".status.rayCluster"},
            {"name": "Step", "type": "string", "jsonPath": ".status.currentStep"},
            {"name": "State", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )
    # Parameters may be written as numbers or booleans (`epochs: 8`): the apiserver keeps them
    # as given and the model turns them into text, as it does for a pipeline file.
    schema = definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    step = schema["properties"]["spec"]["properties"]["steps"]["items"]
    step["properties"]["parameters"] = {
        "type": "object",
        "description": step["properties"]["parameters"].get("description", ""),
        "x-kubernetes-preserve-unknown-fields": True,
    }
    return definition
