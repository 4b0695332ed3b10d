"""The ``RayJob`` resource: one script run on a Ray cluster by the job runner."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ray_operator.api.ray import RaySpec


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


class RunnerContainer(BaseModel):
    """What may be given for the runner's container (named ``runner``)."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["runner"] = Field(description="The runner's container: 'runner'.")
    resources: dict[str, Any] | None = Field(
        default=None, description="Requests and limits, instead of the runner's defaults."
    )
    env: list[dict[str, Any]] | None = Field(default=None, description="More environment.")
    volumeMounts: list[dict[str, Any]] | None = Field(  # noqa: N815
        default=None, description="Mounts of spec.runnerTemplate.spec.volumes."
    )


class RunnerPodSpec(BaseModel):
    """The parts of the runner Pod's spec a user may shape (placement, volumes, pull secrets)."""

    model_config = ConfigDict(extra="forbid")

    nodeSelector: dict[str, str] | None = Field(default=None, description="Node labels.")  # noqa: N815
    tolerations: list[dict[str, Any]] | None = Field(default=None, description="Tolerations.")
    affinity: dict[str, Any] | None = Field(default=None, description="Affinity.")
    priorityClassName: str | None = Field(default=None, description="Priority class.")  # noqa: N815
    imagePullSecrets: list[dict[str, Any]] | None = Field(  # noqa: N815
        default=None, description="Secrets to pull the runner image with."
    )
    volumes: list[dict[str, Any]] | None = Field(default=None, description="More volumes.")
    containers: list[RunnerContainer] | None = Field(
        default=None, max_length=1, description="At most the runner container, to shape it."
    )


class RunnerPodMetadata(BaseModel):
    """Labels and annotations added to the runner Pod."""

    model_config = ConfigDict(extra="forbid")

    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class RunnerTemplate(BaseModel):
    """A partial pod template merged into the runner Pod; what the runner needs is not in it."""

    model_config = ConfigDict(extra="forbid")

    metadata: RunnerPodMetadata | None = None
    spec: RunnerPodSpec | None = None


class ConfigMapKeyRef(BaseModel):
    """One key of a ConfigMap in the job's namespace."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="The ConfigMap's name.")
    key: str = Field(
        min_length=1,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="The key holding the script; also the script's file name in the job.",
    )

    @field_validator("key")
    @classmethod
    def _key_is_a_file_name(cls, value: str) -> str:
        if value.startswith(".."):
            raise ValueError(
                f"{value!r} is not accepted: a key that does not start with '..' (the kubelet "
                "refuses it as a file name)"
            )
        return value


class ScriptFrom(BaseModel):
    """Where a script comes from when it is not written in the resource."""

    model_config = ConfigDict(extra="forbid")

    configMapKeyRef: ConfigMapKeyRef = Field(  # noqa: N815
        description="Mounted into the runner Pod (read by the kubelet, not the operator)."
    )


class RayJobSpec(BaseModel):
    """Desired job: where it runs, what it runs, where its logs go."""

    model_config = ConfigDict(extra="forbid")

    cluster: str | None = Field(default=None, description="Name of a Ray in this namespace.")
    address: str | None = Field(default=None, description="Ray job API URL (instead of cluster).")
    clusterSpec: RaySpec | None = Field(  # noqa: N815
        default=None,
        description=(
            "A Ray of the job's own, named {job}-ray: created before the job runs, deleted "
            "after it ends (shutdownAfterJobFinishes). Instead of cluster or address."
        ),
    )
    shutdownAfterJobFinishes: bool | None = Field(  # noqa: N815
        default=None,
        description="Delete the job's own Ray (clusterSpec) when the job ends; default true.",
    )
    ttlSecondsAfterFinished: int = Field(  # noqa: N815
        default=0,
        ge=0,
        description="Keep the job's own Ray this many seconds after the job ends (to read logs).",
    )
    script: str = Field(
        default="",
        description="Script text, an S3 object (bucket:key, s3://...) or a path; or scriptFrom.",
    )
    scriptLocation: Literal["inline", "s3", "file"] = Field(  # noqa: N815
        default="inline", description="Where script is."
    )
    scriptFrom: ScriptFrom | None = Field(  # noqa: N815
        default=None, description="The script from a ConfigMap key, instead of script."
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
    serviceAccountName: str | None = Field(  # noqa: N815
        default=None,
        description=(
            "Run the runner as this existing ServiceAccount (IRSA, Pod Identity); the per-job "
            "Role is bound to it. Empty: a ServiceAccount of the job's own."
        ),
    )
    runnerTemplate: RunnerTemplate | None = Field(  # noqa: N815
        default=None,
        description=(
            "Labels, annotations, placement, pull secrets, volumes, resources and env for the "
            "runner Pod."
        ),
    )

    def target_error(self) -> str | None:
        """Exactly one of cluster, address and clusterSpec; the message names the fields."""
        given = [bool(self.cluster), bool(self.address), self.clusterSpec is not None]
        if sum(given) != 1:
            own = "given" if self.clusterSpec is not None else "absent"
            return (
                f"spec.cluster={self.cluster!r}, spec.address={self.address!r}, spec.clusterSpec "
                f"{own}: set exactly one (a Ray name in this namespace, a job API URL, or the "
                "spec of a Ray of the job's own)"
            )
        if self.clusterSpec is None and (
            self.shutdownAfterJobFinishes is not None or self.ttlSecondsAfterFinished
        ):
            return (
                f"spec.shutdownAfterJobFinishes={self.shutdownAfterJobFinishes!r}, "
                f"spec.ttlSecondsAfterFinished={self.ttlSecondsAfterFinished!r}: only for a Ray "
                "of the job's own (spec.clusterSpec); a Ray named in spec.cluster is never deleted"
            )
        return None

    @property
    def deletes_its_cluster(self) -> bool:
        """The job's own Ray goes when the job ends."""
        return self.clusterSpec is not None and self.shutdownAfterJobFinishes is not False


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
    rayClusterName: str | None = None  # noqa: N815
    rayClusterStatus: str | None = None  # noqa: N815


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
            {"name": "Cluster", "type": "string", "jsonPath": ".status.rayClusterName",
             "priority": 1},
            {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )
