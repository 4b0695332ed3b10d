"""A Ray with ``spec.auth``: Ray's token authentication on real Ray, and a RayJob that needs no
setting for it.

The Ray pods run as local processes (the pod runner in process mode) with the env their pod
spec resolves to, the token from the Secret the operator made; the runner Pod runs as it says,
its token from the same Secret mounted. The job API is reached as a user reaches it: through
``ray-operator dashboard`` and the apiserver.
"""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest
import yaml

from ray_operator.jobs.ray_api import RayJobsClient
from ray_operator.kube import RAY, RAYJOB, SECRET, Kube
from ray_operator.localkube.control_plane import LocalControlPlane
from ray_operator.localkube.pod_runner import PodRunner
from tests.dashboard_process import dashboard
from tests.operator_process import OperatorProcess
from tests.ray_state import status_of
from tests.runner_pod import RunnerPods
from tests.waiting import eventually

EXAMPLES = Path(__file__).parents[2] / "examples"
SCRIPT = "import ray\nray.init()\nprint('RESULT', len([n for n in ray.nodes() if n['Alive']]))\n"


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_a_ray_with_auth_refuses_requests_without_the_token_and_its_jobs_need_no_setting(
    kube: Kube, namespace: str, control_plane: LocalControlPlane,
    running_operator: OperatorProcess, tmp_path: Path,
) -> None:
    manifest = yaml.safe_load((EXAMPLES / "ray-secured.yaml").read_text())
    manifest["spec"]["worker"]["replicas"] = 1  # enough to show a job runs
    ray_pods = await PodRunner(kube, namespace=namespace, run_containers=True).start()
    runners = RunnerPods(kube, control_plane, namespace, tmp_path)
    try:
        await kube.apply_manifest(manifest, namespace)
        await eventually(
            lambda: status_of(kube, RAY, "sample-cluster", namespace),
            lambda s: s.get("health") == "True", timeout=400, what="Health=True",
        )
        secret = await kube.get(SECRET, "sample-cluster-auth", namespace)
        token = base64.b64decode(secret["data"]["token"]).decode()

        job = yaml.safe_load((EXAMPLES / "rayjob.yaml").read_text())
        job["spec"] = {"cluster": "sample-cluster", "script": SCRIPT}  # no token given
        await kube.create(RAYJOB, job, namespace)
        status = await eventually(
            lambda: status_of(kube, RAYJOB, "estimate-pi", namespace),
            lambda s: s.get("jobStatus") in ("SUCCEEDED", "FAILED", "STOPPED"),
            timeout=300, what="the job's end",
        )
        assert status["jobStatus"] == "SUCCEEDED", (status, runners.outputs)
        assert token not in "".join(runners.outputs.values())

        async with dashboard(control_plane, "sample-cluster", namespace) as address:
            async with httpx.AsyncClient(timeout=30) as http:
                refused = await http.get(f"{address}/api/jobs/")
                wrong = await http.get(
                    f"{address}/api/jobs/", headers={"Authorization": "Bearer not-the-token"}
                )
            assert refused.status_code in (401, 403), refused.text[:300]
            assert wrong.status_code in (401, 403), wrong.text[:300]
            async with RayJobsClient(address, token=token) as client:
                listed = await client.list()
        assert status["submissionId"] in [j.submission_id for j in listed]
    finally:
        await runners.stop()
        await ray_pods.stop()
