"""The RayPipeline controller on the real test apiserver, with the operator running as a process.

No kubelet runs the step RayJobs' runner Pods here. :func:`set_job_state` stands in for the
runner: it writes the job's state where the runner writes it (the ``status.*`` keys of the
RayJob's ConfigMap, when the RayJob controller made one) and into ``RayJob.status`` as the
RayJob controller mirrors it, so the pipeline controller sees exactly what it would see.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from ray_operator.kube import CONFIGMAP, EVENT, RAY, RAYJOB, RAYPIPELINE, Kube, KubeError
from ray_operator.localkube.pod_runner import PodRunner
from tests.operator_process import OperatorProcess

Obj = dict[str, Any]
T = TypeVar("T")
STEP = "import sys\nprint(sys.argv)\n"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


async def eventually(
    what: str, probe: Callable[[], Awaitable[T | None]], operator: OperatorProcess,
    timeout: float = 60,
) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await probe()
        if result is not None:
            return result
        await asyncio.sleep(0.3)
    raise AssertionError(
        f"not seen within {timeout}s: {what}\noperator log:\n{operator.logs()[-4000:]}"
    )


async def set_job_state(kube: Kube, ns: str, job: str, state: str, message: str = "") -> None:
    """Stands in for the runner (and the RayJob controller's mirror): the job is now ``state``."""
    times = {"startTime": now()} if state == "RUNNING" else {"endTime": now()}
    if state in ("SUCCEEDED", "FAILED", "STOPPED"):
        times["startTime"] = times["endTime"]
    status = {"jobStatus": state, **times, **({"message": message} if message else {})}
    for _ in range(20):
        cm = await kube.get_or_none(CONFIGMAP, f"{job}-rayjob", ns)
        if cm is not None:
            data = {f"status.{k}": v for k, v in status.items()}
            await kube.patch(CONFIGMAP, cm["metadata"]["name"], {"data": data}, ns)
        await kube.patch(RAYJOB, job, {"status": status}, ns, subresource="status")
        await asyncio.sleep(0.5)
        current = await kube.get(RAYJOB, job, ns)
        if (current.get("status") or {}).get("jobStatus") == state:
            return
    raise AssertionError(f"RayJob {job} does not keep jobStatus={state}")


def pipeline(name: str, **spec: Any) -> Obj:
    steps = [{"name": "train", "script": STEP, "parameters": {"epochs": 2}},
             {"name": "inference", "script": STEP}]
    return {"apiVersion": "ray.kubeflow.org/v1", "kind": "RayPipeline",
            "metadata": {"name": name}, "spec": {"steps": steps, **spec}}


async def get_pipeline(kube: Kube, ns: str, name: str) -> Obj:
    return await kube.get(RAYPIPELINE, name, ns)


async def phase(kube: Kube, ns: str, name: str, wanted: str) -> Obj | None:
    body = await get_pipeline(kube, ns, name)
    return body if (body.get("status") or {}).get("phase") == wanted else None


def exists(kube: Kube, kind: Any, ns: str, name: str) -> Callable[[], Awaitable[Obj | None]]:
    return lambda: kube.get_or_none(kind, name, ns)


async def healthy_ray(kube: Kube, ns: str, name: str, operator: OperatorProcess) -> None:
    await kube.create(RAY, {"apiVersion": "ray.kubeflow.org/v1", "kind": "Ray",
                            "metadata": {"name": name, "namespace": ns},
                            "spec": {"worker": {"replicas": 1}}})

    async def probe() -> Obj | None:
        ray = await kube.get(RAY, name, ns)
        return ray if (ray.get("status") or {}).get("health") == "True" else None

    await eventually(f"Ray {name} healthy", probe, operator, timeout=120)


async def still_absent(kube: Kube, ns: str, job: str, seconds: float) -> None:
    """Longer than the operator's resync (5 s): a reconcile had every chance to create it."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert await kube.get_or_none(RAYJOB, job, ns) is None, f"RayJob {job} was created"
        await asyncio.sleep(0.5)


@pytest.mark.slow
async def test_steps_run_one_after_another_on_a_named_ray(
    kube: Kube, namespace: str, running_operator: OperatorProcess, pod_runner: PodRunner
) -> None:
    ns, op = namespace, running_operator
    await healthy_ray(kube, ns, "ray", op)
    await kube.create(RAYPIPELINE, pipeline("ti", cluster="ray", dataBucket="data"), ns)
    train = await eventually("RayJob ti-train", exists(kube, RAYJOB, ns, "ti-train"), op)
    uid = (await get_pipeline(kube, ns, "ti"))["metadata"]["uid"]
    assert train["spec"]["cluster"] == "ray"
    assert train["spec"]["parameters"] == {
        "export_path": "/ray/export/", "data_bucket": "data", "run_id": uid,
        "output_dir": f"/ray/export/{uid}/train", "epochs": "2",
    }
    assert train["metadata"]["ownerReferences"][0]["uid"] == uid

    await set_job_state(kube, ns, "ti-train", "RUNNING")
    await still_absent(kube, ns, "ti-inference", 6)
    body = await get_pipeline(kube, ns, "ti")
    assert body["status"]["phase"] == "Running"
    assert body["status"]["currentStep"] == "train"
    assert [(s["name"], s["state"]) for s in body["status"]["steps"]] == [
        ("train", "RUNNING"), ("inference", "PENDING")]

    await set_job_state(kube, ns, "ti-train", "SUCCEEDED")
    inference = await eventually(
        "RayJob ti-inference", exists(kube, RAYJOB, ns, "ti-inference"), op
    )
    assert inference["spec"]["parameters"]["input_dir"] == f"/ray/export/{uid}/train"
    await set_job_state(kube, ns, "ti-inference", "SUCCEEDED")
    done = await eventually("pipeline Succeeded", lambda: phase(kube, ns, "ti", "Succeeded"), op)
    steps = done["status"]["steps"]
    assert [(s["name"], s["state"], s["rayJob"]) for s in steps] == [
        ("train", "SUCCEEDED", "ti-train"), ("inference", "SUCCEEDED", "ti-inference")]
    assert all(s["startTime"] and s["endTime"] for s in steps)
    assert done["status"]["rayCluster"] == "ray" and "currentStep" not in done["status"]
    # A named cluster is not the pipeline's to delete.
    await op.more_reconciles(2, "raypipeline")
    assert await kube.get_or_none(RAY, "ray", ns) is not None


@pytest.mark.slow
async def test_a_failed_first_step_fails_the_pipeline_and_skips_the_rest(
    kube: Kube, namespace: str, running_operator: OperatorProcess
) -> None:
    ns, op = namespace, running_operator
    await kube.create(RAYPIPELINE, pipeline("bad", address="http://127.0.0.1:1"), ns)
    await eventually("RayJob bad-train", exists(kube, RAYJOB, ns, "bad-train"), op)
    await set_job_state(kube, ns, "bad-train", "FAILED", "ValueError: no data in input_dir")
    failed = await eventually("pipeline Failed", lambda: phase(kube, ns, "bad", "Failed"), op)
    status = failed["status"]
    assert status["reason"] == "StepFailed"
    assert status["message"] == "step 'train' failed: ValueError: no data in input_dir"
    assert status["steps"][1] == {"name": "inference", "state": "SKIPPED",
                                  "message": "not run: step 'train' did not succeed"}
    await still_absent(kube, ns, "bad-inference", 6)
    events = await kube.list(EVENT, ns)
    assert any(e["reason"] == "StepFailed" and e["type"] == "Warning"
               and e["involvedObject"]["name"] == "bad" for e in events)


@pytest.mark.slow
async def test_timeout_stops_the_running_step_with_deadline_exceeded(
    kube: Kube, namespace: str, running_operator: OperatorProcess
) -> None:
    ns, op = namespace, running_operator
    await kube.create(
        RAYPIPELINE, pipeline("slow", address="http://127.0.0.1:1", timeoutMinutes=1), ns
    )
    await eventually("RayJob slow-train", exists(kube, RAYJOB, ns, "slow-train"), op)
    await set_job_state(kube, ns, "slow-train", "RUNNING")
    failed = await eventually(
        "pipeline Failed", lambda: phase(kube, ns, "slow", "Failed"), op, timeout=90
    )
    assert failed["status"]["reason"] == "DeadlineExceeded"
    assert [(s["name"], s["state"]) for s in failed["status"]["steps"]] == [
        ("train", "STOPPED"), ("inference", "SKIPPED")]
    job = await kube.get(RAYJOB, "slow-train", ns)
    assert job["spec"]["kill"] is True
    assert job["metadata"]["annotations"]["ray.kubeflow.org/stopped-by"] == "DeadlineExceeded"
    assert await kube.get_or_none(RAYJOB, "slow-inference", ns) is None


def _export_mounts(ray: Obj, role: str) -> tuple[list[Obj], list[list[Obj]]]:
    pod = ray["spec"][role]["template"]["spec"]
    volumes = [v for v in pod["volumes"] if v["name"] == "pipeline-export"]
    mounts = [[m for m in c["volumeMounts"] if m["name"] == "pipeline-export"]
              for c in pod["containers"]]
    return volumes, mounts


@pytest.mark.slow
async def test_embedded_cluster_mounts_the_pvc_and_is_deleted_when_done(
    kube: Kube, namespace: str, running_operator: OperatorProcess, pod_runner: PodRunner
) -> None:
    ns, op = namespace, running_operator
    await kube.create(RAYPIPELINE, pipeline(
        "emb", pvcName="export-claim", exportPath="/mnt/export",
        rayClusterSpec={"worker": {"replicas": 1}},
    ), ns)
    ray = await eventually("Ray emb-ray", exists(kube, RAY, ns, "emb-ray"), op)
    for role in ("head", "worker"):
        volumes, mounts = _export_mounts(ray, role)
        assert volumes == [{"name": "pipeline-export",
                            "persistentVolumeClaim": {"claimName": "export-claim"}}], role
        assert mounts == [[{"name": "pipeline-export", "mountPath": "/mnt/export"}]], role
    body = await get_pipeline(kube, ns, "emb")
    assert ray["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]
    # Steps start once the created Ray is Healthy (the pod runner makes its pods Ready).
    train = await eventually(
        "RayJob emb-train", exists(kube, RAYJOB, ns, "emb-train"), op, timeout=120
    )
    assert train["spec"]["cluster"] == "emb-ray"
    assert train["spec"]["parameters"]["export_path"] == "/mnt/export"
    await set_job_state(kube, ns, "emb-train", "SUCCEEDED")
    await eventually("RayJob emb-inference", exists(kube, RAYJOB, ns, "emb-inference"), op)
    await set_job_state(kube, ns, "emb-inference", "SUCCEEDED")
    await eventually("pipeline Succeeded", lambda: phase(kube, ns, "emb", "Succeeded"), op)

    async def gone() -> bool | None:
        ray = await kube.get_or_none(RAY, "emb-ray", ns)
        return True if ray is None or ray["metadata"].get("deletionTimestamp") else None

    await eventually("Ray emb-ray deleted", gone, op)


@pytest.mark.slow
async def test_keep_cluster_keeps_the_created_ray(
    kube: Kube, namespace: str, running_operator: OperatorProcess, pod_runner: PodRunner
) -> None:
    ns, op = namespace, running_operator
    spec = pipeline("kept", keepCluster=True, rayClusterSpec={"worker": {"replicas": 1}})
    spec["spec"]["steps"] = spec["spec"]["steps"][:1]
    await kube.create(RAYPIPELINE, spec, ns)
    await eventually("RayJob kept-train", exists(kube, RAYJOB, ns, "kept-train"), op, timeout=120)
    await set_job_state(kube, ns, "kept-train", "SUCCEEDED")
    await eventually("pipeline Succeeded", lambda: phase(kube, ns, "kept", "Succeeded"), op)
    await op.more_reconciles(2, "raypipeline")  # a resync later
    ray = await kube.get(RAY, "kept-ray", ns)
    assert not ray["metadata"].get("deletionTimestamp")


async def test_invalid_spec_is_reported_not_run(
    kube: Kube, namespace: str, running_operator: OperatorProcess
) -> None:
    ns, op = namespace, running_operator
    name = f"inv-{secrets.token_hex(2)}"
    body = pipeline(name, cluster="ray", exportPath="ray/export")
    body["spec"]["steps"][0]["script"] = "train.py"
    await kube.create(RAYPIPELINE, body, ns)
    failed = await eventually("pipeline Failed", lambda: phase(kube, ns, name, "Failed"), op)
    assert failed["status"]["reason"] == "InvalidSpec"
    message = failed["status"]["message"]
    assert "spec.exportPath: 'ray/export' is not accepted" in message
    events = await kube.list(EVENT, ns)
    assert any(e["reason"] == "InvalidSpec" and e["type"] == "Warning" for e in events)
    # Fixed, it runs.
    for _ in range(5):
        fixed = await get_pipeline(kube, ns, name)
        fixed["spec"]["exportPath"] = "/ray/export"
        fixed["spec"]["steps"][0]["script"] = STEP
        fixed["spec"]["address"], fixed["spec"]["cluster"] = "http://127.0.0.1:1", None
        try:
            await kube.replace(RAYPIPELINE, fixed)
            break
        except KubeError as exc:
            if not exc.conflict:  # a status write since the read: read again
                raise
    await eventually(f"RayJob {name}-train", exists(kube, RAYJOB, ns, f"{name}-train"), op)
