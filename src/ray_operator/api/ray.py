"""The ``Ray`` resource: its typed model, defaults and validation.

The template of each replica set is a full Kubernetes PodTemplateSpec. The model types the parts
the operator reads (containers, images, ports) and keeps everything else as given, so that a
manifest written for the original operator applies unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from ray_operator.api.constants import API_VERSION


class _Open(BaseModel):
    """A model that keeps fields it does not know (they are checked and reported separately)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class _Closed(BaseModel):
    """A model of the resource's own fields: a field it does not know is a typo, and an error.

    Its CRD schema has no ``x-kubernetes-preserve-unknown-fields``, so the apiserver refuses the
    field too (``kubectl apply`` validates strictly) instead of keeping it unread.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ContainerPort(_Open):
    """A port of a container."""

    containerPort: StrictInt = Field(  # noqa: N815
        ge=1, le=65535, description="Port number on the pod's IP."
    )
    name: str | None = Field(default=None, description="IANA_SVC_NAME, unique within the pod.")
    protocol: Literal["TCP", "UDP", "SCTP"] | None = Field(
        default=None, description="TCP, UDP or SCTP."
    )


class Container(_Open):
    """The parts of a container the operator reads; the rest is kept as written."""

    name: str = Field(description="Container name.")
    image: str | None = Field(default=None, description="Container image.")
    command: list[str] | None = Field(default=None, description="Entrypoint array.")
    args: list[str] | None = Field(default=None, description="Arguments to the entrypoint.")
    ports: list[ContainerPort] | None = Field(default=None, description="Ports to expose.")


class PodSpec(_Open):
    """A pod spec; ``containers`` is read, the rest is kept as written."""

    containers: list[Container] = Field(description="Containers of the pod.")


class PodTemplate(_Open):
    """A Kubernetes PodTemplateSpec."""

    metadata: dict[str, Any] | None = Field(default=None, description="Labels and annotations.")
    spec: PodSpec | None = Field(default=None, description="The pod spec.")


class ReplicaSpec(_Closed):
    """How many pods of one role, and what they run."""

    replicas: StrictInt | None = Field(default=None, ge=0, description="Number of pods.")
    template: PodTemplate | None = Field(default=None, description="The pod template.")


class RaySpec(_Closed):
    """Desired state of a Ray cluster: one head, N workers."""

    head: ReplicaSpec | None = Field(
        default=None, description="The head (default: one pod of the default head template)."
    )
    worker: ReplicaSpec = Field(description="The workers.")
    suspend: StrictBool | None = Field(
        default=None,
        description="true: every pod of the cluster stops (both Deployments at 0, the Service "
        "kept); false or absent: the cluster runs as declared.",
    )


class ReplicaStatus(BaseModel):
    """Replica counts observed on a child Deployment."""

    replicas: int = 0
    readyReplicas: int = 0  # noqa: N815
    availableReplicas: int = 0  # noqa: N815
    updatedReplicas: int = 0  # noqa: N815


class Condition(BaseModel):
    """One condition, as shown by ``kubectl describe ray``."""

    type: str
    status: str
    reason: str | None = None
    message: str | None = None
    lastTransitionTime: str | None = None  # noqa: N815
    lastUpdateTime: str | None = None  # noqa: N815


class RayStatus(BaseModel):
    """Observed state of a Ray cluster."""

    head: ReplicaStatus | None = None
    worker: ReplicaStatus | None = None
    conditions: list[Condition] = Field(default_factory=list)
    startTime: str | None = None  # noqa: N815
    lastReconcileTime: str | None = None  # noqa: N815
    observedGeneration: int | None = None  # noqa: N815
    # Strings for `kubectl get rays` columns, and the scale subresource's selector.
    headReady: str | None = None  # noqa: N815
    workersReady: str | None = None  # noqa: N815
    health: str | None = None
    workerSelector: str | None = None  # noqa: N815


class RayResource(BaseModel):
    """A whole ``Ray`` object as the operator reads it."""

    model_config = ConfigDict(extra="allow")

    apiVersion: str = API_VERSION  # noqa: N815
    kind: str = "Ray"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: RaySpec
    status: RayStatus | None = None
