"""GCS fault tolerance on real Ray and a real Redis: the head dies, the cluster's state does not;
the Ray deleted, its keys leave Redis.

Debian's redis-server listens on the pod network's gateway; the Ray pods run as local processes
(the pod runner in process mode) with what the operator gives them: the head its Redis
settings, the workers Ray's GCS reconnect timeout. The head container is SIGKILLed (what an OOM
kill does) and restarted in its pod by the pod runner, as a kubelet would. The local cluster
has no Service virtual IPs (a Service name resolves to the pod's own address), so a head *pod*
replaced with a new address cannot be tested here: on a real cluster the workers reach the head
through the Service's stable ClusterIP.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ray_operator.jobs.ray_api import RayApiError, RayJobsClient, RayUnreachableError
from ray_operator.kube import EVENT, RAY, Kube
from ray_operator.localkube.control_plane import LocalControlPlane, free_port
from ray_operator.localkube.pod_runner import PodRunner
from tests.dashboard_process import dashboard
from tests.operator_process import OperatorProcess
from tests.ray_state import pod_ready, pods_with_role, run_script, status_of
from tests.waiting import eventually

EXAMPLES = Path(__file__).parents[2] / "examples"
# A detached actor with state on the worker group's node (its custom resource), not the head.
SETUP = """
import ray
ray.init()
@ray.remote(num_cpus=0, resources={"keeper": 1})
class Keeper:
    def __init__(self):
        self.n = 0
    def add(self, k):
        self.n += k
        return self.n
keeper = Keeper.options(name="keeper", namespace="ft", lifetime="detached").remote()
print("RESULT", ray.get(keeper.add.remote(41)))
"""
CHECK = """
import ray
ray.init()
keeper = ray.get_actor("keeper", namespace="ft")
alive = len([n for n in ray.nodes() if n["Alive"]])
print("RESULT", ray.get(keeper.add.remote(1)), alive)
"""


@pytest.fixture
def redis_on(tmp_path: Path) -> Iterator[Any]:
    """Start redis-server on ``address`` (called by the test once the pod network exists)."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is missing: scripts/setup.sh installs Debian's")
    started: list[subprocess.Popen[bytes]] = []

    def start(address: str) -> str:
        port = free_port()
        proc = subprocess.Popen(
            ["redis-server", "--bind", address, "--port", str(port), "--protected-mode", "no",
             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL, start_new_session=True,
        )
        started.append(proc)
        return f"{address}:{port}"

    yield start
    for proc in started:
        proc.kill()
        proc.wait(10)


async def answers(address: str) -> bool:
    try:
        async with RayJobsClient(address, timeout=10) as client:
            await client.list()
    except (RayApiError, RayUnreachableError):
        return False
    return True


def redis_keys(address: str, pattern: str) -> list[str]:
    host, port = address.rsplit(":", 1)
    out = subprocess.run(["redis-cli", "-h", host, "-p", port, "--scan", "--pattern", pattern],
                         capture_output=True, text=True, check=True, timeout=30)
    return out.stdout.split()


def result(logs: str) -> list[str]:
    return next(x for x in logs.splitlines() if x.startswith("RESULT ")).split()[1:]


async def ray_status(kube: Kube, namespace: str) -> dict[str, Any]:
    return await status_of(kube, RAY, "sample-cluster", namespace)


def restarts(pod: dict[str, Any]) -> int:
    return sum(c.get("restartCount", 0) for c in pod["status"].get("containerStatuses") or [])


@pytest.mark.slow
@pytest.mark.timeout(1200)
async def test_a_head_that_dies_comes_back_with_its_state_and_its_keys_go_with_the_ray(
    kube: Kube, namespace: str, control_plane: LocalControlPlane,
    running_operator: OperatorProcess, redis_on: Any,
) -> None:
    runner = await PodRunner(kube, namespace=namespace, run_containers=True).start()
    try:
        assert runner.network is not None and runner.network.subnet is not None
        redis = redis_on(str(runner.network.subnet[1]))  # the pods' gateway: the host
        manifest = yaml.safe_load((EXAMPLES / "ray-simple.yaml").read_text())
        manifest["spec"]["worker"]["replicas"] = 0
        manifest["spec"]["workerGroups"] = [
            {"name": "keeper", "replicas": 1, "rayResources": {"keeper": 1}}
        ]
        manifest["spec"]["gcsFaultTolerance"] = {"redisAddress": redis}
        await kube.apply_manifest(manifest, namespace)
        await eventually(lambda: ray_status(kube, namespace), lambda s: s.get("health") == "True",
                         timeout=400, what="Health=True")

        async with dashboard(control_plane, "sample-cluster", namespace) as address:
            setup, logs = await run_script(address, SETUP)
            assert setup.status == "SUCCEEDED", logs
            assert result(logs) == ["41"]
        (worker,) = await pods_with_role(kube, namespace, "worker-keeper")
        (head,) = await pods_with_role(kube, namespace, "head")
        assert restarts(worker) == 0

        # The head container dies as an OOM kill ends it: every process of it, at once.
        local = runner.pods[(namespace, head["metadata"]["name"])]
        os.killpg(local.processes["ray-head"].pid, signal.SIGKILL)
        # Restarted in the same pod, and ready again (its GCS answers its readiness probe).
        await eventually(
            lambda: pods_with_role(kube, namespace, "head"),
            lambda found: len(found) == 1 and restarts(found[0]) >= 1 and pod_ready(found[0]),
            timeout=300, what="the head container restarted and ready",
        )

        async with dashboard(control_plane, "sample-cluster", namespace) as address:
            # Ready, then in the head Service's endpoints: the job API answers through it.
            await eventually(lambda: answers(address), bool, timeout=60,
                             what="the job API through the head Service")
            check, logs = await run_script(address, CHECK)
            assert check.status == "SUCCEEDED", logs
            # The actor kept its state; both nodes are alive (the worker rejoined the new GCS).
            assert result(logs) == ["42", "2"], logs
            async with RayJobsClient(address) as client:
                listed = {j.submission_id: j.status for j in await client.list()}
        assert listed[setup.submission_id] == "SUCCEEDED"  # the job record survived
        (after,) = await pods_with_role(kube, namespace, "worker-keeper")
        assert after["metadata"]["uid"] == worker["metadata"]["uid"]
        assert restarts(after) == 0, after["status"]

        # Deleting the Ray removes its keys from Redis (Ray's prefix RAY<storage namespace>@)
        # before the Ray goes: the finalizer stops the head, then a Job in its image cleans.
        ray = await kube.get(RAY, "sample-cluster", namespace)
        assert "ray.kubeflow.org/gcs-redis-cleanup" in ray["metadata"]["finalizers"]
        prefix = f"RAY{ray['metadata']['uid']}@*"
        assert redis_keys(redis, prefix), "no keys of the cluster in Redis"
        await kube.delete(RAY, "sample-cluster", namespace)
        await eventually(lambda: kube.get_or_none(RAY, "sample-cluster", namespace),
                         lambda found: found is None, timeout=240, what="the Ray gone")
        assert redis_keys(redis, prefix) == []
        reasons = [e["reason"] for e in await kube.list(EVENT, namespace)
                   if e["involvedObject"]["name"] == "sample-cluster"]
        assert "RedisCleaned" in reasons and "RedisCleanupFailed" not in reasons, reasons
    finally:
        await runner.stop()
