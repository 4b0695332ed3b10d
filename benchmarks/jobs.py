"""Jobs benchmark: 20 trivial jobs through the runner vs. Ray's JobSubmissionClient directly;
then one job whose log is 1 GiB, with a 1 GiB file to upload, archived by a runner process to
the local S3 server (moto), its peak RSS sampled, its upload time against boto3's own
``upload_file`` of the same file in the same run.

Prints the figures and writes benchmarks/results/jobs.json. Not a timed test. Needs the kube
binaries (scripts/build-kube.sh) for the apiserver the runner writes its ConfigMaps to.

    .venv/bin/python benchmarks/jobs.py [--jobs 20] [--upload-mib 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results_file import RESULTS, write_results  # noqa: E402
from ray_operator.jobs.ray_api import RayJobsClient  # noqa: E402
from ray_operator.jobs.runner import JobRunner  # noqa: E402
from ray_operator.jobs.status_store import ConfigMapStore  # noqa: E402
from ray_operator.kube import CONFIGMAP, NAMESPACE, Kube  # noqa: E402
from ray_operator.localkube.control_plane import LocalControlPlane  # noqa: E402
from tests.fixtures.ray_head import RayHead  # noqa: E402

SCRIPT = "print('ok')"
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def direct(address: str, n: int) -> float:
    """The baseline: Ray's own SDK submits and polls every job."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    start = time.monotonic()
    ids = [client.submit_job(entrypoint=f'python -c "{SCRIPT}"') for _ in range(n)]
    pending = set(ids)
    while pending:
        for sid in list(pending):
            if (
                str(client.get_job_status(sid)) in TERMINAL
                or client.get_job_status(sid).is_terminal()
            ):
                pending.discard(sid)
        time.sleep(0.2)
    return time.monotonic() - start


async def through_runner(kube: Kube, address: str, n: int) -> tuple[float, list[float]]:
    ns = f"bench-{int(time.time())}"
    await kube.create(
        NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
    )
    names = [f"job-{i}" for i in range(n)]
    for name in names:
        await kube.create(
            CONFIGMAP,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name},
                "data": {
                    "resourceURL": address,
                    "jobdata.jobScript": SCRIPT,
                    "updateInterval": "1",
                },
            },
            ns,
        )
    seen: dict[str, float] = {}

    async def watch() -> None:
        async for _, obj in kube.watch(CONFIGMAP, ns):
            data = obj.get("data") or {}
            if data.get("status.jobStatus") in TERMINAL:
                seen.setdefault(obj["metadata"]["name"], time.time())

    watcher = asyncio.create_task(watch())
    start = time.monotonic()
    runners = [
        JobRunner(ConfigMapStore(kube, ns, name), name, ns, echo_logs=False) for name in names
    ]
    codes = await asyncio.gather(*(r.run() for r in runners))
    total = time.monotonic() - start
    await asyncio.sleep(1)
    watcher.cancel()
    lags = []
    async with RayJobsClient(address) as client:
        for name in names:
            sid = (await kube.get(CONFIGMAP, name, ns))["data"]["id"]
            info = await client.info(sid)
            assert info.end_time is not None
            lags.append(seen[name] - info.end_time.timestamp())
    assert all(c == 0 for c in codes), codes
    await kube.delete(NAMESPACE, ns)
    return total, lags


