"""Autoscaling on real Ray: Ray's own autoscaler decides, the operator acts.

A cluster whose head offers no CPU and whose one worker group has 1-CPU workers, from 0 to 3.
Ray's autoscaler (version 2, in its own pod from the cluster's image, with the operator's node
provider and rights on its own Ray only) starts workers for a job's three concurrent tasks and
one long-lived actor, never more than 3; once the tasks are done it drains the idle workers and
the operator removes exactly those: the actor's worker stays. ``request_resources`` grows the
group with no task; a task no group can hold is reported on the Ray. The pods run as local
processes (the pod runner's process mode, a ServiceAccount token per pod, the apiserver relayed
to the pod network); nothing but the operator, the controller-manager and Ray acts.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shlex
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from ray_operator.builders.default_templates import default_head_template_v2
from ray_operator.jobs.ray_api import RayJobsClient
from ray_operator.kube import DEPLOYMENT, EVENT, POD, RAY, Kube, KubeError
from ray_operator.localkube.control_plane import LocalControlPlane
from ray_operator.localkube.pod_runner import PodRunner
from tests.dashboard_process import dashboard
from tests.operator_process import OperatorProcess
from tests.ray_state import run_script, status_of
from tests.waiting import eventually

Obj = dict[str, Any]
EXAMPLES = Path(__file__).parents[2] / "examples"
NAME = "elastic"
IMAGE = "rayproject/ray:2.60.0"
WORKERS = f"ray.kubeflow.org/cluster={NAME},ray.kubeflow.org/role=worker"
# A detached actor (1 CPU to place, none held while it lives: it keeps its worker busy for
# Ray, not its CPU), then three 1-CPU tasks of 20 s at once: one fits beside the actor, two wait
# for workers. Each says which pod it ran in.
WORK = """
import os, time, ray
ray.init()
@ray.remote
class Keeper:
    def where(self):
        return os.environ["RAY_CLOUD_INSTANCE_ID"]
keeper = Keeper.options(name="keeper", namespace="elastic", lifetime="detached").remote()
print("ACTOR", ray.get(keeper.where.remote()), flush=True)
@ray.remote(num_cpus=1)
def work(i):
    time.sleep(20)
    return os.environ["RAY_CLOUD_INSTANCE_ID"]
