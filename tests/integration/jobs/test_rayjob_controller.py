"""The RayJob controller end to end: the operator process on the real apiserver, a real Ray head,
S3 on moto, and the runner Pod run as a local process with the Pod's env and ServiceAccount.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ray_operator.jobs.ray_api import JobInfo, RayJobsClient
from ray_operator.kube import (
    CONFIGMAP,
    EVENT,
    POD,
    RAY,
    RAYJOB,
    ROLE,
    ROLE_BINDING,
    SECRET,
    SERVICE_ACCOUNT,
    Kube,
    KubeError,
)
from ray_operator.localkube.control_plane import LocalControlPlane
from ray_operator.localkube.pod_runner import PodRunner
from tests.fixtures.ray_head import RayHead
from tests.fixtures.s3 import ACCESS_KEY, BUCKET, SECRET_KEY
from tests.operator_process import OperatorProcess
from tests.runner_pod import finish, run_pod, start_pod

Obj = dict[str, Any]
T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[3]
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
FINALIZER = "ray.kubeflow.org/stop-job"

PRINT_KWARGS = """
import argparse, json
class ParseKwargs(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, dict())
        for value in values:
            key, value = value.split('=', 1)
            getattr(namespace, self.dest)[key] = value
parser = argparse.ArgumentParser()
parser.add_argument('-k', '--kwargs', nargs='*', action=ParseKwargs)
args = parser.parse_args()
print("GREETING=" + args.kwargs["greeting"])
print("COUNT=" + args.kwargs["count"])
"""
SLEEPER = "import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n"


def rayjob(name: str, spec: Obj) -> Obj:
    return {"apiVersion": "ray.kubeflow.org/v1", "kind": "RayJob", "metadata": {"name": name},
            "spec": spec}


async def eventually(
    what: str, probe: Callable[[], Awaitable[T | None]], timeout: float = 60,
    operator: OperatorProcess | None = None,
) -> T:
    """Poll ``probe`` until it returns something; fail naming ``what`` (and the operator's log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await probe()
        if result is not None:
            return result
        await asyncio.sleep(0.3)
    log = f"\noperator log:\n{operator.logs()[-5000:]}" if operator else ""
    raise AssertionError(f"not seen within {timeout}s: {what}{log}")


async def get_or_none(kube: Kube, kind: Any, name: str, ns: str) -> Obj | None:
    return await kube.get_or_none(kind, name, ns)


async def job_status(kube: Kube, name: str, ns: str) -> Obj:
    return (await kube.get(RAYJOB, name, ns)).get("status") or {}


async def status_where(
    kube: Kube, name: str, ns: str, check: Callable[[Obj], bool], what: str,
    operator: OperatorProcess, timeout: float = 60,
) -> Obj:
    async def probe() -> Obj | None:
        status = await job_status(kube, name, ns)
        return status if check(status) else None

    try:
        return await eventually(what, probe, timeout, operator)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nlast status: {await job_status(kube, name, ns)}") from None


async def absent(kube: Kube, kind: Any, name: str, ns: str) -> bool | None:
    return True if await get_or_none(kube, kind, name, ns) is None else None


async def runner_pod(kube: Kube, name: str, ns: str, operator: OperatorProcess) -> Obj:
    return await eventually(
        f"runner pod {name}-rayjob", lambda: get_or_none(kube, POD, f"{name}-rayjob", ns),
        operator=operator,
    )


async def ray_jobs(address: str, job_name: str) -> list[JobInfo]:
    async with RayJobsClient(address) as client:
        return [j for j in await client.list() if j.metadata.get("job-name") == job_name]


async def events_of(kube: Kube, name: str, ns: str) -> list[Obj]:
    return [e for e in await kube.list(EVENT, ns) if e["involvedObject"]["name"] == name]


async def s3_secret(kube: Kube, ns: str) -> str:
    await kube.create(SECRET, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds"},
        "stringData": {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY},
    }, ns)
    return "s3-creds"