def runner_rss(
    cp: LocalControlPlane, kube_ns: str, address: str, name: str = "rss",
    extra_env: dict[str, str] | None = None,
) -> float:
    """Peak RSS (MB) of one runner process following one job, sampled every 50 ms."""
    import os

    env = {
        **os.environ,
        "KUBECONFIG": str(cp.kubeconfig),
        "RAY_JOB_CONFIGMAP": name,
        "RAY_JOB_NAMESPACE": kube_ns,
        **(extra_env or {}),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "ray_operator.jobs"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    return peak / 2**20


# Prints ``mib`` MiB of 1 KiB lines: a log of that size.
BIG_LOG = """
import sys
line = "x" * 1023 + "\\n"
for _ in range({lines}):
    sys.stdout.write(line)
"""
BUCKET = "bench-uploads"


async def uploads(
    cp: LocalControlPlane, kube: Kube, address: str, mib: int, workdir: Path
) -> dict[str, object]:
    """A runner archives a ``mib`` MiB log and a ``mib`` MiB file; boto3 uploads the same file."""
    from moto.server import ThreadedMotoServer

    from ray_operator.localkube.control_plane import free_port
    from tests.fixtures.s3 import ACCESS_KEY, REGION, SECRET_KEY, s3_client

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    keys = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION}
    try:
        s3 = s3_client(endpoint)
        s3.create_bucket(Bucket=BUCKET)
        big = workdir / "big.bin"
        with big.open("wb") as out:
            block = os.urandom(2**20)
            for _ in range(mib):
                out.write(block)
        # The baseline: boto3's managed transfer (defaults, as aws s3 cp has) of as many bytes
        # as the runner sends: the file twice (the runner: the log, then the file).
        start = time.monotonic()
        s3.upload_file(str(big), BUCKET, "baseline/big-1.bin")
        s3.upload_file(str(big), BUCKET, "baseline/big-2.bin")
        baseline_s = time.monotonic() - start
        ns = f"bench-upload-{int(time.time())}"
        await kube.create(NAMESPACE, {"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": ns}})
        await kube.create(CONFIGMAP, {
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"},
            "data": {
                "resourceURL": address,
                "jobdata.jobScript": BIG_LOG.format(lines=mib * 1024),
                "s3.endpoint": endpoint,
                "s3upload.bucket": BUCKET,
                "s3upload.files": str(big),
            },
        }, ns)
        start = time.monotonic()
        runner = asyncio.create_task(
            asyncio.to_thread(runner_rss, cp, ns, address, "big", keys)
        )
        ended = None  # when the ConfigMap first shows the job ended: the archive starts then
        while not runner.done():
            data = (await kube.get(CONFIGMAP, "big", ns))["data"]
            if ended is None and data.get("status.jobStatus") in TERMINAL:
                ended = time.monotonic()
            await asyncio.sleep(0.2)
        rss = await runner
        done = time.monotonic()
        assert ended is not None
        data = (await kube.get(CONFIGMAP, "big", ns))["data"]
        assert data.get("status.jobStatus") == "SUCCEEDED", data
        listed = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
        mine = {k: v for k, v in listed.items() if not k.startswith("baseline/")}
        # Whole: the file byte for byte in size, the log at least its 1 KiB lines.
        assert sorted(mine.values())[0] >= mib * 2**20 and len(mine) == 2, listed
        await kube.delete(NAMESPACE, ns)
        big.unlink()
    finally:
        server.stop()
    return {
        "upload_mib": mib,
        "objects": mine,
        "runner_job_s": round(ended - start, 1),
        "runner_archive_s": round(done - ended, 1),
        "boto3_upload_file_twice_s": round(baseline_s, 1),
        "archive_vs_boto3": round((done - ended) / baseline_s, 2),
        "runner_peak_rss_mb_with_uploads": round(rss, 1),
    }


async def main(n: int, upload_mib: int) -> dict[str, object]:
    with LocalControlPlane() as cp, RayHead() as head:
        kube = await Kube.connect(str(cp.kubeconfig))
        # Warm Ray up (first job starts workers), so neither side pays for it.
        direct(head.address, 2)
        direct_s = direct(head.address, n)
        runner_s, lags = await through_runner(kube, head.address, n)
        await kube.create(
            NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench-rss"}}
        )
        await kube.create(
            CONFIGMAP,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "rss"},
                "data": {"resourceURL": head.address, "jobdata.jobScript": SCRIPT},
            },
            "bench-rss",
        )
        rss = runner_rss(cp, "bench-rss", head.address)
        big = await uploads(cp, kube, head.address, upload_mib, Path("/var/tmp"))
        await kube.close()
    lags.sort()
    p95 = lags[max(0, int(round(0.95 * len(lags))) - 1)]
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {psutil.cpu_count()} cores "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}",
        "jobs": n,
        "direct_total_s": round(direct_s, 2),
        "runner_total_s": round(runner_s, 2),
        "runner_vs_direct": round(runner_s / direct_s, 2),
        "status_lag_p50_s": round(statistics.median(lags), 3),
        "status_lag_p95_s": round(p95, 3),
        "runner_peak_rss_mb": round(rss, 1),
        "uploads": big,
        "targets": {"runner_vs_direct": 1.2, "status_lag_p95_s": 2.0, "runner_peak_rss_mb": 150,
                    "runner_peak_rss_mb_with_uploads": 150},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--upload-mib", type=int, default=1024)
    args = parser.parse_args()
    result = asyncio.run(main(args.jobs, args.upload_mib))
    print(json.dumps(result, indent=2))
    write_results(result, RESULTS / "jobs.json")
