"""Scaling benchmark: how fast Ray's autoscaler and the operator grow and shrink a group, and how
fast a cluster with GCS fault tolerance is whole again after its head dies.

Real Ray processes (the pod runner in process mode, ServiceAccount tokens for the autoscaler's
pod), the operator as ``ray-operator run``, the autoscaler as the operator deploys it. Per round:

- scale up: a job submits one 1-CPU task to a group at 0 workers (the head offers no CPU). From
  the submission: the autoscaler's decision (the group's ``replicas`` raised on the Ray), the
  worker pod's start (created to Ready), and the task running on the new worker (its node
  registered). Target: decision within one autoscaler period (5 s); the whole at most that plus
  the pod's start;
- scale down: from the task's end to the worker's pod gone. Target: idle timeout + 10 s;
- head failover (``spec.gcsFaultTolerance``, Debian's redis-server on the pod network's gateway,
  two workers): the head container SIGKILLed (as an OOM kill ends it) until Ray counts every
  node alive again; worker pod restarts counted (target 0).

Prints the figures, median and spread, and writes benchmarks/results/elastic_scaling.json.
Not a timed test.

    .venv/bin/python benchmarks/elastic_scaling.py [--rounds 3] [--idle-seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_file import RESULTS, write_results  # noqa: E402
from ray_operator.api.crd import all_crds  # noqa: E402
from ray_operator.builders.default_templates import default_head_template_v2  # noqa: E402
from ray_operator.jobs.ray_api import RayApiError, RayJobsClient, RayUnreachableError  # noqa: E402
from ray_operator.kube import NAMESPACE, POD, RAY, Kube  # noqa: E402
from ray_operator.localkube.control_plane import LocalControlPlane, free_port  # noqa: E402
from ray_operator.localkube.crds import install_crds  # noqa: E402
from ray_operator.localkube.pod_runner import PodRunner  # noqa: E402
from tests.dashboard_process import dashboard  # noqa: E402

Obj = dict[str, Any]
IMAGE = "rayproject/ray:2.60.0"  # recorded only: the pod runner runs the commands
PERIOD_S = 5.0  # Ray's autoscaler update interval (AUTOSCALER_UPDATE_INTERVAL_S)
TASK = """
import time, ray
ray.init()
@ray.remote(num_cpus=1)
def task():
    started = time.time()
    time.sleep(5)
    return started, time.time()