print("TASKS", *ray.get([work.remote(i) for i in range(3)]))
"""
CHECK = """
import ray
ray.init()
print("ACTOR", ray.get(ray.get_actor("keeper", namespace="elastic").where.remote()))
"""
REQUEST = """
import ray
from ray.autoscaler.sdk import request_resources
ray.init()
request_resources(num_cpus=3)
print("REQUESTED")
"""
INFEASIBLE = """
import time, ray
ray.init()
ref = ray.remote(num_cpus=8)(lambda: 1).remote()
time.sleep(600)
"""


def manifest() -> Obj:
    """examples/ray-autoscaling.yaml with a head that offers no CPU and a shorter idle time."""
    found: Obj = yaml.safe_load((EXAMPLES / "ray-autoscaling.yaml").read_text())
    head = default_head_template_v2(IMAGE)
    ray = head["spec"]["containers"][0]
    ray["args"] = ["--num-cpus=0" if a.startswith("--num-cpus") else a for a in ray["args"]]
    found["spec"]["head"] = {"template": head}
    found["spec"]["autoscaling"]["idleTimeoutSeconds"] = 20
    assert found["spec"]["worker"]["maxReplicas"] == 3
    return found


@dataclass
class Watched:
    """Every count the worker Deployment was given, and every worker pod seen, run and gone."""

    counts: list[int] = field(default_factory=list)
    pods: set[str] = field(default_factory=set)
    ran: set[str] = field(default_factory=set)  # Running at some time: a Ray node
    gone: set[str] = field(default_factory=set)
    most_pods: int = 0  # not terminating at once


async def _watch(kube: Kube, namespace: str, seen: Watched) -> None:
    async def deployments() -> None:
        while True:
            with contextlib.suppress(KubeError):
                async for _, obj in kube.watch(DEPLOYMENT, namespace, WORKERS.split(",")[0]):
                    if obj["metadata"]["name"] == f"{NAME}-worker":
                        seen.counts.append(int(obj["spec"]["replicas"]))

    async def pods() -> None:
        alive: set[str] = set()
        while True:
            with contextlib.suppress(KubeError):
                async for kind, obj in kube.watch(POD, namespace, WORKERS):
                    name = obj["metadata"]["name"]
                    seen.pods.add(name)
                    if (obj.get("status") or {}).get("phase") == "Running":
                        seen.ran.add(name)
                    if kind == "DELETED":
                        seen.gone.add(name)
                    if kind == "DELETED" or obj["metadata"].get("deletionTimestamp"):
                        alive.discard(name)
                    else:
                        alive.add(name)
                    seen.most_pods = max(seen.most_pods, len(alive))

    await asyncio.gather(deployments(), pods())


@contextlib.asynccontextmanager
async def watching(kube: Kube, namespace: str) -> AsyncIterator[Watched]:
    seen = Watched()
    task = asyncio.create_task(_watch(kube, namespace, seen))
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def workers(kube: Kube, namespace: str) -> list[Obj]:
    return [p for p in await kube.list(POD, namespace, WORKERS)
            if not p["metadata"].get("deletionTimestamp")]


def lines(logs: str, tag: str) -> list[str]:
    found = [x.split()[1:] for x in logs.splitlines() if x.startswith(tag + " ")]
    assert found, f"no {tag} line in:\n{logs}"
    return found[0]


async def ray_events(kube: Kube, namespace: str, reason: str) -> list[Obj]:
    return [e for e in await kube.list(EVENT, namespace)
            if e["involvedObject"]["name"] == NAME and e["reason"] == reason]


def feasible(status: Obj) -> Obj | None:
    return next((c for c in status.get("conditions") or []
                 if c["type"] == "RayRequestsFeasible"), None)


@pytest.mark.slow
@pytest.mark.timeout(1500)
async def test_ray_grows_the_group_for_its_work_and_removes_only_idle_workers(
    kube: Kube, namespace: str, control_plane: LocalControlPlane,
    running_operator: OperatorProcess,
) -> None:
    runner = await PodRunner(kube, namespace=namespace, run_containers=True,
                             control_plane=control_plane).start()
    try:
        async with watching(kube, namespace) as seen:
            await kube.apply_manifest(manifest(), namespace)
            await eventually(lambda: status_of(kube, RAY, NAME, namespace),
                             lambda s: s.get("health") == "True", 400, "Health=True")
            assert await workers(kube, namespace) == []  # minReplicas 0: none yet

            async with dashboard(control_plane, NAME, namespace) as address:
                info, logs = await run_script(address, WORK, timeout=600)
                assert info.status == "SUCCEEDED", logs
                (actor_pod,) = lines(logs, "ACTOR")
                assert set(lines(logs, "TASKS")) <= seen.pods, logs
                # Two tasks waited: the group grew to 3 workers, no more.
                assert max(seen.counts) == 3 and seen.most_pods == 3

                # Idle for 20 s, drained by Ray, removed: only the actor's worker stays.
                left = await eventually(lambda: workers(kube, namespace),
                                        lambda found: len(found) == 1, 300, "one worker left")
                assert left[0]["metadata"]["name"] == actor_pod

                async def gone() -> set[str]:
                    return set(seen.gone)

                await eventually(gone, lambda found: found == seen.pods - {actor_pod}, 60,
                                 "the idle workers' pods deleted")
                named = {name for e in await ray_events(kube, namespace, "ScaledDown")
                         for name in e["message"].split("drained by Ray: ")[1].split(", ")}
                # Exactly the workers Ray chose, no other. The ReplicaSet may have made a
                # replacement between a deletion and the lower count: it went before it ran.
                assert named == seen.gone & seen.ran, (named, seen.gone, seen.ran)
                restarts = [c.get("restartCount", 0)
                            for c in left[0]["status"].get("containerStatuses") or []]
                assert restarts == [0]
                info, logs = await run_script(address, CHECK)
                assert info.status == "SUCCEEDED" and lines(logs, "ACTOR") == [actor_pod], logs

                # request_resources: the group grows with no task waiting.
                info, logs = await run_script(address, REQUEST)
                assert info.status == "SUCCEEDED", logs
                await eventually(lambda: workers(kube, namespace),
                                 lambda found: len(found) == 3, 300, "three workers again")

                # A task no worker can hold: reported on the Ray, not launched for.
                async with RayJobsClient(address, timeout=30) as client:
                    job = f"e2e-{secrets.token_hex(4)}"
                    await client.submit(f"python -c {shlex.quote(INFEASIBLE)}",
                                        submission_id=job)
                    status = await eventually(
                        lambda: status_of(kube, RAY, NAME, namespace),
                        lambda s: (feasible(s) or {}).get("status") == "False", 120,
                        "RayRequestsFeasible=False")
                    message = (feasible(status) or {})["message"]
                    assert '1 task or actor(s) asking for {"CPU": 8.0}' in message, message
                    assert await ray_events(kube, namespace, "InfeasibleRequest")
                    await client.stop(job)
                await eventually(lambda: status_of(kube, RAY, NAME, namespace),
                                 lambda s: (feasible(s) or {}).get("status") == "True", 120,
                                 "RayRequestsFeasible=True once the task is gone")
            assert max(seen.counts) == 3 and seen.most_pods == 3  # never beyond maxReplicas
    finally:
        await runner.stop()