async def test_rayjob_runs_on_ray_and_reports_status_and_logs(
    kube: Kube, namespace: str, control_plane: LocalControlPlane,
    running_operator: OperatorProcess, ray_head: RayHead, s3: Any, s3_server: str,
    tmp_path: Path,
) -> None:
    secret = await s3_secret(kube, namespace)
    greeting = "hello, 'world' = Zürich"
    await kube.create(RAYJOB, rayjob("hello", {
        "address": ray_head.address,
        "script": PRINT_KWARGS,
        "parameters": {"greeting": greeting, "count": "3"},
        "s3": {"endpoint": s3_server, "secure": False, "secretName": secret},
        "uploadBucket": BUCKET,
        "updateInterval": 0.5,
    }), namespace)

    pod = await runner_pod(kube, "hello", namespace, running_operator)
    configmap = await kube.get(CONFIGMAP, "hello-rayjob", namespace)
    assert configmap["data"]["resourceURL"] == ray_head.address
    # The id is chosen and shown before anything runs: the runner submits under it.
    waiting = await job_status(kube, "hello", namespace)
    assert waiting["submissionId"] == configmap["data"]["id"]
    for child in (pod, configmap, await kube.get(ROLE, "hello-rayjob", namespace)):
        assert child["metadata"]["ownerReferences"][0]["kind"] == "RayJob"
    assert "ray.kubeflow.org/cluster" not in pod["metadata"].get("labels", {})

    result = await run_pod(kube, control_plane, pod, tmp_path)
    assert result.returncode == 0, result.output

    status = await status_where(
        kube, "hello", namespace, lambda s: s.get("jobStatus") == "SUCCEEDED"
        and bool(s.get("logsURL")), "RayJob hello SUCCEEDED with its logs URL", running_operator,
    )
    (job,) = await ray_jobs(ray_head.address, "hello")
    assert job.status == "SUCCEEDED"
    assert status["submissionId"] == job.submission_id == waiting["submissionId"]
    for field in ("submitTime", "startTime", "endTime"):
        assert RFC3339.match(status[field]), (field, status)
    assert status["logsURL"] == f"s3://{BUCKET}/hello/logs"
    assert status["logsURL"] in status["message"]
    log = s3.get_object(Bucket=BUCKET, Key="hello/logs")["Body"].read().decode()
    assert f"GREETING={greeting}" in log and "COUNT=3" in log

    reasons = {(e["reason"], e["message"]) for e in await events_of(kube, "hello", namespace)}
    for kind in ("serviceaccount", "role", "rolebinding", "configmap", "pod"):
        assert ("SuccessfullyCreate", f"Successfully create the {kind} hello-rayjob") in reasons
    # Ended: the finalizer is gone, so deleting it does not wait for the operator.
    assert FINALIZER not in (await kube.get(RAYJOB, "hello", namespace))["metadata"].get(
        "finalizers", []
    )


