"""The kinds of object the project reads and writes, and where each lives in the API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ray_operator.api.constants import API_VERSION


@dataclass(frozen=True)
class Kind:
    """Where a kind of object lives in the API."""

    api_version: str
    plural: str
    kind: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The URL path of the collection, or of one object when ``name`` is given."""
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


DEPLOYMENT: Final = Kind("apps/v1", "deployments", "Deployment")
REPLICASET: Final = Kind("apps/v1", "replicasets", "ReplicaSet")
SERVICE: Final = Kind("v1", "services", "Service")
ENDPOINTS: Final = Kind("v1", "endpoints", "Endpoints")
POD: Final = Kind("v1", "pods", "Pod")
CONFIGMAP: Final = Kind("v1", "configmaps", "ConfigMap")
SECRET: Final = Kind("v1", "secrets", "Secret")
EVENT: Final = Kind("v1", "events", "Event")
NAMESPACE: Final = Kind("v1", "namespaces", "Namespace", namespaced=False)
NODE: Final = Kind("v1", "nodes", "Node", namespaced=False)
PERSISTENT_VOLUME: Final = Kind("v1", "persistentvolumes", "PersistentVolume", namespaced=False)
PERSISTENT_VOLUME_CLAIM: Final = Kind("v1", "persistentvolumeclaims", "PersistentVolumeClaim")
SERVICE_ACCOUNT: Final = Kind("v1", "serviceaccounts", "ServiceAccount")
ROLE: Final = Kind("rbac.authorization.k8s.io/v1", "roles", "Role")
ROLE_BINDING: Final = Kind("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding")
JOB: Final = Kind("batch/v1", "jobs", "Job")
NETWORK_POLICY: Final = Kind("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy")
LEASE: Final = Kind("coordination.k8s.io/v1", "leases", "Lease")
CRD: Final = Kind(
    "apiextensions.k8s.io/v1", "customresourcedefinitions", "CustomResourceDefinition", False
)
RAY: Final = Kind(API_VERSION, "rays", "Ray")
RAYJOB: Final = Kind(API_VERSION, "rayjobs", "RayJob")
RAYPIPELINE: Final = Kind(API_VERSION, "raypipelines", "RayPipeline")

KINDS_BY_NAME: Final = {
    k.kind: k
    for k in (
        DEPLOYMENT,
        REPLICASET,
        SERVICE,
        ENDPOINTS,
        POD,
        PERSISTENT_VOLUME,
        PERSISTENT_VOLUME_CLAIM,
        CONFIGMAP,
        SECRET,
        EVENT,
        NAMESPACE,
        SERVICE_ACCOUNT,
        ROLE,
        ROLE_BINDING,
        CRD,
        RAY,
        RAYJOB,
        RAYPIPELINE,
        LEASE,
        NETWORK_POLICY,
        NODE,
        Kind("rbac.authorization.k8s.io/v1", "clusterroles", "ClusterRole", False),
        Kind("rbac.authorization.k8s.io/v1", "clusterrolebindings", "ClusterRoleBinding", False),
        JOB,
    )
}
