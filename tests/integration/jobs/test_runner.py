"""The runner end to end: a ConfigMap on the real apiserver, a real Ray head, S3 on moto."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from ray_operator.jobs.ray_api import RayJobsClient
from ray_operator.kube import CONFIGMAP, Kube
from ray_operator.localkube.control_plane import LocalControlPlane, free_port
from tests.fixtures.ray_head import RayHead
from tests.fixtures.s3 import ACCESS_KEY, BUCKET, SECRET_KEY
from tests.integration.jobs.runner_process import (
    configmap,
    run_runner,
    start_runner,
    wait_for_data,
)

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

PRINT_KWARGS = """
import argparse, json
class ParseKwargs(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, dict())
        for value in values:
            key, value = value.split('=')
            getattr(namespace, self.dest)[key] = value
parser = argparse.ArgumentParser()
parser.add_argument('-k', '--kwargs', nargs='*', action=ParseKwargs)
args = parser.parse_args()
import os
print("KWARGS=" + json.dumps(args.kwargs, sort_keys=True))
print("MODE=" + os.environ.get("MODE", "unset"))
"""


@pytest.fixture
def creds_dir(tmp_path: Path) -> Path:
    """A mounted S3 credentials Secret: one file per key."""
    d = tmp_path / "s3-secret"
    d.mkdir()
    (d / "AWS_ACCESS_KEY_ID").write_text(ACCESS_KEY)
    (d / "AWS_SECRET_ACCESS_KEY").write_text(SECRET_KEY)
    return d


async def ray_jobs_named(address: str, job_name: str, token: str | None = None) -> list[Any]:
    async with RayJobsClient(address, token=token) as client:
        return [j for j in await client.list() if j.metadata.get("job-name") == job_name]


async def test_inline_job_succeeds_with_status_and_logs_in_s3(
    kube: Kube,
    namespace: str,
    control_plane: LocalControlPlane,
    ray_head: RayHead,
    s3: Any,
    s3_server: str,
    creds_dir: Path,
) -> None:
    params = {"text": "two  spaces, 'quotes' and Zürich", "n": 3}
    await kube.create(
        CONFIGMAP,
        configmap(
            "job-inline",
            {
                "resourceURL": ray_head.address,
                "jobdata.jobScript": PRINT_KWARGS,
                "jobdata.scriptLocation": "inline",
                "jobdata.jobParameters": json.dumps(params),
                "jobdata.scriptMetadata": json.dumps({"env": {"MODE": "fast"}}),
                "jobdata.scriptExtraLocation": "inline",
                "s3.endpoint": s3_server,
                "s3.secret": "my-s3-secret",
                "s3.secure": "false",
                "s3upload.bucket": BUCKET,
                "updateInterval": "0.5",
            },
        ),
        namespace,
    )
    result = await run_runner(
        control_plane.kubeconfig, namespace, "job-inline", RAY_JOB_S3_CREDENTIALS_DIR=str(creds_dir)
    )
    assert result.returncode == 0, result.output
    data = (await kube.get(CONFIGMAP, "job-inline", namespace))["data"]
    assert data["status.jobStatus"] == "SUCCEEDED"
    for key in ("status.submitTime", "status.startTime", "status.endTime"):
        assert RFC3339.match(data[key]), (key, data[key])
    assert data["status.logsURL"] == f"s3://{BUCKET}/job-inline/logs"
    assert f"s3://{BUCKET}/job-inline/logs" in data["status.message"]
    logs = s3.get_object(Bucket=BUCKET, Key="job-inline/logs")["Body"].read().decode()
    kwargs = json.loads(logs.split("KWARGS=")[1].splitlines()[0])
    assert kwargs == {
        "s3_secret": "my-s3-secret",
        "s3_bucket": BUCKET,
        "s3_prefix": "job-inline/",
        "s3_secure": "false",
        "text": params["text"],
        "n": "3",
    }
    assert "MODE=fast" in logs
    # The job's log streams into the runner's own output (the Pod log)...
    assert "KWARGS=" in result.output
    # ...and credentials appear nowhere.
    for text in (result.output, json.dumps(data)):
        assert SECRET_KEY not in text and ACCESS_KEY not in text
    assert len(await ray_jobs_named(ray_head.address, "job-inline")) == 1


@pytest.mark.parametrize("style", ["bucket:key", "s3://"])
async def test_script_and_parameters_from_s3(
    kube: Kube,
    namespace: str,
    control_plane: LocalControlPlane,
    ray_head: RayHead,
    s3: Any,
    s3_server: str,
    creds_dir: Path,
    style: str,
) -> None:
    s3.put_object(Bucket=BUCKET, Key="ray/code.py", Body=PRINT_KWARGS.encode())
    s3.put_object(Bucket=BUCKET, Key="ray/parameters.json", Body=b'{"alpha": "1"}')
    s3.put_object(Bucket=BUCKET, Key="ray/metadata.json", Body=b'{"env": {"MODE": "s3"}}')

    def ref(key: str) -> str:
        return f"{BUCKET}:{key}" if style == "bucket:key" else f"s3://{BUCKET}/{key}"

    await kube.create(
        CONFIGMAP,
        configmap(
            "job-s3",
            {
                "resourceURL": ray_head.address,
                "jobdata.jobScript": ref("ray/code.py"),
                "jobdata.scriptLocation": "s3",
                "jobdata.jobParameters": ref("ray/parameters.json"),
                "jobdata.scriptMetadata": ref("ray/metadata.json"),
                "jobdata.scriptExtraLocation": "s3",
                "s3.endpoint": s3_server.removeprefix("http://"),
                "s3.secure": "false",
                "s3.secret": "mysecret-s3",
                "s3upload.bucket": BUCKET,
                "updateInterval": "0.5",
            },
        ),
        namespace,
    )
    result = await run_runner(
        control_plane.kubeconfig, namespace, "job-s3", RAY_JOB_S3_CREDENTIALS_DIR=str(creds_dir)
    )
    assert result.returncode == 0, result.output
    logs = s3.get_object(Bucket=BUCKET, Key="job-s3/logs")["Body"].read().decode()
    assert '"alpha": "1"' in logs and "MODE=s3" in logs


async def test_kill_stops_the_job(
    kube: Kube, namespace: str, control_plane: LocalControlPlane, ray_head: RayHead
) -> None:
    await kube.create(
        CONFIGMAP,
        configmap(
            "job-kill",
            {
                "resourceURL": ray_head.address,
                "jobdata.jobScript": "import time\nprint('started', flush=True)\ntime.sleep(120)",
                "updateInterval": "0.5",
            },
        ),
        namespace,
    )
    proc = start_runner(control_plane.kubeconfig, namespace, "job-kill")
    try:
        await wait_for_data(kube, namespace, "job-kill", "status.jobStatus", {"RUNNING"})
        await kube.patch(CONFIGMAP, "job-kill", {"data": {"kill": "true"}}, namespace)
        returncode = await asyncio.to_thread(proc.wait, 60)
    finally:
        proc.kill()
    data = (await kube.get(CONFIGMAP, "job-kill", namespace))["data"]
    assert data["status.jobStatus"] == "STOPPED"
    assert returncode == 1
    async with RayJobsClient(ray_head.address) as client:
        assert (await client.info(data["id"])).status == "STOPPED"


async def test_deadline_stops_and_fails_the_job(
    kube: Kube, namespace: str, control_plane: LocalControlPlane, ray_head: RayHead
) -> None:
    await kube.create(
        CONFIGMAP,
        configmap(
            "job-deadline",
            {
                "resourceURL": ray_head.address,
                "jobdata.jobScript": "import time\ntime.sleep(120)",
                "activeDeadlineSeconds": "4",
                "updateInterval": "0.5",
            },
        ),
        namespace,
    )
    result = await run_runner(control_plane.kubeconfig, namespace, "job-deadline", timeout=90)
    assert result.returncode == 1
    data = (await kube.get(CONFIGMAP, "job-deadline", namespace))["data"]
    assert data["status.jobStatus"] == "FAILED"
    assert data["status.reason"] == "DeadlineExceeded"
    assert "activeDeadlineSeconds=4 exceeded" in data["status.message"]
    async with RayJobsClient(ray_head.address) as client:
        assert (await client.info(data["id"])).status == "STOPPED"


@pytest.mark.parametrize("step", ["after-id", "after-submit"])
async def test_sigkill_and_restart_never_submits_twice(
    kube: Kube, namespace: str, control_plane: LocalControlPlane, ray_head: RayHead, step: str
) -> None:
    name = f"job-crash-{step}"
    await kube.create(
        CONFIGMAP,
        configmap(
            name,
            {
                "resourceURL": ray_head.address,
                "jobdata.jobScript": "print('ran once')",
                "updateInterval": "0.5",
            },
        ),
        namespace,
    )
    first = await run_runner(
        control_plane.kubeconfig, namespace, name, RAY_JOB_RUNNER_CRASH_AT=step
    )
    assert first.returncode == -signal.SIGKILL
    data = (await kube.get(CONFIGMAP, name, namespace))["data"]
    assert data["id"]  # persisted before the kill
    assert "status.submitTime" not in data
    assert len(await ray_jobs_named(ray_head.address, name)) == (1 if step == "after-submit" else 0)
    second = await run_runner(control_plane.kubeconfig, namespace, name)
    assert second.returncode == 0, second.output
    data = (await kube.get(CONFIGMAP, name, namespace))["data"]
    assert data["status.jobStatus"] == "SUCCEEDED"
    jobs = await ray_jobs_named(ray_head.address, name)
    assert [j.submission_id for j in jobs] == [data["id"]]


async def test_unreachable_cluster_fails_naming_the_address(
    kube: Kube, namespace: str, control_plane: LocalControlPlane
) -> None:
    address = f"http://127.0.0.1:{free_port()}"
    await kube.create(
        CONFIGMAP,
        configmap(
            "job-unreachable",
            {
                "resourceURL": address,
                "jobdata.jobScript": "print(1)",
                "unreachableTimeoutSeconds": "2",
            },
        ),
        namespace,
    )
    result = await run_runner(control_plane.kubeconfig, namespace, "job-unreachable", timeout=60)
    assert result.returncode == 1
    data = (await kube.get(CONFIGMAP, "job-unreachable", namespace))["data"]
    assert data["status.jobStatus"] == "FAILED"
    assert data["status.reason"] == "RayUnreachable"
    assert address in data["status.message"] and "ConnectError" in data["status.message"]


async def test_missing_s3_objects_and_invalid_json_are_named(
    kube: Kube,
    namespace: str,
    control_plane: LocalControlPlane,
    ray_head: RayHead,
    s3: Any,
    s3_server: str,
    creds_dir: Path,
) -> None:
    base = {
        "resourceURL": ray_head.address,
        "s3.endpoint": s3_server,
        "s3.secure": "false",
    }
    cases = {
        "job-noscript": (
            {"jobdata.jobScript": f"{BUCKET}:ray/missing.py", "jobdata.scriptLocation": "s3"},
            [f"bucket '{BUCKET}'", "key 'ray/missing.py'", "jobdata.jobScript"],
        ),
        "job-noparams": (
            {
                "jobdata.jobScript": "print(1)",
                "jobdata.jobParameters": f"s3://{BUCKET}/ray/params.json",
                "jobdata.scriptExtraLocation": "s3",
            },
            [f"bucket '{BUCKET}'", "key 'ray/params.json'", "jobdata.jobParameters"],
        ),
        "job-badjson": (
            {"jobdata.jobScript": "print(1)", "jobdata.jobParameters": '{"a": 1'},
            ["jobdata.jobParameters=", "invalid JSON"],
        ),
    }
    for name, (extra, expected) in cases.items():
        await kube.create(CONFIGMAP, configmap(name, {**base, **extra}), namespace)
        result = await run_runner(
            control_plane.kubeconfig, namespace, name, RAY_JOB_S3_CREDENTIALS_DIR=str(creds_dir)
        )
        assert result.returncode == 1
        data = (await kube.get(CONFIGMAP, name, namespace))["data"]
        assert data["status.jobStatus"] == "FAILED"
        for text in expected:
            assert text in data["status.message"], (name, data["status.message"])
        assert "id" not in data  # nothing was submitted


async def test_upload_files_are_archived(
    kube: Kube,
    namespace: str,
    control_plane: LocalControlPlane,
    ray_head: RayHead,
    s3: Any,
    s3_server: str,
    creds_dir: Path,
    tmp_path: Path,
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    # The job writes to a volume it shares with the runner (here: the same machine's disk).
    script = f"open({str(shared / 'result.txt')!r}, 'w').write('model accuracy 0.99')"
    await kube.create(
        CONFIGMAP,
        configmap(
            "job-files",
            {
                "resourceURL": ray_head.address,
                "jobdata.jobScript": script,
                "s3.endpoint": s3_server,
                "s3.secure": "false",
                "s3upload.bucket": BUCKET,
                "s3upload.files": f"{shared / 'result.txt'}",
                "updateInterval": "0.5",
            },
        ),
        namespace,
    )
    result = await run_runner(
        control_plane.kubeconfig, namespace, "job-files", RAY_JOB_S3_CREDENTIALS_DIR=str(creds_dir)
    )
    assert result.returncode == 0, result.output
    body = s3.get_object(Bucket=BUCKET, Key="job-files/files/result.txt")["Body"].read()
    assert body == b"model accuracy 0.99"
    assert (
        "1 file(s) uploaded"
        in (await kube.get(CONFIGMAP, "job-files", namespace))["data"]["status.message"]
    )


async def test_token_from_a_mounted_secret(
    kube: Kube,
    namespace: str,
    control_plane: LocalControlPlane,
    ray_head_with_token: RayHead,
    tmp_path: Path,
) -> None:
    head = ray_head_with_token
    assert head.token
    token_file = tmp_path / "token"
    token_file.write_text(head.token)
    await kube.create(
        CONFIGMAP,
        configmap(
            "job-token",
            {
                "resourceURL": head.address,
                "resourcesecret": "ray-token",
                "jobdata.jobScript": "print('with token')",
                "updateInterval": "0.5",
            },
        ),
        namespace,
    )
    result = await run_runner(
        control_plane.kubeconfig, namespace, "job-token", RAY_JOB_RAY_TOKEN_FILE=str(token_file)
    )
    assert result.returncode == 0, result.output
    assert head.token not in result.output
    data = (await kube.get(CONFIGMAP, "job-token", namespace))["data"]
    assert data["status.jobStatus"] == "SUCCEEDED"
    assert head.token not in json.dumps(data)


async def test_head_lost_while_running_fails_the_job(
    kube: Kube, namespace: str, control_plane: LocalControlPlane
) -> None:
    with RayHead(num_cpus=1) as head:
        await kube.create(
            CONFIGMAP,
            configmap(
                "job-lost",
                {
                    "resourceURL": head.address,
                    "jobdata.jobScript": "import time\ntime.sleep(120)",
                    "updateInterval": "0.5",
                    "unreachableTimeoutSeconds": "3",
                },
            ),
            namespace,
        )
        proc = start_runner(control_plane.kubeconfig, namespace, "job-lost")
        try:
            await wait_for_data(kube, namespace, "job-lost", "status.jobStatus", {"RUNNING"})
            head.stop(timeout=5)
            returncode = await asyncio.to_thread(proc.wait, 60)
        finally:
            proc.kill()
    assert returncode == 1
    data = (await kube.get(CONFIGMAP, "job-lost", namespace))["data"]
    assert data["status.jobStatus"] == "FAILED"
    assert data["status.reason"] == "JobLost"
    assert "lost the Ray head while job" in data["status.message"]
    assert head.address in data["status.message"]


async def test_s3_credentials_from_irsa_web_identity_settings(
    kube: Kube,
    namespace: str,
    control_plane: LocalControlPlane,
    ray_head: RayHead,
    s3: Any,
    s3_server: str,
    tmp_path: Path,
) -> None:
    """The settings EKS's IRSA webhook gives a pod (a role and a token file), with STS at the
    local server (moto accepts AssumeRoleWithWebIdentity): no static key anywhere, and the
    log still reaches S3. Without them the same runner has no credentials: the chain is what
    made the difference."""
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6bWw6cmF5In0.c2ln")
    no_keys = {
        "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true", "AWS_REGION": "us-east-1",
    }
    irsa = {
        "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/ray-jobs",
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
        "AWS_ROLE_SESSION_NAME": "runner",
        "AWS_ENDPOINT_URL_STS": s3_server,
    }
    for name, env in (("job-no-creds", no_keys), ("job-irsa", {**no_keys, **irsa})):
        await kube.create(
            CONFIGMAP,
            configmap(name, {
                "resourceURL": ray_head.address,
                "jobdata.jobScript": "print('hello from IRSA')",
                "s3.endpoint": s3_server,
                "s3upload.bucket": BUCKET,
                "updateInterval": "0.5",
            }),
            namespace,
        )
        await run_runner(control_plane.kubeconfig, namespace, name, **env)
    without = (await kube.get(CONFIGMAP, "job-no-creds", namespace))["data"]
    assert "log upload failed" in without["status.message"], without
    assert "status.logsURL" not in without
    with_irsa = (await kube.get(CONFIGMAP, "job-irsa", namespace))["data"]
    assert with_irsa["status.logsURL"] == f"s3://{BUCKET}/job-irsa/logs", with_irsa
    body = s3.get_object(Bucket=BUCKET, Key="job-irsa/logs")["Body"].read()
    assert b"hello from IRSA" in body
