"""What the end-to-end tests read of a running Ray: its status, its pods, a script's result."""

from __future__ import annotations

import secrets
import shlex
from typing import Any

from ray_operator.jobs.ray_api import JobInfo, RayJobsClient
from ray_operator.kube import POD, Kind, Kube
from tests.waiting import eventually

Obj = dict[str, Any]


async def status_of(kube: Kube, kind: Kind, name: str, namespace: str) -> Obj:
    """The object's status ({} before the operator wrote one)."""
    found: Obj = (await kube.get(kind, name, namespace)).get("status") or {}
    return found


async def pods_with_role(kube: Kube, namespace: str, role: str) -> list[Obj]:
    """The pods of one role (``head``, ``worker``, ``worker-<group>``)."""
    return await kube.list(POD, namespace, f"ray.kubeflow.org/role={role}")


def pod_ready(pod: Obj) -> bool:
    """The pod's Ready condition is True."""
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


async def run_script(address: str, script: str, timeout: float = 180) -> tuple[JobInfo, str]:
    """Run ``python -c script`` as a Ray job through the job API; its final info and log."""
    async with RayJobsClient(address, timeout=30) as client:
        job_id = f"e2e-{secrets.token_hex(4)}"
        await client.submit(f"python -c {shlex.quote(script)}", submission_id=job_id)
        info = await eventually(lambda: client.info(job_id), lambda i: i.terminal,
                                timeout=timeout, what=f"job {job_id} ended")
        return info, await client.logs(job_id)