print("TIMES", *ray.get(task.remote()))
"""
ALIVE = "import ray\nray.init()\nprint('ALIVE', len([n for n in ray.nodes() if n['Alive']]))\n"


def autoscaled(idle: int) -> Obj:
    """examples/ray-autoscaling.yaml, its head offering no CPU, with the given idle time."""
    doc: Obj = yaml.safe_load((ROOT / "examples" / "ray-autoscaling.yaml").read_text())
    head = default_head_template_v2(IMAGE)
    ray = head["spec"]["containers"][0]
    ray["args"] = ["--num-cpus=0" if a.startswith("--num-cpus") else a for a in ray["args"]]
    doc["spec"]["head"] = {"template": head}
    doc["spec"]["autoscaling"]["idleTimeoutSeconds"] = idle
    return doc


def fault_tolerant(redis: str) -> Obj:
    doc: Obj = yaml.safe_load((ROOT / "examples" / "ray-simple.yaml").read_text())
    doc["metadata"]["name"] = "steady"
    doc["spec"]["worker"]["replicas"] = 2
    doc["spec"]["gcsFaultTolerance"] = {"redisAddress": redis}
    return doc


async def until(probe: Any, check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout} s (last {value!r})")
        await asyncio.sleep(0.2)


async def healthy(kube: Kube, ns: str, name: str) -> None:
    async def health() -> Any:
        return ((await kube.get(RAY, name, ns)).get("status") or {}).get("health")
    await until(health, lambda h: h == "True", 600, f"{name} Health=True")


def worker_pods(pods: list[Obj]) -> list[Obj]:
    return [p for p in pods if (p["metadata"].get("labels") or {}).get("ray.kubeflow.org/role")
            == "worker" and not p["metadata"].get("deletionTimestamp")]


def ready_at(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


async def scale_round(kube: Kube, ns: str, address: str, idle: int) -> Obj:
    """One task on a group at 0: up, run, down. Seconds of each part."""
    selector = "ray.kubeflow.org/cluster=elastic"

    async def replicas() -> int:
        return int((await kube.get(RAY, "elastic", ns))["spec"]["worker"].get("replicas") or 0)

    async with RayJobsClient(address, timeout=30) as client:
        job = f"bench-{secrets.token_hex(4)}"
        submitted = time.time()
        await client.submit(f"python -c {shlex.quote(TASK)}", submission_id=job)
        await until(replicas, lambda n: n >= 1, 120, "replicas raised")
        asked = time.time()
        (pod,) = await until(lambda: _workers(kube, ns, selector), lambda p: len(p) == 1, 120,
                             "a worker pod")
        created = datetime.fromisoformat(pod["metadata"]["creationTimestamp"]).timestamp()
        await until(lambda: _workers(kube, ns, selector), lambda p: p and ready_at(p[0]), 300,
                    "the worker Ready")
        ready = time.time()
        info = await until(lambda: client.info(job), lambda i: i.terminal, 300, "the job")
        logs = await client.logs(job)
        assert info.status == "SUCCEEDED", logs
    started, ended = (float(x) for x in next(
        line.split()[1:] for line in logs.splitlines() if line.startswith("TIMES ")))
    await until(lambda: kube.list(POD, ns, selector),
                lambda pods: not any(p["metadata"]["name"] == pod["metadata"]["name"]
                                     for p in pods), idle + 120, "the idle worker's pod gone")
    gone = time.time()
    return {
        "decision_s": round(asked - submitted, 2),
        "pod_created_to_ready_s": round(ready - created, 2),
        "submitted_to_task_running_s": round(started - submitted, 2),
        "pod_created_to_task_running_s": round(started - created, 2),
        "idle_to_gone_s": round(gone - ended, 2),
        "idle_timeout_s": idle,
    }


async def _workers(kube: Kube, ns: str, selector: str) -> list[Obj]:
    return worker_pods(await kube.list(POD, ns, selector))


async def alive(address: str) -> int:
    """Ray's count of alive nodes from a job (0 while the job API does not answer)."""
    try:
        async with RayJobsClient(address, timeout=15) as client:
            job = f"alive-{secrets.token_hex(4)}"
            await client.submit(f"python -c {shlex.quote(ALIVE)}", submission_id=job)
            info = await until(lambda: client.info(job), lambda i: i.terminal, 120, "count")
            logs = await client.logs(job)
    except (RayApiError, RayUnreachableError, TimeoutError):
        return 0
    found = [line.split()[1] for line in logs.splitlines() if line.startswith("ALIVE ")]
    return int(found[0]) if info.status == "SUCCEEDED" and found else 0


async def failover_round(kube: Kube, cp: LocalControlPlane, runner: PodRunner, ns: str) -> Obj:
    """SIGKILL the head container; seconds until Ray counts all 3 nodes alive again."""
    selector = "ray.kubeflow.org/cluster=steady"
    before = {p["metadata"]["name"]: _restarts(p) for p in worker_pods(
        await kube.list(POD, ns, selector))}
    (head,) = [p for p in await kube.list(POD, ns, selector + ",ray.kubeflow.org/role=head")]
    local = runner.pods[(ns, head["metadata"]["name"])]
    killed = time.time()
    os.killpg(local.processes["ray-head"].pid, signal.SIGKILL)
    async with dashboard(cp, "steady", ns) as address:
        await until(lambda: alive(address), lambda n: n == 3, 600, "3 nodes alive")
    whole = time.time()
    after = {p["metadata"]["name"]: _restarts(p) for p in worker_pods(
        await kube.list(POD, ns, selector))}
    same = sorted(after) == sorted(before)
    return {
        "head_killed_to_whole_s": round(whole - killed, 2),
        "worker_restarts": sum(after.values()) - sum(before.values()) if same else None,
        "worker_pods_kept": same,
    }


