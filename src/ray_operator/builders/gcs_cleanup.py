"""Removing a deleted Ray's GCS keys from Redis: a Job in the cluster's own Ray image.

With ``spec.gcsFaultTolerance`` the head keeps the cluster's state in Redis under the Ray's
storage namespace; deleting the ``Ray`` must not leave it there (a later Ray of another uid
never reads it, and it grows). The keys are Ray's format, so Ray's own
``cleanup_redis_storage`` removes them, run as a Job with the head's image, security context
and Redis settings: the operator needs no Redis client and never holds the password. The Job
ends after ``CLEANUP_DEADLINE_SECONDS`` at most, so an unreachable Redis delays a deletion, never
blocks it.
"""

from __future__ import annotations

import copy
from typing import Any, Final

from ray_operator.api.constants import LABEL_CLUSTER, LABEL_MANAGED_BY, LABEL_ROLE, MANAGED_BY
from ray_operator.api.node_shape import RAY_HEAD_CONTAINER
from ray_operator.builders.ray_cluster import (
    ENV_REDIS_ADDRESS,
    ENV_REDIS_PASSWORD,
    ENV_STORAGE_NAMESPACE,
    ClusterPlan,
    gcs_ft_head_env,
    owner_reference,
)

Obj = dict[str, Any]

FINALIZER: Final = "ray.kubeflow.org/gcs-redis-cleanup"
CLEANUP_DEADLINE_SECONDS: Final = 300
ROLE_CLEANUP: Final = "gcs-cleanup"
_SCRIPT: Final = f"""\
import os
from ray._private.gcs_utils import cleanup_redis_storage
host, port = os.environ["{ENV_REDIS_ADDRESS}"].rsplit(":", 1)
namespace = os.environ["{ENV_STORAGE_NAMESPACE}"]
password = os.environ.get("{ENV_REDIS_PASSWORD}", "")
cleanup_redis_storage(
    host=host, port=int(port), password=password, use_ssl=False, storage_namespace=namespace
)
print(f"removed the keys of storage namespace {{namespace}} from {{host}}:{{port}}")
"""


def cleanup_job_name(cluster: str) -> str:
    """The Job that removes a deleted Ray's keys from Redis."""
    return f"{cluster}-gcs-cleanup"


def build_cleanup_job(plan: ClusterPlan) -> Obj:
    """The Job, in the head's image and security context, with the head's Redis settings."""
    assert plan.gcs_ft is not None
    pod = plan.head.template.get("spec") or {}
    containers = pod.get("containers") or [{}]
    ray = next((c for c in containers if c.get("name") == RAY_HEAD_CONTAINER), containers[0])
    container: Obj = {
        "name": "cleanup",
        "image": ray.get("image"),
        "command": ["python", "-c", _SCRIPT],
        "env": gcs_ft_head_env(plan),
    }
    for field in ("imagePullPolicy", "securityContext"):
        if field in ray:
            container[field] = copy.deepcopy(ray[field])
    labels = {LABEL_CLUSTER: plan.name, LABEL_ROLE: ROLE_CLEANUP, LABEL_MANAGED_BY: MANAGED_BY}
    pod_spec: Obj = {"restartPolicy": "Never", "containers": [container]}
    for field in ("securityContext", "imagePullSecrets", "serviceAccountName"):
        if field in pod:
            pod_spec[field] = copy.deepcopy(pod[field])
    owner = {**owner_reference(plan), "blockOwnerDeletion": False}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": cleanup_job_name(plan.name),
            "namespace": plan.namespace,
            "labels": dict(labels),
            "ownerReferences": [owner],
        },
        "spec": {
            "backoffLimit": 4,
            "activeDeadlineSeconds": CLEANUP_DEADLINE_SECONDS,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def job_outcome(job: Obj) -> tuple[str, str]:
    """("Succeeded" | "Failed" | "Running", what Kubernetes says) of a cleanup Job."""
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return "Succeeded", "the keys are removed"
        if condition.get("type") == "Failed":
            return "Failed", f"{condition.get('reason')}: {condition.get('message')}"
    failed = int(status.get("failed") or 0)
    return "Running", f"{failed} failed attempt(s) so far" if failed else "running"
