"""Names shared by the models, builders and controllers: one place for each of them."""

import re
from typing import Final

GROUP: Final = "ray.kubeflow.org"
VERSION: Final = "v1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

# The Ray version this project is tested with; the default image follows it.
RAY_VERSION: Final = "2.60.0"
DEFAULT_RAY_IMAGE: Final = f"rayproject/ray:{RAY_VERSION}"

FIELD_MANAGER: Final = "ray-operator"

# Labels on every child: select them by cluster and role.
LABEL_CLUSTER: Final = f"{GROUP}/cluster"
LABEL_ROLE: Final = f"{GROUP}/role"
LABEL_WORKER_GROUP: Final = f"{GROUP}/worker-group"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
# On the pods of a Ray with spec.autoscaling (the operator watches those pods only).
LABEL_AUTOSCALING: Final = f"{GROUP}/autoscaling"
# On every child of a RayJob: the RayJob's name.
LABEL_RAYJOB: Final = f"{GROUP}/rayjob"
MANAGED_BY: Final = "ray-operator"
ROLE_HEAD: Final = "head"
ROLE_WORKER: Final = "worker"
ROLE_AUTOSCALER: Final = "autoscaler"

# On a Ray: the defaults it was given (builder revision, default templates), fixed at creation.
ANNOTATION_DEFAULTS: Final = f"{GROUP}/defaults"
# On children made by the first release, which compared a hash of what it built (no longer read).
ANNOTATION_SPEC_HASH: Final = f"{GROUP}/spec-hash"

# Autoscaled clusters: Ray's autoscaler writes on the Ray the requests no group can serve
# (JSON); the operator turns them into a condition and an event.
ANNOTATION_INFEASIBLE: Final = f"{GROUP}/autoscaler-infeasible"
# ... and the last launch or removal it asked for (JSON), the reason of ScaledUp / ScaledDown.
ANNOTATION_AUTOSCALER_REQUEST: Final = f"{GROUP}/autoscaler-request"

ENV_NODE_IP: Final = "RAY_NODE_IP"
ENV_HEAD_SERVICE: Final = "RAY_HEAD_SERVICE"
ENV_CPU_LIMIT: Final = "RAY_CPU_LIMIT"

PORT_GCS: Final = 6379
PORT_DASHBOARD: Final = 8265
PORT_DASHBOARD_AGENT: Final = 52365  # Ray's default; serves the raylet health check
PORT_CLIENT: Final = 10001
PORT_METRICS: Final = 8080

# Condition types, as the original operator showed them under `kubectl describe ray`.
COND_HEALTH: Final = "Health"
COND_HEAD_AVAILABLE: Final = "RayHeadDeploymentAvailable"
COND_HEAD_PROGRESSING: Final = "RayHeadDeploymentProgressing"
COND_HEAD_REPLICA_FAILURE: Final = "RayHeadDeploymentReplicaFailure"
COND_WORKER_AVAILABLE: Final = "RayWorkerDeploymentAvailable"
COND_WORKER_PROGRESSING: Final = "RayWorkerDeploymentProgressing"
COND_WORKER_REPLICA_FAILURE: Final = "RayWorkerDeploymentReplicaFailure"
COND_AUTOSCALER_AVAILABLE: Final = "RayAutoscalerAvailable"
COND_REQUESTS_FEASIBLE: Final = "RayRequestsFeasible"

# Event reasons.
REASON_CREATED: Final = "SuccessfullyCreate"
REASON_UPDATED: Final = "SuccessfullyUpdate"
REASON_DELETED: Final = "SuccessfullyDelete"
REASON_FAILED_CREATE: Final = "FailedCreate"
REASON_FAILED_UPDATE: Final = "FailedUpdate"
REASON_FAILED_DELETE: Final = "FailedDelete"
REASON_INVALID_SPEC: Final = "InvalidSpec"
REASON_SUSPENDED: Final = "Suspended"
REASON_UNKNOWN_FIELD: Final = "UnknownField"
REASON_SCALED_UP: Final = "ScaledUp"
REASON_SCALED_DOWN: Final = "ScaledDown"
REASON_REPLICAS_CLAMPED: Final = "ReplicasClamped"
REASON_SCALE_DOWN_HELD: Final = "ScaleDownHeld"
REASON_INFEASIBLE: Final = "InfeasibleRequest"

# A DNS subdomain (RFC 1123): the names of ServiceAccounts, Secrets and most objects.
DNS_SUBDOMAIN: Final = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
