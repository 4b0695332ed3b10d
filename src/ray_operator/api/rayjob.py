"""The ``RayJob`` resource: one script run on a Ray cluster by the job runner."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RayJobS3(BaseModel):
    """How the job and its runner reach S3."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str | None = Field(default=None, description="S3 endpoint; empty for AWS S3.")
    secure: bool = Field(default=True, description="Use https.")
    secretName: str | None = Field(  # noqa: N815
        default=None,
        description="Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; empty: the AWS chain.",
    )


class RayJobRuntimeEnv(BaseModel):
    """What the job needs on the cluster."""

    model_config = ConfigDict(extra="forbid")

    pip: dict[str, str] | None = Field(default=None, description="pip packages: {name: version}.")
    env: dict[str, str] | None = Field(default=None, description="Environment variables.")
    env_vars: dict[str, str] | None = Field(
        default=None, description="Ray's (and RayPipeline's) name for env: either one, not both."
    )

    @model_validator(mode="after")
    def _env_under_either_name(self) -> RayJobRuntimeEnv:
        if self.env is not None and self.env_vars is not None:
            raise ValueError(
                "runtimeEnv.env and runtimeEnv.env_vars are the same setting: give one of them"
            )
        if self.env_vars is not None:
            self.env, self.env_vars = self.env_vars, None
        return self


class RayJobSpec(BaseModel):
    """Desired job: where it runs, what it runs, where its logs go."""

    model_config = ConfigDict(extra="forbid")

    cluster: str | None = Field(default=None, description="Name of a Ray in this namespace.")
    address: str | None = Field(default=None, description="Ray job API URL (instead of cluster).")
    script: str = Field(description="Script text, an S3 object (bucket:key, s3://...) or a path.")
    scriptLocation: Literal["inline", "s3", "file"] = Field(  # noqa: N815
        default="inline", description="Where script is."
    )
    parameters: dict[str, str] | None = Field(default=None, description="key=value parameters.")
    runtimeEnv: RayJobRuntimeEnv | None = Field(default=None, description="pip and env.")  # noqa: N815
    s3: RayJobS3 | None = Field(default=None, description="S3 settings.")
    uploadBucket: str | None = Field(default=None, description="Bucket for logs and files.")  # noqa: N815
    uploadFiles: list[str] | None = Field(  # noqa: N815
        default=None, description="Absolute paths the runner uploads after the job."
    )
    updateInterval: float = Field(default=1.0, gt=0, description="Seconds between polls.")  # noqa: N815
    kill: bool = Field(default=False, description="Stop the job.")
    activeDeadlineSeconds: int | None = Field(  # noqa: N815
        default=None, ge=1, description="Stop and fail the job after this many seconds."
    )
    runnerImage: str | None = Field(default=None, description="Image of the runner Pod.")  # noqa: N815
    backoffLimit: int = Field(  # noqa: N815
        default=2,
        ge=0,
        description="How many times a runner Pod that ended before its job is replaced.",
    )
    tokenSecretName: str | None = Field(  # noqa: N815
        default=None, description="Secret with key 'token' for Ray's token authentication."
    )

    def target_error(self) -> str | None:
        """Exactly one of cluster and address; the message names both fields."""
        if bool(self.cluster) == bool(self.address):
            return (
                f"spec.cluster={self.cluster!r}, spec.address={self.address!r}: "
                "set exactly one (a Ray name in this namespace, or a job API URL)"
            )
        return None


class RayJobStatus(BaseModel):
    """Observed job, mirrored from the runner's ConfigMap."""

    jobStatus: str | None = None  # noqa: N815
    submissionId: str | None = None  # noqa: N815
    submitTime: str | None = None  # noqa: N815
    startTime: str | None = None  # noqa: N815
    endTime: str | None = None  # noqa: N815
    message: str | None = None
    reason: str | None = None
    logsURL: str | None = None  # noqa: N815
    runnerRestarts: int | None = None  # noqa: N815


def rayjob_crd() -> dict[str, Any]:
    """The CRD of the ``RayJob`` resource."""
    from ray_operator.api.crd import crd

    return crd(
        kind="RayJob",
        plural="rayjobs",
        short_names=["rj"],
        spec_model=RayJobSpec,
        status_model=RayJobStatus,
        printer_columns=[
            {"name": "Status", "type": "string", "jsonPath": ".status.jobStatus"},
            {"name": "Submission", "type": "string", "jsonPath": ".status.submissionId"},
            {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )
