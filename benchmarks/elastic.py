"""Clean-start benchmark: the simple example started again and again, with and without the wait.

Each round applies examples/ray-simple.yaml twice, one after the other: once recorded at builder
revision 2 (workers start at once and retry until the head answers: the baseline) and once at
the current revision (workers wait for the head in their ``wait-gcs`` init container). Real Ray
processes, the pod runner in process mode, the operator as ``ray-operator run``. For each start:
seconds from apply to the head Ready, to ``Health=True``, the gap between the two, and the
worker restarts. Prints the figures and writes benchmarks/results/elastic.json. Not a timed test.

    .venv/bin/python benchmarks/elastic.py [--rounds 3]
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
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results_file import RESULTS, write_results  # noqa: E402
from ray_operator.api.constants import ANNOTATION_DEFAULTS  # noqa: E402
from ray_operator.api.crd import all_crds  # noqa: E402
from ray_operator.builders.defaults import (  # noqa: E402
    CURRENT_REVISION,
    Defaults,
    builtin_templates,
)
from ray_operator.kube import POD, RAY, Kube  # noqa: E402
from ray_operator.localkube.control_plane import LocalControlPlane  # noqa: E402
from ray_operator.localkube.crds import install_crds  # noqa: E402
from ray_operator.localkube.pod_runner import PodRunner  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "default"
BASELINE_REVISION = 2
IMAGE = "rayproject/ray:2.60.0"  # recorded only: the pod runner runs the commands, not images


def manifest(name: str, revision: int) -> dict[str, Any]:
    """The simple example, its defaults recorded at ``revision`` before the operator sees it."""
    doc: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "ray-simple.yaml").read_text())
    templates = builtin_templates(revision, IMAGE)
    doc["metadata"] = {
        "name": name,
        "annotations": {ANNOTATION_DEFAULTS: Defaults(revision, templates).annotation()},
    }
    return doc


async def start_once(kube: Kube, runner: PodRunner, name: str, revision: int) -> dict[str, Any]:
    """Apply, wait for Health=True, count restarts, delete and wait for the pods to go."""
    begin = time.monotonic()
    await kube.create(RAY, manifest(name, revision), NAMESPACE)
    head_ready: float | None = None
    while True:
        status = (await kube.get(RAY, name, NAMESPACE)).get("status") or {}
        now = time.monotonic() - begin
        if head_ready is None and status.get("headReady") == "1/1":
            head_ready = now
        if status.get("health") == "True":
            healthy = now
            break
        if now > 600:
            raise TimeoutError(f"{name}: not healthy after 600 s: {status}")
        await asyncio.sleep(0.5)
    pods = await kube.list(POD, NAMESPACE, f"ray.kubeflow.org/cluster={name}")
    restarts = sum(
        c.get("restartCount", 0)
        for p in pods
        if p["metadata"]["labels"].get("ray.kubeflow.org/role") == "worker"
        for c in (p.get("status") or {}).get("containerStatuses") or []
    )
    await kube.delete(RAY, name, NAMESPACE)
    while any(key[1].startswith(f"{name}-") for key in runner.pods):
        await asyncio.sleep(0.5)
    head = head_ready if head_ready is not None else healthy
    return {
        "revision": revision,
        "head_ready_s": round(head, 1),
        "healthy_s": round(healthy, 1),
        "after_head_s": round(healthy - head, 1),
        "worker_restarts": restarts,
    }


def summary(starts: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, min and max of each figure."""
    out: dict[str, Any] = {"starts": len(starts)}
    for key in ("head_ready_s", "healthy_s", "after_head_s", "worker_restarts"):
        values = [s[key] for s in starts]
        out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    out["starts_without_restart"] = sum(1 for s in starts if s["worker_restarts"] == 0)
    return out


async def main(rounds: int) -> dict[str, Any]:
    cp = LocalControlPlane().start()
    kube = await Kube.connect(str(cp.kubeconfig))
    operator: subprocess.Popen[bytes] | None = None
    runner: PodRunner | None = None
    starts: list[dict[str, Any]] = []
    try:
        await install_crds(kube, all_crds())
        log = (cp.workdir / "operator.log").open("wb")
        operator = subprocess.Popen(
            [sys.executable, "-m", "ray_operator", "run"],
            env={**os.environ, "KUBECONFIG": str(cp.kubeconfig)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        runner = await PodRunner(kube, namespace=NAMESPACE, run_containers=True).start()
        for index in range(rounds):
            # Alternate which goes first, so neither always meets a warmer machine.
            order = [BASELINE_REVISION, CURRENT_REVISION]
            for revision in order if index % 2 == 0 else order[::-1]:
                result = await start_once(kube, runner, f"start-r{revision}-{index}", revision)
                print(json.dumps(result), flush=True)
                starts.append(result)
    finally:
        if runner is not None:
            await runner.stop()
        if operator is not None:
            operator.terminate()
            operator.wait(timeout=15)
        await kube.close()
        cp.stop()
    by_revision = {
        f"revision_{rev}": summary([s for s in starts if s["revision"] == rev])
        for rev in (BASELINE_REVISION, CURRENT_REVISION)
    }
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "example": "examples/ray-simple.yaml (1 head + 3 workers)",
        **by_revision,
        "runs": starts,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    result = asyncio.run(main(args.rounds))
    write_results(result, RESULTS / "elastic.json")
    for rev in (BASELINE_REVISION, CURRENT_REVISION):
        s = result[f"revision_{rev}"]
        print(
            f"revision {rev}: Health=True {s['after_head_s']['median']} s after the head "
            f"(min {s['after_head_s']['min']}, max {s['after_head_s']['max']}), "
            f"worker restarts median {s['worker_restarts']['median']} "
            f"(max {s['worker_restarts']['max']}), "
            f"{s['starts_without_restart']}/{s['starts']} starts without a restart"
        )
