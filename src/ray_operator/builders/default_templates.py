"""The head and worker pod templates used when a ``Ray`` resource gives none, by revision.

A cluster keeps the defaults it was created with (recorded on the ``Ray``, see
:mod:`ray_operator.builders.defaults`), so a revision, once released, never changes: a new default
is a new revision. Revision 1 is what the first release built; revision 2 runs as the image's
non-root user and passes Pod Security ``restricted``. Revision 3 keeps revision 2's templates;
what changed is that the builder adds a wait for the GCS to every worker (builders.gcs_wait).
"""

from __future__ import annotations

from typing import Any

from ray_operator.api.constants import (
    ENV_CPU_LIMIT,
    ENV_HEAD_SERVICE,
    ENV_NODE_IP,
    PORT_CLIENT,
    PORT_DASHBOARD,
    PORT_DASHBOARD_AGENT,
    PORT_GCS,
    PORT_METRICS,
)

HEAD_CONTAINER = "ray-head"
WORKER_CONTAINER = "ray-worker"


def _cpu_limit_env(container: str) -> dict[str, Any]:
    # Ray would otherwise count the node's CPUs, not the container's share; without a limit
    # Kubernetes gives the node's allocatable CPUs, which is what Ray would have seen anyway.
    return {
        "name": ENV_CPU_LIMIT,
        "valueFrom": {
            "resourceFieldRef": {
                "containerName": container,
                "resource": "limits.cpu",
                "divisor": "1",
            }
        },
    }


def _probe(path: str, port: int) -> dict[str, Any]:
    # Ready once Ray answers on its own health endpoints (GCS on the head, raylet on workers).
    return {
        "httpGet": {"path": path, "port": port},
        "initialDelaySeconds": 5,
        "periodSeconds": 5,
        "timeoutSeconds": 2,
        "failureThreshold": 6,
    }


def _shm() -> tuple[dict[str, Any], dict[str, Any]]:
    # Ray's object store lives in /dev/shm; the container default of 64 MiB is far too small.
    volume = {"name": "dshm", "emptyDir": {"medium": "Memory"}}
    mount = {"name": "dshm", "mountPath": "/dev/shm"}
    return volume, mount


def default_head_template_v1(ray_image: str) -> dict[str, Any]:
    """Revision 1 of the head pod: GCS, dashboard / job API, client server and metrics."""
    volume, mount = _shm()
    return {
        "spec": {
            "containers": [
                {
                    "name": HEAD_CONTAINER,
                    "image": ray_image,
                    "command": ["ray"],
                    "args": [
                        "start",
                        "--head",
                        f"--port={PORT_GCS}",
                        "--dashboard-host=0.0.0.0",
                        f"--dashboard-port={PORT_DASHBOARD}",
                        f"--ray-client-server-port={PORT_CLIENT}",
                        f"--metrics-export-port={PORT_METRICS}",
                        f"--node-ip-address=$({ENV_NODE_IP})",
                        f"--num-cpus=$({ENV_CPU_LIMIT})",
                        "--disable-usage-stats",
                        "--block",
                    ],
                    "env": [_cpu_limit_env(HEAD_CONTAINER)],
                    "ports": [
                        {"name": "gcs", "containerPort": PORT_GCS},
                        {"name": "dashboard", "containerPort": PORT_DASHBOARD},
                        {"name": "client", "containerPort": PORT_CLIENT},
                        {"name": "metrics", "containerPort": PORT_METRICS},
                    ],
                    "volumeMounts": [mount],
                    "readinessProbe": _probe("/api/gcs_healthz", PORT_DASHBOARD),
                }
            ],
            "volumes": [volume],
        }
    }


def default_worker_template_v1(ray_image: str) -> dict[str, Any]:
    """Revision 1 of a worker pod, which joins the head through the head Service."""
    volume, mount = _shm()
    return {
        "spec": {
            "containers": [
                {
                    "name": WORKER_CONTAINER,
                    "image": ray_image,
                    "command": ["ray"],
                    "args": [
                        "start",
                        f"--address=$({ENV_HEAD_SERVICE}):{PORT_GCS}",
                        f"--node-ip-address=$({ENV_NODE_IP})",
                        f"--num-cpus=$({ENV_CPU_LIMIT})",
                        f"--metrics-export-port={PORT_METRICS}",
                        "--disable-usage-stats",
                        "--block",
                    ],
                    "env": [_cpu_limit_env(WORKER_CONTAINER)],
                    "ports": [{"name": "metrics", "containerPort": PORT_METRICS}],
                    "volumeMounts": [mount],
                    "readinessProbe": _probe("/api/local_raylet_healthz", PORT_DASHBOARD_AGENT),
                }
            ],
            "volumes": [volume],
        }
    }


# The user and group the rayproject/ray images run as (their Dockerfile: useradd --uid 1000
# --gid 100). Named numerically: with runAsNonRoot, a kubelet refuses an image whose USER it
# cannot verify is not root, and a user name cannot be verified.
RAY_UID = 1000
RAY_GID = 100


def _restricted(template: dict[str, Any]) -> dict[str, Any]:
    """The same pod, made to pass Pod Security ``restricted``."""
    spec = template["spec"]
    spec["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": RAY_UID,
        "runAsGroup": RAY_GID,
        "fsGroup": RAY_GID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    for container in spec["containers"]:
        container["securityContext"] = {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        }
    return template


def default_head_template_v2(ray_image: str) -> dict[str, Any]:
    """Revision 2 of the head pod: revision 1 as a non-root, ``restricted`` pod."""
    return _restricted(default_head_template_v1(ray_image))


def default_worker_template_v2(ray_image: str) -> dict[str, Any]:
    """Revision 2 of a worker pod: revision 1 as a non-root, ``restricted`` pod."""
    return _restricted(default_worker_template_v1(ray_image))
