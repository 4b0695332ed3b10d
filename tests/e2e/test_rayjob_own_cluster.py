"""A RayJob that brings its own Ray (examples/rayjob-own-cluster.yaml), end to end with real Ray.

The Ray pods run as local processes (the pod runner in process mode), the runner Pod as its Pod
says; the operator creates the job's Ray, runs the job on it once it is Healthy, and deletes it
after the TTL. A second job, killed before its cluster is ready, takes its cluster with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ray_operator.kube import EVENT, RAY, RAYJOB, Kube
from ray_operator.localkube.control_plane import LocalControlPlane
from ray_operator.localkube.pod_runner import PodRunner
from tests.operator_process import OperatorProcess
from tests.runner_pod import RunnerPods
from tests.waiting import eventually

EXAMPLE = Path(__file__).parents[2] / "examples" / "rayjob-own-cluster.yaml"
TTL = 15  # shorter than the example's minute, to keep the test short


def _seconds(timestamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


async def outputs(runners: RunnerPods) -> str:
    return "".join(runners.outputs.values())


async def job_status(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = (await kube.get(RAYJOB, name, namespace)).get("status") or {}
    return status


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_a_job_with_its_own_cluster_runs_on_it_and_removes_it_after_the_ttl(
    kube: Kube, namespace: str, control_plane: LocalControlPlane,
    running_operator: OperatorProcess, tmp_path: Path,
) -> None:
    manifest = yaml.safe_load(EXAMPLE.read_text())
    manifest["spec"]["ttlSecondsAfterFinished"] = TTL
    ray_pods = await PodRunner(kube, namespace=namespace, run_containers=True).start()
    runners = RunnerPods(kube, control_plane, namespace, tmp_path)
    try:
        job = await kube.create(RAYJOB, manifest, namespace)
        cluster = await eventually(
            lambda: kube.get_or_none(RAY, "count-nodes-ray", namespace), bool, what="its Ray"
        )
        assert cluster is not None
        (owner,) = cluster["metadata"]["ownerReferences"]
        assert owner["kind"] == "RayJob" and owner["uid"] == job["metadata"]["uid"]
        status = await eventually(
            lambda: job_status(kube, namespace, "count-nodes"),
            lambda s: s.get("jobStatus") in ("SUCCEEDED", "FAILED", "STOPPED"),
            timeout=600,
            what="the job's end",
        )
        assert status["jobStatus"] == "SUCCEEDED", (status, runners.outputs)
        assert status["rayClusterName"] == "count-nodes-ray"
        # The runner echoes the job's log into its own output: the job ran on both nodes.
        output = await eventually(
            lambda: outputs(runners), lambda text: "RESULT" in text, timeout=60,
            what="the runner's output",
        )
        assert "RESULT 2 nodes alive" in output, output

        # Kept for the TTL, then gone, and the status says so.
        status = await eventually(
            lambda: job_status(kube, namespace, "count-nodes"),
            lambda s: s.get("rayClusterStatus") == "Deleted",
            timeout=TTL + 60,
            what="the cluster deleted after the TTL",
        )
        await eventually(
            lambda: kube.get_or_none(RAY, "count-nodes-ray", namespace),
            lambda ray: ray is None,
            what="the Ray gone",
        )
        deleted = next(
            e for e in await kube.list(EVENT, namespace)
            if e["involvedObject"]["name"] == "count-nodes" and e["reason"] == "DeletedCluster"
        )
        when = deleted.get("eventTime") or deleted.get("firstTimestamp") or deleted["metadata"][
            "creationTimestamp"
        ]
        assert _seconds(when) - _seconds(status["endTime"]) >= TTL - 1

        # A job killed before its cluster is ready takes its cluster with it.
        killed = yaml.safe_load(EXAMPLE.read_text())
        killed["metadata"]["name"] = "killed"
        await kube.create(RAYJOB, killed, namespace)
        await eventually(lambda: kube.get_or_none(RAY, "killed-ray", namespace), bool,
                         what="the second job's Ray")
        await kube.patch(RAYJOB, "killed", {"spec": {"kill": True}}, namespace)
        status = await eventually(
            lambda: job_status(kube, namespace, "killed"),
            lambda s: s.get("rayClusterStatus") == "Deleted",
            timeout=120,
            what="the killed job's cluster deleted",
        )
        assert status["jobStatus"] == "STOPPED"
        await eventually(lambda: kube.get_or_none(RAY, "killed-ray", namespace),
                         lambda ray: ray is None, what="the killed job's Ray gone")
    finally:
        await runners.stop()
        await ray_pods.stop()
