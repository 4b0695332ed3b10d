"""Pod templates pass through whole: what the apiserver knows reaches the children.

The shipped table (for ``validate`` offline) is the tested Kubernetes version's, read from the
real apiserver's OpenAPI v3; the operator reads its own apiserver's at start.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ray_operator.api.pod_fields import OPENAPI_V3_CORE, extract_pod_fields, pod_field_table
from ray_operator.kube import DEPLOYMENT, EVENT, RAY, Kube
from ray_operator.localkube.pod_runner import PodRunner
from tests.operator_process import OperatorProcess
from tests.waiting import eventually

TABLE = Path(__file__).parents[2] / "src" / "ray_operator" / "api" / "pod_fields.json"
Obj = dict[str, Any]


async def test_pod_field_table_matches_the_apiserver(kube: Kube) -> None:
    live = extract_pod_fields(await kube.request("GET", OPENAPI_V3_CORE))
    if os.environ.get("UPDATE_GOLDEN"):
        TABLE.write_text(json.dumps(live, indent=1, sort_keys=True) + "\n")
    assert live == pod_field_table(), (
        "regenerate with UPDATE_GOLDEN=1 pytest tests/integration/test_pod_fields.py"
    )


def worker_template() -> Obj:
    """A worker with a native sidecar, a scheduling gate and a DRA resource claim."""
    security = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return {
        "spec": {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "initContainers": [
                {
                    "name": "log-shipper",
                    "image": "fluent/fluent-bit:4.0",
                    "restartPolicy": "Always",
                    "securityContext": security,
                }
            ],
            "schedulingGates": [{"name": "example.com/quota"}],
            "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}],
            "containers": [
                {
                    "name": "ray-worker",
                    "image": "rayproject/ray:2.60.0",
                    "command": ["ray"],
                    "args": ["start", "--address=$(RAY_HEAD_SERVICE):6379", "--block"],
                    "resources": {"claims": [{"name": "gpu"}]},
                    "securityContext": security,
                }
            ],
        }
    }


async def test_fields_of_a_current_kubernetes_reach_the_children(
    kube: Kube, namespace: str, pod_runner: PodRunner, running_operator: OperatorProcess
) -> None:
    await kube.create(
        RAY,
        {
            "apiVersion": "ray.kubeflow.org/v1",
            "kind": "Ray",
            "metadata": {"name": "current"},
            "spec": {"worker": {"replicas": 1, "template": worker_template()}},
        },
        namespace,
    )
    worker = await eventually(
        lambda: kube.get_or_none(DEPLOYMENT, "current-worker", namespace),
        lambda d: d is not None,
        what="worker Deployment",
    )
    assert worker is not None
    spec = worker["spec"]["template"]["spec"]
    # The user's native sidecar first, then the operator's wait for the head (revision 3).
    sidecar, wait = spec["initContainers"]
    assert sidecar["restartPolicy"] == "Always" and wait["name"] == "wait-gcs"
    assert spec["schedulingGates"] == [{"name": "example.com/quota"}]
    assert spec["resourceClaims"] == [{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}]
    assert spec["containers"][0]["resources"]["claims"] == [{"name": "gpu"}]
    # Known to this apiserver: none of them is reported as unknown.
    events = [e for e in await kube.list(EVENT, namespace) if e["reason"] == "UnknownField"]
    assert events == []
