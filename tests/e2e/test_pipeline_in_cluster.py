"""The example train-then-inference pipeline as a RayPipeline, end to end in the local cluster.

What the SeedFarmer orchestrator's state machine runs, with the volume where the work runs,
applied as a user does (`ray-operator pipeline apply`: the script files go in a ConfigMap): the
pipeline makes its own Ray with the PersistentVolumeClaim mounted at the export path in the head
and the worker (the pod runner bind-mounts the claim's hostPath volume, as a kubelet would); the
operator creates the step RayJobs one after the other, and their runner Pods run as the Pods say
(their own ServiceAccount, the cluster's Service names). Training, on two Ray nodes, writes its
checkpoints to the claim; inference reads the newest. Nobody but the operator and the runners
writes a status.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from ray_operator.kube import (
    CONFIGMAP,
    PERSISTENT_VOLUME,
    PERSISTENT_VOLUME_CLAIM,
    RAYJOB,
    RAYPIPELINE,
    Kube,
)
from ray_operator.localkube.control_plane import LocalControlPlane
from ray_operator.localkube.pod_runner import PodRunner
from tests.operator_process import OperatorProcess
from tests.runner_pod import RunnerPods

EXAMPLE = Path(__file__).parents[2] / "examples" / "pipelines" / "train-inference"
EPOCHS = 3


def pipeline_directory(directory: Path, claim: str) -> Path:
    """The example's scripts, unchanged, beside its pipeline file on a cluster of its own with
    the claim, and a shorter training."""
    directory.mkdir()
    for script in ("train.py", "inference.py"):
        shutil.copy(EXAMPLE / script, directory / script)
    manifest: dict = yaml.safe_load((EXAMPLE / "pipeline.yaml").read_text())
    spec = manifest["spec"]
    del spec["cluster"]
    spec["rayClusterSpec"] = {"worker": {"replicas": 1}}
    spec["pvcName"] = claim
    spec["steps"][0]["parameters"].update(epochs=EPOCHS, samples=800, num_workers=2)
    (directory / "pipeline.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return directory / "pipeline.yaml"


async def volume_and_claim(kube: Kube, namespace: str, directory: Path) -> str:
    """A hostPath PersistentVolume and a claim in ``namespace`` that binds to it."""
    name = f"export-{namespace}"
    await kube.create(PERSISTENT_VOLUME, {
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                 "storageClassName": "", "persistentVolumeReclaimPolicy": "Retain",
                 "hostPath": {"path": str(directory), "type": "Directory"}},
    })
    await kube.create(PERSISTENT_VOLUME_CLAIM, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "export"},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": name,
                 "resources": {"requests": {"storage": "1Gi"}}},
    }, namespace)
    return name


@pytest.mark.slow
@pytest.mark.timeout(1200)
async def test_the_example_pipeline_runs_in_the_cluster_with_its_volume(
    kube: Kube,
    namespace: str,
    control_plane: LocalControlPlane,
    running_operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    exported = tmp_path / "volume"
    exported.mkdir()
    volume = await volume_and_claim(kube, namespace, exported)
    ray_pods = await PodRunner(kube, namespace=namespace, run_containers=True).start()
    runners = RunnerPods(kube, control_plane, namespace, tmp_path)
    try:
        # As a user applies it: `ray-operator pipeline apply` with their kubeconfig puts the
        # script files in a ConfigMap the steps mount (scriptFrom), owned by the pipeline.
        pipeline_file = pipeline_directory(tmp_path / "pipeline", "export")
        applied = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ray_operator", "pipeline", "apply", str(pipeline_file),
            "-n", namespace,
            env={**os.environ, "KUBECONFIG": str(control_plane.kubeconfig)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        output = (await applied.communicate())[0].decode()
        assert applied.returncode == 0, output
        assert f"raypipeline/train-inference applied in {namespace}" in output
        created = await kube.get(RAYPIPELINE, "train-inference", namespace)
        run_id = created["metadata"]["uid"]
        scripts = await kube.get(CONFIGMAP, "train-inference-scripts", namespace)
        assert scripts["data"] == {
            name: (EXAMPLE / name).read_text() for name in ("train.py", "inference.py")
        }
        assert [o["uid"] for o in scripts["metadata"]["ownerReferences"]] == [run_id]
        status: dict = {}
        for _ in range(900):
            status = (await kube.get(RAYPIPELINE, "train-inference", namespace)).get("status") or {}
            if status.get("phase") in ("Succeeded", "Failed"):
                break
            await asyncio.sleep(1)
        assert status.get("phase") == "Succeeded", (status, runners.outputs)
        assert [s["state"] for s in status["steps"]] == ["SUCCEEDED", "SUCCEEDED"]

        # The steps' RayJobs, one after the other: inference was made after training ended.
        jobs = {j["metadata"]["name"]: j for j in await kube.list(RAYJOB, namespace)}
        train, inference = (jobs[s["rayJob"]] for s in status["steps"])
        assert [j["spec"]["scriptFrom"]["configMapKeyRef"] for j in (train, inference)] == [
            {"name": "train-inference-scripts", "key": "train.py"},
            {"name": "train-inference-scripts", "key": "inference.py"},
        ]
        assert inference["metadata"]["creationTimestamp"] >= train["status"]["endTime"]

        # On the claim: the checkpoints training wrote (from both Ray nodes' view of it) ...
        trained = exported / run_id / "train"
        epochs = sorted(
            json.loads(meta.read_text())["epoch"]
            for meta in (trained / "checkpoints").rglob("meta.json")
        )
        assert epochs == list(range(1, EPOCHS + 1)), epochs  # one per epoch, all kept (3)
        # ... and what inference made of the newest one.
        inferred = exported / run_id / "inference"
        metrics = json.loads((inferred / "metrics.json").read_text())
        assert metrics["checkpoint_epoch"] == epochs[-1]
        assert metrics["checkpoint"].startswith(f"/ray/export/{run_id}/train/checkpoints/")
        assert metrics["accuracy"] > metrics["baseline_accuracy"]
        rows = (inferred / "predictions.csv").read_text().splitlines()
        assert rows[0] == "x0,x1,label,predicted" and len(rows) == 1 + metrics["heldout_samples"]
    finally:
        await runners.stop()
        await ray_pods.stop()
        await kube.delete(PERSISTENT_VOLUME, volume)
