"""The pods the operator generates really start Ray: 1 head + N workers that run a task.

The head and worker pod templates of examples/ray-simple.yaml run as local processes (the pod
runner in container mode: one network namespace per pod, the env the pod spec resolves to,
Service names in a private /etc/hosts); Ray comes from PyPI, nothing is mocked.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shlex
from pathlib import Path

import pytest
import yaml

from ray_operator.jobs.ray_api import RayJobsClient
from ray_operator.kube import POD, RAY, Kube
from ray_operator.localkube.pod_runner import PodRunner
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
    kube: Kube, namespace: str, running_operator: OperatorProcess
) -> None:
    manifest = yaml.safe_load((EXAMPLES / "ray-simple.yaml").read_text())
    workers = manifest["spec"]["worker"]["replicas"]
    runner = await PodRunner(kube, namespace=namespace, run_containers=True).start()
    try:
        await kube.apply_manifest(manifest, namespace)
        # Workers crash-loop until the head's GCS answers (on two loaded cores, minutes): the
        # clean start of the elastic-Ray issue shortens this; until then, a generous bound.
        await _wait_health(kube, namespace, "sample-cluster", timeout=400)

        pods = await kube.list(POD, namespace, "ray.kubeflow.org/cluster=sample-cluster")
        head = next(p for p in pods if p["metadata"]["labels"]["ray.kubeflow.org/role"] == "head")
        address = f"http://{head['status']['podIP']}:8265"
        async with RayJobsClient(address) as client:
            job_id = f"probe-{secrets.token_hex(4)}"
            await client.submit(f"python -c {shlex.quote(PROBE)}", submission_id=job_id)
            for _ in range(120):
                info = await client.info(job_id)
                if info.terminal:
                    break
                await asyncio.sleep(1)
            logs = await client.logs(job_id)
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
