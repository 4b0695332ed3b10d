"""The pods the operator generates really start Ray: 1 head + N workers that run a task.

The head and worker pod templates of examples/ray-simple.yaml run as local processes (the pod
runner in container mode: one network namespace per pod, the env the pod spec resolves to,
Service names in a private /etc/hosts); Ray comes from PyPI, nothing is mocked. The probe job
goes in the way a user's would: through ``ray-operator dashboard`` and the apiserver.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shlex
from pathlib import Path

import httpx
import pytest
import yaml

from ray_operator.jobs.ray_api import JobInfo, RayJobsClient
from ray_operator.kube import POD, RAY, Kube
from ray_operator.localkube.control_plane import LocalControlPlane
from ray_operator.localkube.pod_runner import PodRunner
from tests.dashboard_process import dashboard
from tests.operator_process import OperatorProcess

EXAMPLES = Path(__file__).parents[2] / "examples"

# Counts the alive nodes and spreads tasks over them: proof the workers joined and work.
PROBE = """
import json, socket, ray
ray.init()
alive = [n for n in ray.nodes() if n["Alive"]]
@ray.remote(num_cpus=1)
def where(i):
    import time; time.sleep(0.5)
    return ray.get_runtime_context().get_node_id()
nodes = set(ray.get([where.remote(i) for i in range(16)]))
print("RESULT " + json.dumps({"alive": len(alive), "task_nodes": len(nodes),
                              "sum": ray.get(ray.put(sum(range(100))))}))
"""


async def run_probe(address: str) -> tuple[JobInfo, str]:
    """Submit PROBE through the job API at ``address``; its final info and log."""
    async with RayJobsClient(address) as client:
        job_id = f"probe-{secrets.token_hex(4)}"
        await client.submit(f"python -c {shlex.quote(PROBE)}", submission_id=job_id)
        for _ in range(120):
            info = await client.info(job_id)
            if info.terminal:
                break
            await asyncio.sleep(1)
        return info, await client.logs(job_id)


async def _wait_health(kube: Kube, namespace: str, name: str, timeout: float) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    status: dict = {}
    while asyncio.get_running_loop().time() < deadline:
        status = (await kube.get(RAY, name, namespace)).get("status") or {}
        if status.get("health") == "True":
            return status
        await asyncio.sleep(1)
    raise AssertionError(f"Ray {name} not healthy after {timeout}s: {status}")


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_simple_example_pods_form_a_ray_cluster_that_runs_tasks(
    kube: Kube, namespace: str, running_operator: OperatorProcess,
    control_plane: LocalControlPlane,
) -> None:
    manifest = yaml.safe_load((EXAMPLES / "ray-simple.yaml").read_text())
    workers = manifest["spec"]["worker"]["replicas"]
    runner = await PodRunner(kube, namespace=namespace, run_containers=True).start()
    try:
        await kube.apply_manifest(manifest, namespace)
        # Four Ray processes starting on two cores, beside the suite: a generous bound.
        await _wait_health(kube, namespace, "sample-cluster", timeout=400)
        # Each worker waited in its init container until the head answered, then started Ray,
        # once: no worker restarted (benchmarks/elastic.py counts over several starts).
        pods = await kube.list(POD, namespace, "ray.kubeflow.org/cluster=sample-cluster")
        worker_pods = [p for p in pods
                       if p["metadata"]["labels"]["ray.kubeflow.org/role"] == "worker"]
        waits = [runner.logs(namespace, p["metadata"]["name"], "wait-gcs") for p in worker_pods]
        assert len(waits) == workers
        assert all(w.rstrip().endswith("answers") and "anyway" not in w for w in waits), waits
        restarts = [c.get("restartCount", 0) for p in worker_pods
                    for c in p["status"].get("containerStatuses") or []]
        assert restarts == [0] * workers, restarts

        # The way a user reaches it: `ray-operator dashboard`, through the apiserver.
        async with dashboard(control_plane, "sample-cluster", namespace) as address:
            async with httpx.AsyncClient(timeout=30) as http:
                page = await http.get(f"{address}/")
                version = await http.get(f"{address}/api/version")
            assert page.status_code == 200 and "<html" in page.text.lower(), page.text[:300]
            assert version.json()["ray_version"], version.text
            info, logs = await run_probe(address)
        assert info.status == "SUCCEEDED", logs
        # The log also echoes the entrypoint; the result is the line the script printed.
        line = next(x for x in logs.splitlines() if x.startswith("RESULT "))
        result = json.loads(line.removeprefix("RESULT "))
        assert result["alive"] == workers + 1
        assert result["task_nodes"] >= 2  # tasks ran beyond a single node
        assert result["sum"] == 4950

        # Deleting the Ray ends its pods' processes (garbage collector -> pod runner).
        await kube.delete(RAY, "sample-cluster", namespace)
        for _ in range(60):
            if not runner.pods:
                break
            await asyncio.sleep(1)
        assert runner.pods == {}
    finally:
        await runner.stop()
