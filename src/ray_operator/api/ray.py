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


class ScaleStrategy(_Closed):
    """Which workers leave when the replica count drops (written by Ray's autoscaler)."""

    workersToDelete: list[str] = Field(  # noqa: N815
        default_factory=list,
        description=(
            "Pods Ray has drained and wants removed; with spec.autoscaling, a scale-down removes "
            "exactly these pods and no other."
        ),
    )


class ReplicaSpec(_Closed):
    """How many pods of one role, and what they run."""

    replicas: StrictInt | None = Field(default=None, ge=0, description="Number of pods.")
    template: PodTemplate | None = Field(default=None, description="The pod template.")
    minReplicas: StrictInt | None = Field(  # noqa: N815
        default=None,
        ge=0,
        description="Fewest workers (spec.autoscaling; default 0); not for the head.",
    )
    maxReplicas: StrictInt | None = Field(  # noqa: N815
        default=None,
        ge=0,
        description="Most workers (required with spec.autoscaling); not for the head.",
    )
    scaleStrategy: ScaleStrategy | None = Field(  # noqa: N815
        default=None, description="Workers to remove on the next scale-down (autoscaler)."
    )


class WorkerGroup(_Closed):
    """One more group of workers, with a pod shape of its own (GPU nodes, large memory)."""

    name: str = Field(
        description=(
            "The group's name: a DNS label; its Deployment is {name}-worker-{group}, at most "
            "46 characters so its pods' names stay valid host names."
        )
    )
    replicas: StrictInt | None = Field(default=None, ge=0, description="Number of pods (1).")
    template: PodTemplate | None = Field(
        default=None, description="The pod template (default: the default worker template)."
    )
    rayResources: dict[str, float] | None = Field(  # noqa: N815
        default=None,
        description=(
            "Custom Ray resources of each node of the group ({name: amount}, passed as ray "
            "start --resources); GPUs and memory come from the Ray container's limits."
        ),
    )
    minReplicas: StrictInt | None = Field(  # noqa: N815
        default=None, ge=0, description="Fewest workers (spec.autoscaling; default 0)."
    )
    maxReplicas: StrictInt | None = Field(  # noqa: N815
        default=None, ge=0, description="Most workers (required with spec.autoscaling)."
    )
    scaleStrategy: ScaleStrategy | None = Field(  # noqa: N815
        default=None, description="Workers to remove on the next scale-down (autoscaler)."
    )


class SecretKeyRef(_Closed):
    """One key of a Secret in the Ray's namespace."""

    name: str = Field(min_length=1, description="The Secret's name.")
    key: str = Field(min_length=1, description="The key holding the value.")


class GcsFaultTolerance(_Closed):
    """Ray's GCS fault tolerance: the head keeps the cluster's state in an external Redis."""

    redisAddress: str = Field(  # noqa: N815
        description="host:port of the Redis the head writes to (e.g. redis.ray.svc:6379)."
    )
    redisPasswordSecret: SecretKeyRef | None = Field(  # noqa: N815
        default=None, description="The Redis password, from a Secret (none: no password)."
    )
    externalStorageNamespace: str | None = Field(  # noqa: N815
        default=None,
        description="The Ray's keys in Redis are under this name (default: the Ray's uid).",
    )


class RayAuth(_Closed):
    """Ray's token authentication for the cluster's dashboard, job API and GCS."""

    mode: Literal["token"] = Field(
        description=(
            "token: the operator makes a Secret {name}-auth (key 'token', random) and gives "
            "every Ray container RAY_AUTH_MODE=token and RAY_AUTH_TOKEN from it; RayJobs and "
            "pipeline steps on this cluster use it without further settings."
        )
    )


class NetworkPeer(_Closed):
    """Who may reach the dashboard and job API: as a NetworkPolicy peer."""

    podSelector: dict[str, Any] | None = Field(  # noqa: N815
        default=None, description="Pods (in this namespace, or those of namespaceSelector)."
    )
    namespaceSelector: dict[str, Any] | None = Field(  # noqa: N815
        default=None, description="Namespaces (all their pods, or those of podSelector)."
    )
    ipBlock: dict[str, Any] | None = Field(  # noqa: N815
        default=None, description="Addresses: {cidr, except} (e.g. the apiserver's, a VPN's)."
    )