async def test_spec_kill_stops_the_job(
    kube: Kube, namespace: str, control_plane: LocalControlPlane,
    running_operator: OperatorProcess, ray_head: RayHead, tmp_path: Path,
) -> None:
    await kube.create(RAYJOB, rayjob("sleepy", {
        "address": ray_head.address, "script": SLEEPER, "updateInterval": 0.5,
    }), namespace)
    pod = await runner_pod(kube, "sleepy", namespace, running_operator)
    proc = await start_pod(kube, control_plane, pod, tmp_path)
    try:
        await status_where(kube, "sleepy", namespace, lambda s: s.get("jobStatus") == "RUNNING",
                           "RayJob sleepy RUNNING", running_operator)
        await kube.patch(RAYJOB, "sleepy", {"spec": {"kill": True}}, namespace)
        result = await finish(proc, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert result.returncode == 1, result.output
    status = await status_where(
        kube, "sleepy", namespace, lambda s: s.get("jobStatus") == "STOPPED",
        "RayJob sleepy STOPPED", running_operator,
    )
    assert status["reason"] == "Stopped"
    (job,) = await ray_jobs(ray_head.address, "sleepy")
    assert job.status == "STOPPED"


async def test_deleting_a_running_rayjob_stops_its_ray_job(
    kube: Kube, namespace: str, control_plane: LocalControlPlane,
    running_operator: OperatorProcess, ray_head: RayHead, tmp_path: Path,
) -> None:
    await kube.create(RAYJOB, rayjob("doomed", {
        "address": ray_head.address, "script": SLEEPER, "updateInterval": 0.5,
    }), namespace)
    pod = await runner_pod(kube, "doomed", namespace, running_operator)
    proc = await start_pod(kube, control_plane, pod, tmp_path)
    await status_where(kube, "doomed", namespace, lambda s: s.get("jobStatus") == "RUNNING",
                       "RayJob doomed RUNNING", running_operator)
    # The runner is gone (as with a lost node): only the operator can stop the job now.
    proc.kill()
    proc.wait()
    assert FINALIZER in (await kube.get(RAYJOB, "doomed", namespace))["metadata"]["finalizers"]
    await kube.delete(RAYJOB, "doomed", namespace)

    async def gone() -> bool | None:
        return True if await get_or_none(kube, RAYJOB, "doomed", namespace) is None else None

    await eventually("RayJob doomed deleted (finalizer removed)", gone, 45, running_operator)

    async def stopped() -> JobInfo | None:
        (job,) = await ray_jobs(ray_head.address, "doomed")
        return job if job.status == "STOPPED" else None

    await eventually("the Ray job of doomed STOPPED", stopped, 30)


async def test_rayjob_waits_for_its_ray_to_be_healthy(
    kube: Kube, namespace: str, running_operator: OperatorProcess, pod_runner: PodRunner,
) -> None:
    # A head without containers is an invalid Ray (the operator's judgement: the schema lets
    # pod templates through): it stays unhealthy however the pods fare.
    await kube.create(RAY, {
        "apiVersion": "ray.kubeflow.org/v1", "kind": "Ray", "metadata": {"name": "sick"},
        "spec": {"head": {"template": {"spec": {"containers": []}}}, "worker": {"replicas": 1}},
    }, namespace)
    await kube.create(RAYJOB, rayjob("patient", {"cluster": "sick", "script": "print(1)"}),
                      namespace)
    # The Ray may not have a status yet when the RayJob first looks (health=None): the message
    # follows the Ray's as it comes.
    status = await status_where(
        kube, "patient", namespace, lambda s: "health='False'" in (s.get("message") or ""),
        "RayJob patient waiting for Ray sick", running_operator,
    )
    assert status["message"].startswith("waiting for Ray 'sick' (spec.cluster) to be Healthy: "
                                        "status.health='False'"), status
    assert status["reason"] == "WaitingForCluster"
    await running_operator.more_reconciles(3, "rayjob")  # a few reconciles later: still no runner
    assert await get_or_none(kube, POD, "patient-rayjob", namespace) is None
    assert await get_or_none(kube, CONFIGMAP, "patient-rayjob", namespace) is None

    # Fixed and healthy (the pod runner readies its pods): the job goes ahead.
    await kube.patch(RAY, "sick", {"spec": {"head": {"template": None}}}, namespace)
    await runner_pod(kube, "patient", namespace, running_operator)
    configmap = await kube.get(CONFIGMAP, "patient-rayjob", namespace)
    assert configmap["data"]["resourceURL"] == f"http://sick-head.{namespace}.svc:8265"
    await status_where(kube, "patient", namespace, lambda s: "message" not in s,
                       "RayJob patient no longer waiting", running_operator)


async def test_invalid_rayjob_is_reported_and_others_proceed(
    kube: Kube, namespace: str, running_operator: OperatorProcess, ray_head: RayHead,
) -> None:
    await kube.create(RAYJOB, rayjob("both", {
        "cluster": "c", "address": ray_head.address, "script": "print(1)",
    }), namespace)
    await kube.create(RAYJOB, rayjob("bad-url", {"address": "head:8265", "script": "print(1)"}),
                      namespace)
    await kube.create(RAYJOB, rayjob("fine", {"address": ray_head.address, "script": "print(1)"}),
                      namespace)
    await runner_pod(kube, "fine", namespace, running_operator)

    both = await status_where(kube, "both", namespace, lambda s: bool(s.get("message")),
                              "RayJob both reported", running_operator)
    assert both["message"] == (
        f"spec.cluster='c', spec.address='{ray_head.address}', spec.clusterSpec absent: set "
        "exactly one (a Ray name in this namespace, a job API URL, or the spec of a Ray of the "
        "job's own)"
    )
    assert both["reason"] == "InvalidSpec"
    bad = await status_where(kube, "bad-url", namespace, lambda s: bool(s.get("message")),
                             "RayJob bad-url reported", running_operator)
    assert bad["message"].startswith("spec.address='head:8265': use an http:// or https:// URL")
    for name, status in (("both", both), ("bad-url", bad)):
        warnings = [e for e in await events_of(kube, name, namespace) if e["type"] == "Warning"]
        assert [(e["reason"], e["message"]) for e in warnings] == [
            ("InvalidSpec", status["message"])
        ]
        assert await get_or_none(kube, POD, f"{name}-rayjob", namespace) is None


async def test_lost_children_come_back_with_the_same_submission_id(
    kube: Kube, namespace: str, running_operator: OperatorProcess, ray_head: RayHead,
) -> None:
    await kube.create(RAYJOB, rayjob("sturdy", {"address": ray_head.address, "script": "print(1)"}),
                      namespace)
    pod = await runner_pod(kube, "sturdy", namespace, running_operator)
    first_id = (await kube.get(CONFIGMAP, "sturdy-rayjob", namespace))["data"]["id"]
    await kube.delete(CONFIGMAP, "sturdy-rayjob", namespace)
    await kube.delete(POD, "sturdy-rayjob", namespace)
    await kube.delete(ROLE, "sturdy-rayjob", namespace)

    async def recreated() -> Obj | None:
        again = await get_or_none(kube, POD, "sturdy-rayjob", namespace)
        role = await get_or_none(kube, ROLE, "sturdy-rayjob", namespace)
        cm = await get_or_none(kube, CONFIGMAP, "sturdy-rayjob", namespace)
        if again and role and cm and again["metadata"]["uid"] != pod["metadata"]["uid"]:
            return cm
        return None

    configmap = await eventually("children recreated", recreated, 30, running_operator)
    assert configmap["data"]["id"] == first_id


async def mark_pod_failed(kube: Kube, name: str, ns: str) -> None:
    """What a kubelet reports for an evicted pod (the test's pod runner plays the kubelet)."""
    await kube.patch(POD, name, {"status": {"phase": "Failed", "reason": "Evicted"}}, ns,
                     subresource="status")


async def test_a_runner_lost_mid_job_is_replaced_and_resumes_the_same_job(
    kube: Kube, namespace: str, control_plane: LocalControlPlane,
    running_operator: OperatorProcess, ray_head: RayHead, tmp_path: Path,
) -> None:
    script = "import time\nprint('started', flush=True)\ntime.sleep(6)\nprint('done')\n"
    await kube.create(RAYJOB, rayjob("phoenix", {
        "address": ray_head.address, "script": script, "updateInterval": 0.5,
    }), namespace)
    first = await runner_pod(kube, "phoenix", namespace, running_operator)
    (tmp_path / "first").mkdir()
    proc = await start_pod(kube, control_plane, first, tmp_path / "first")
    try:
        running = await status_where(
            kube, "phoenix", namespace, lambda s: s.get("jobStatus") == "RUNNING",
            "RayJob phoenix RUNNING", running_operator,
        )
    finally:
        proc.kill()  # the node goes away with the runner on it
        proc.wait()
    await mark_pod_failed(kube, "phoenix-rayjob", namespace)

    async def replaced() -> Obj | None:
        pod = await get_or_none(kube, POD, "phoenix-rayjob", namespace)
        return pod if pod and pod["metadata"]["uid"] != first["metadata"]["uid"] else None

    try:
        second = await eventually("a new runner pod", replaced, 30, running_operator)
    except AssertionError as exc:
        pod = await get_or_none(kube, POD, "phoenix-rayjob", namespace)
        seen = [(e["reason"], e["message"]) for e in await events_of(kube, "phoenix", namespace)]
        raise AssertionError(
            f"{exc}\nstatus: {await job_status(kube, 'phoenix', namespace)}\n"
            f"pod: {pod and (pod['metadata'], pod.get('status'))}\nevents: {seen}"
        ) from None
    (tmp_path / "second").mkdir()
    result = await run_pod(kube, control_plane, second, tmp_path / "second")
    assert result.returncode == 0, result.output
    status = await status_where(
        kube, "phoenix", namespace, lambda s: s.get("jobStatus") == "SUCCEEDED",
        "RayJob phoenix SUCCEEDED", running_operator,
    )
    assert status["runnerRestarts"] == 1
    # The second runner followed the first one's job: Ray ran it once.
    (job,) = await ray_jobs(ray_head.address, "phoenix")
    assert job.submission_id == status["submissionId"] == running["submissionId"]
    assert job.status == "SUCCEEDED"
    (event,) = [e for e in await events_of(kube, "phoenix", namespace)
                if e["reason"] == "RunnerRestarted"]
    assert event["type"] == "Warning"
    assert "phase Failed" in event["message"] and "runner 2 of 3" in event["message"]


async def test_a_runner_ended_beyond_the_backoff_limit_is_kept_and_reported(
    kube: Kube, namespace: str, running_operator: OperatorProcess, ray_head: RayHead,
) -> None:
    await kube.create(RAYJOB, rayjob("once", {
        "address": ray_head.address, "script": "print(1)", "backoffLimit": 0,
    }), namespace)
    pod = await runner_pod(kube, "once", namespace, running_operator)
    await mark_pod_failed(kube, "once-rayjob", namespace)
    status = await status_where(
        kube, "once", namespace, lambda s: s.get("reason") == "RunnerEnded",
        "RayJob once reports its ended runner", running_operator, timeout=30,
    )
    assert "spec.backoffLimit=0" in status["message"], status
    assert "runnerRestarts" not in status
    await running_operator.more_reconciles(2, "rayjob")
    kept = await kube.get(POD, "once-rayjob", namespace)
    assert kept["metadata"]["uid"] == pod["metadata"]["uid"], "kept for its log, not replaced"


async def test_example_manifest_applies(
    kube: Kube, namespace: str, running_operator: OperatorProcess,
) -> None:
    manifest = yaml.safe_load((ROOT / "examples" / "rayjob.yaml").read_text())
    try:
        created = await kube.apply_manifest(manifest, namespace)
    except KubeError as exc:  # pragma: no cover - the message says which field
        raise AssertionError(f"examples/rayjob.yaml rejected: {exc}") from None
    name = created["metadata"]["name"]
    # Its Ray does not exist here: the operator says it waits for it.
    status = await status_where(kube, name, namespace, lambda s: bool(s.get("message")),
                                f"RayJob {name} waiting", running_operator)
    assert status["message"].startswith(f"waiting for Ray '{manifest['spec']['cluster']}'")


async def test_a_runner_runs_as_an_existing_service_account_with_only_its_job_s_rights(
    kube: Kube, namespace: str, control_plane: LocalControlPlane,
    running_operator: OperatorProcess, ray_head: RayHead, tmp_path: Path,
) -> None:
    """What IRSA or Pod Identity need: the runner as the user's account, bound to the job's
    Role; the account is the user's and stays when the job goes."""
    await kube.create(SERVICE_ACCOUNT, {
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {
            "name": "ml-irsa",
            "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/ml"}},
    }, namespace)
    await kube.create(RAYJOB, rayjob("irsa", {
        "address": ray_head.address, "script": "print('as ml-irsa')",
        "serviceAccountName": "ml-irsa",
        "runnerTemplate": {"metadata": {"labels": {"team": "ml"}}},
    }), namespace)
    pod = await runner_pod(kube, "irsa", namespace, running_operator)
    assert pod["spec"]["serviceAccountName"] == "ml-irsa"
    assert pod["metadata"]["labels"]["team"] == "ml"
    binding = await kube.get(ROLE_BINDING, "irsa-rayjob", namespace)
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "ml-irsa", "namespace": namespace}]
    assert await kube.get_or_none(SERVICE_ACCOUNT, "irsa-rayjob", namespace) is None
    # The pod's own token (for ml-irsa) is all the runner has: the job's Role is enough.
    result = await run_pod(kube, control_plane, pod, tmp_path)
    assert result.returncode == 0, result.output
    await status_where(kube, "irsa", namespace, lambda s: s.get("jobStatus") == "SUCCEEDED",
                       "RayJob irsa SUCCEEDED", running_operator)
    await kube.delete(RAYJOB, "irsa", namespace)
    await eventually("the binding goes with the job",
                     lambda: absent(kube, ROLE_BINDING, "irsa-rayjob", namespace),
                     operator=running_operator)
    assert await kube.get_or_none(SERVICE_ACCOUNT, "ml-irsa", namespace) is not None