def _restarts(pod: Obj) -> int:
    return sum(c.get("restartCount", 0) for c in (pod.get("status") or {}).get(
        "containerStatuses") or [])


def spread(rounds: list[Obj], key: str) -> Obj:
    values = [r[key] for r in rounds if r.get(key) is not None]
    if not values:
        return {}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


async def main(rounds: int, idle: int) -> Obj:
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is missing: scripts/setup.sh installs Debian's")
    cp = LocalControlPlane().start()
    kube = await Kube.connect(str(cp.kubeconfig))
    operator: subprocess.Popen[bytes] | None = None
    redis: subprocess.Popen[bytes] | None = None
    runner: PodRunner | None = None
    scaling: list[Obj] = []
    failover: list[Obj] = []
    ns = "bench"
    try:
        await install_crds(kube, all_crds())
        await kube.create(NAMESPACE, {"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": ns}})
        operator = subprocess.Popen(
            [sys.executable, "-m", "ray_operator", "run"],
            env={**os.environ, "KUBECONFIG": str(cp.kubeconfig)},
            stdout=(cp.workdir / "operator.log").open("wb"), stderr=subprocess.STDOUT,
        )
        runner = await PodRunner(kube, namespace=ns, run_containers=True,
                                 control_plane=cp).start()
        assert runner.network is not None and runner.network.subnet is not None
        gateway = str(runner.network.subnet[1])
        port = free_port()
        redis = subprocess.Popen(
            ["redis-server", "--bind", gateway, "--port", str(port), "--protected-mode", "no",
             "--save", "", "--appendonly", "no", "--dir", tempfile.mkdtemp()],
            stdout=subprocess.DEVNULL, start_new_session=True)

        await kube.apply_manifest(autoscaled(idle), ns)
        await healthy(kube, ns, "elastic")
        async with dashboard(cp, "elastic", ns) as address:
            for index in range(rounds):
                result = await scale_round(kube, ns, address, idle)
                print(json.dumps({"scale": index, **result}), flush=True)
                scaling.append(result)
        await kube.delete(RAY, "elastic", ns)
        await until(lambda: kube.list(POD, ns, "ray.kubeflow.org/cluster=elastic"),
                    lambda pods: not pods, 120, "the autoscaled cluster gone")

        await kube.apply_manifest(fault_tolerant(f"{gateway}:{port}"), ns)
        await healthy(kube, ns, "steady")
        for index in range(rounds):
            result = await failover_round(kube, cp, runner, ns)
            print(json.dumps({"failover": index, **result}), flush=True)
            failover.append(result)
            await healthy(kube, ns, "steady")
    finally:
        if runner is not None:
            await runner.stop()
        for proc in (operator, redis):
            if proc is not None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=15)
        await kube.close()
        cp.stop()
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load": os.getloadavg()},
        "scale": {key: spread(scaling, key) for key in (
            "decision_s", "pod_created_to_ready_s", "submitted_to_task_running_s",
            "pod_created_to_task_running_s", "idle_to_gone_s")},
        "failover": {key: spread(failover, key) for key in (
            "head_killed_to_whole_s", "worker_restarts")},
        "targets": {"decision_s": PERIOD_S, "idle_to_gone_s": idle + 10,
                    "worker_restarts": 0},
        "rounds": {"scale": scaling, "failover": failover},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle-seconds", type=int, default=20)
    args = parser.parse_args()
    result = asyncio.run(main(args.rounds, args.idle_seconds))
    write_results(result, RESULTS / "elastic_scaling.json")
    scale, failover = result["scale"], result["failover"]
    print(f"scale-up: decision {scale['decision_s']} s (target {PERIOD_S} s); pod created to "
          f"task running {scale['pod_created_to_task_running_s']}; submitted to task running "
          f"{scale['submitted_to_task_running_s']}")
    print(f"scale-down: idle to pod gone {scale['idle_to_gone_s']} s "
          f"(target {args.idle_seconds + 10} s)")
    print(f"head failover: killed to whole {failover['head_killed_to_whole_s']} s, worker "
          f"restarts {failover['worker_restarts']}")