class RayNetworkPolicy(_Closed):
    """A NetworkPolicy for the cluster's pods (enforced only by a CNI that supports it)."""

    enabled: StrictBool = Field(description="true: the operator keeps a NetworkPolicy {name}-ray.")
    allowFrom: list[NetworkPeer] = Field(  # noqa: N815
        default_factory=list,
        description=(
            "Peers admitted to the dashboard and job API (8265), beside the cluster's own pods "
            "(all ports), RayJob runner pods of this namespace and the operator."
        ),
    )


# Ray's own default: a worker idle this long is drained and removed.
DEFAULT_IDLE_TIMEOUT_SECONDS = 60


class Autoscaling(_Closed):
    """Ray's autoscaler sizes the worker groups within their minReplicas and maxReplicas."""

    enabled: StrictBool = Field(
        description=(
            "true: an autoscaler Deployment {name}-autoscaler (the head's Ray image) runs Ray's "
            "autoscaler, which sets the worker groups' replicas and names the idle workers to "
            "remove; the operator removes exactly those."
        )
    )
    idleTimeoutSeconds: StrictInt | None = Field(  # noqa: N815
        default=None,
        ge=0,
        description=f"Seconds a worker stays idle before Ray removes it "
        f"({DEFAULT_IDLE_TIMEOUT_SECONDS}).",
    )


class RaySpec(_Closed):
    """Desired state of a Ray cluster: one head, N workers."""

    head: ReplicaSpec | None = Field(
        default=None, description="The head (default: one pod of the default head template)."
    )
    worker: ReplicaSpec = Field(description="The workers.")
    workerGroups: list[WorkerGroup] | None = Field(  # noqa: N815
        default=None,
        description="More worker groups beside spec.worker, each a Deployment of its own.",
    )
    suspend: StrictBool | None = Field(
        default=None,
        description="true: every pod of the cluster stops (both Deployments at 0, the Service "
        "kept); false or absent: the cluster runs as declared.",
    )
    auth: RayAuth | None = Field(default=None, description="Ray's token authentication.")
    gcsFaultTolerance: GcsFaultTolerance | None = Field(  # noqa: N815
        default=None,
        description="Keep the GCS in Redis: a head that dies comes back with the cluster's state.",
    )
    networkPolicy: RayNetworkPolicy | None = Field(  # noqa: N815
        default=None, description="Who may reach the cluster's pods."
    )
    autoscaling: Autoscaling | None = Field(
        default=None, description="Ray's autoscaler sizes the worker groups."
    )


class ReplicaStatus(BaseModel):
    """Replica counts observed on a child Deployment."""

    replicas: int = 0
    readyReplicas: int = 0  # noqa: N815
    availableReplicas: int = 0  # noqa: N815
    updatedReplicas: int = 0  # noqa: N815


class GroupStatus(ReplicaStatus):
    """Replica counts of one worker group's Deployment."""

    name: str
    desired: int = 0


class AutoscalingGroup(BaseModel):
    """One worker group as the autoscaler sizes it."""

    name: str  # the Ray node type: worker, or worker-<group>
    minReplicas: int = 0  # noqa: N815
    maxReplicas: int = 0  # noqa: N815
    desired: int = 0
    current: int = 0


class AutoscalingNode(BaseModel):
    """One pod of an autoscaled cluster, as Ray's autoscaler reads it (its only view of pods)."""

    pod: str
    type: str  # head, worker or worker-<group>
    state: str  # pending, running, failed
    ip: str | None = None


class AutoscalingStatus(BaseModel):
    """What an autoscaled cluster's autoscaler sees, and how far each group is."""

    groups: list[AutoscalingGroup] = Field(default_factory=list)
    nodes: list[AutoscalingNode] = Field(default_factory=list)


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
    workerGroups: list[GroupStatus] = Field(default_factory=list)  # noqa: N815
    conditions: list[Condition] = Field(default_factory=list)
    startTime: str | None = None  # noqa: N815
    lastReconcileTime: str | None = None  # noqa: N815
    observedGeneration: int | None = None  # noqa: N815
    # Strings for `kubectl get rays` columns, and the scale subresource's selector.
    headReady: str | None = None  # noqa: N815
    workersReady: str | None = None  # noqa: N815
    health: str | None = None
    workerSelector: str | None = None  # noqa: N815
    autoscaling: AutoscalingStatus | None = None


class RayResource(BaseModel):
    """A whole ``Ray`` object as the operator reads it."""

    model_config = ConfigDict(extra="allow")

    apiVersion: str = API_VERSION  # noqa: N815
    kind: str = "Ray"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: RaySpec
    status: RayStatus | None = None