async def test_a_runner_pod_that_cannot_start_is_reported_with_the_kubelet_s_reason(
    kube: Kube, namespace: str, running_operator: OperatorProcess, ray_head: RayHead,
) -> None:
    await kube.create(RAYJOB, rayjob("stuck", {
        "address": ray_head.address, "script": "print(1)", "runnerImage": "runner:missing",
    }), namespace)
    pod = await runner_pod(kube, "stuck", namespace, running_operator)
    # The test plays the kubelet of a node that cannot pull the image.
    message = 'Back-off pulling image "runner:missing": not found'
    await kube.patch(POD, pod["metadata"]["name"], {"status": {
        "phase": "Pending",
        "containerStatuses": [{
            "name": "runner", "image": "runner:missing", "imageID": "", "ready": False,
            "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": message}},
        }],
    }}, namespace, "status")
    status = await status_where(
        kube, "stuck", namespace, lambda s: s.get("reason") == "RunnerNotStarted",
        "RayJob stuck reports its runner", running_operator, timeout=15,
    )
    assert status["message"] == (
        f"the runner pod stuck-rayjob cannot start: ImagePullBackOff: {message}")
    await running_operator.more_reconciles(3, "rayjob")
    warnings = [e for e in await events_of(kube, "stuck", namespace)
                if e["reason"] == "RunnerNotStarted"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"


async def test_a_job_the_runner_lost_is_stopped_once_its_job_api_answers_again(
    kube: Kube, namespace: str, control_plane: LocalControlPlane,
    running_operator: OperatorProcess, tmp_path: Path,
) -> None:
    with RayHead(num_cpus=1) as head:
        await kube.create(RAYJOB, rayjob("lost", {
            "address": head.address, "script": SLEEPER, "updateInterval": 0.5,
        }), namespace)
        pod = await runner_pod(kube, "lost", namespace, running_operator)
        # The runner gives up after 3 s unreachable (its ConfigMap's knob; 60 s by default).
        await kube.patch(CONFIGMAP, "lost-rayjob", {"data": {"unreachableTimeoutSeconds": "3"}},
                         namespace)
        proc = await start_pod(kube, control_plane, pod, tmp_path)
        dashboard = None
        try:
            await status_where(kube, "lost", namespace, lambda s: s.get("jobStatus") == "RUNNING",
                               "RayJob lost RUNNING", running_operator)
            dashboard = head.dashboard_process()
            dashboard.suspend()  # the job API stops answering; the job itself goes on
            result = await finish(proc, timeout=120)
            assert result.returncode == 1, result.output
            status = await status_where(
                kube, "lost", namespace, lambda s: s.get("reason") == "JobLost",
                "RayJob lost gives the job up", running_operator,
            )
            assert not status.get("lostJobStopped")
            # Tried and failed (the API still does not answer), and tried again.
            await running_operator.more_reconciles(2, "rayjob", result="error")
            kept = await kube.get(RAYJOB, "lost", namespace)
            assert FINALIZER in kept["metadata"]["finalizers"], "deleting it now would lose it"
            reasons = {e["reason"] for e in await events_of(kube, "lost", namespace)}
            assert "FailedStop" in reasons, reasons
        finally:
            if proc.poll() is None:
                proc.kill()
            if dashboard is not None:
                dashboard.resume()
        status = await status_where(
            kube, "lost", namespace, lambda s: s.get("lostJobStopped") is True,
            "the lost job stopped once the job API answered", running_operator, timeout=90,
        )
        assert status["jobStatus"] == "FAILED" and status["reason"] == "JobLost"
        assert "stopped on Ray once its job API answered again" in status["message"]

        async def stopped() -> JobInfo | None:
            (job,) = await ray_jobs(head.address, "lost")
            return job if job.status == "STOPPED" else None

        await eventually("the Ray job STOPPED", stopped, 30)
        done = await kube.get(RAYJOB, "lost", namespace)
        assert FINALIZER not in done["metadata"].get("finalizers", [])
