"""Jobs benchmark: 20 trivial jobs through the runner vs. Ray's JobSubmissionClient directly.

Prints the figures and writes benchmarks/results/jobs.json. Not a timed test. Needs the kube
binaries (scripts/build-kube.sh) for the apiserver the runner writes its ConfigMaps to.

    .venv/bin/python benchmarks/jobs.py [--jobs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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


def runner_rss(cp: LocalControlPlane, kube_ns: str, address: str) -> float:
    """Peak RSS (MB) of one runner process following one job, sampled every 50 ms."""
    import os

    env = {
        **os.environ,
        "KUBECONFIG": str(cp.kubeconfig),
        "RAY_JOB_CONFIGMAP": "rss",
        "RAY_JOB_NAMESPACE": kube_ns,
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


async def main(n: int) -> dict[str, object]:
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
        "targets": {"runner_vs_direct": 1.2, "status_lag_p95_s": 2.0, "runner_peak_rss_mb": 150},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20)
    result = asyncio.run(main(parser.parse_args().jobs))
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results" / "jobs.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")
