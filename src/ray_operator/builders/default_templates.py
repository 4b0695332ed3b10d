"""The head and worker pod templates used when a ``Ray`` resource gives none."""

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


def default_head_template(ray_image: str) -> dict[str, Any]:
    """A head pod: GCS, dashboard / job API, client server and metrics."""
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


def default_worker_template(ray_image: str) -> dict[str, Any]:
    """A worker pod that joins the head through the head Service."""
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
