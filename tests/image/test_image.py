"""The project's image, built from its Dockerfile (scripts/build-image.sh), run with podman.

As the operator: the chart's command, environment and ServiceAccount token, in-cluster, non-root,
read-only root filesystem; it must reconcile a Ray to Health=True. As a RayJob runner: the runner
Pod's command and environment; the job must succeed on a real Ray head. A control plane of this
module's own: the only operator there is the one in the image.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ray_operator.api.crd import all_crds
from ray_operator.kube import NAMESPACE, POD, RAY, RAYJOB, Kube
from ray_operator.localkube.control_plane import LocalControlPlane, free_port
from ray_operator.localkube.crds import install_crds
from ray_operator.localkube.pod_env import container_argv, container_env
from ray_operator.localkube.pod_runner import PodRunner
from ray_operator.localkube.service_account import (
    SERVICE_ACCOUNT_DIR,
    TokenDirectory,
    in_cluster_env,
)
from tests.chart_install import ChartRelease, refused_lines
from tests.conftest import RESTRICTED
from tests.fixtures.ray_head import RayHead
from tests.waiting import eventually

IMAGE = os.environ.get("RAY_OPERATOR_IMAGE", "localhost/ray-operator:dev")
ROOT = Path(__file__).resolve().parents[2]
Obj = dict[str, Any]
# podman's defaults exceed this machine's hard limits.
LIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def image() -> str:
    found = subprocess.run(["podman", "image", "exists", IMAGE], check=False)
    if found.returncode != 0:
        pytest.fail(f"image {IMAGE} is missing: build it with scripts/build-image.sh")
    return IMAGE


@pytest.fixture
async def alone() -> AsyncIterator[tuple[LocalControlPlane, Kube]]:
    with LocalControlPlane() as cp:
        kube = await Kube.connect(str(cp.kubeconfig))
        await install_crds(kube, all_crds())
        try:
            yield cp, kube
        finally:
            await kube.close()


def podman_run(
    image: str, name: str, args: list[str], env: dict[str, str], volumes: dict[Path, str],
    log: Path, entrypoint: str | None = None,
) -> subprocess.Popen[bytes]:
    """A container as a pod would run it: non-root (the image's user), read-only root, the
    host network (the apiserver and the Ray head listen on loopback)."""
    argv = ["podman", "run", "--rm", "--name", name, "--network", "host", "--read-only",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges", *LIMITS]
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]
    for local, inside in volumes.items():
        argv += ["--volume", f"{local}:{inside}:ro"]
    if entrypoint:
        argv += ["--entrypoint", entrypoint]
    return subprocess.Popen([*argv, image, *args], stdout=log.open("wb"), stderr=subprocess.STDOUT)


def stop(name: str, proc: subprocess.Popen[bytes]) -> None:
    subprocess.run(["podman", "stop", "--time", "10", name], capture_output=True, check=False)
    proc.wait(timeout=30)


@pytest.fixture
def containers() -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    running: list[tuple[str, subprocess.Popen[bytes]]] = []
    yield running
    for name, proc in running:
        stop(name, proc)


async def test_the_image_runs_the_operator_and_a_rayjob_runner(
    image: str, alone: tuple[LocalControlPlane, Kube], ray_head: RayHead, tmp_path: Path,
    containers: list[tuple[str, subprocess.Popen[bytes]]],
) -> None:
    cp, kube = alone
    ns = f"img-{secrets.token_hex(3)}"
    await kube.create(NAMESPACE, {"apiVersion": "v1", "kind": "Namespace",
                                  "metadata": {"name": ns, "labels": RESTRICTED}})
    repository, _, tag = image.rpartition(":")
    values = {"replicas": 1, "image": {"repository": repository, "tag": tag}}
    release = await ChartRelease(cp, kube, values, "ray-system").install()
    assert release.container["image"] == image
    account = release.deployment["spec"]["template"]["spec"]["serviceAccountName"]
    identity = TokenDirectory(tmp_path / "operator-sa", cp.server, cp.token,
                              cp.workdir / "certs" / "apiserver.crt", "ray-system", account)
    port = free_port()
    env = {**release.env("ray-operator-0"), **in_cluster_env(cp.api_port),
           "RAY_OPERATOR_METRICS_PORT": str(port), "RAY_OPERATOR_RESYNC_SECONDS": "5"}
    name = f"operator-{secrets.token_hex(3)}"
    log = tmp_path / "operator.log"
    command = release.container["command"]
    containers.append((name, podman_run(image, name, command[1:], env,
                                        {identity.directory: str(SERVICE_ACCOUNT_DIR)}, log,
                                        entrypoint=command[0])))
    runner = await PodRunner(kube, namespace=ns).start()
    try:
        await ready(port, log)
        manifest = yaml.safe_load((ROOT / "examples" / "ray-simple.yaml").read_text())
        await kube.apply_manifest(manifest, ns)
        await eventually(lambda: kube.get(RAY, "sample-cluster", ns),
                         lambda r: (r.get("status") or {}).get("health") == "True", 90,
                         f"Ray healthy\n{log.read_text(errors='replace')[-3000:]}")
        await run_a_job(image, cp, kube, ns, ray_head, tmp_path, containers)
    finally:
        await runner.stop()
        await release.uninstall()
    refused = refused_lines(log.read_text(errors="replace"))
    assert refused == [], refused


async def ready(port: int, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    raise AssertionError(f"operator container not ready:\n{log.read_text(errors='replace')}")


async def run_a_job(
    image: str, cp: LocalControlPlane, kube: Kube, ns: str, ray_head: RayHead, tmp_path: Path,
    containers: list[tuple[str, subprocess.Popen[bytes]]],
) -> None:
    await kube.create(RAYJOB, {"apiVersion": "ray.kubeflow.org/v1", "kind": "RayJob",
                               "metadata": {"name": "boxed"},
                               "spec": {"address": ray_head.address,
                                        "script": "print('from the image')",
                                        "updateInterval": 0.5}}, ns)
    pod = await eventually(lambda: kube.get_or_none(POD, "boxed-rayjob", ns),
                           lambda p: p is not None, 60, "runner pod")
    assert pod is not None
    (container,) = pod["spec"]["containers"]
    assert container["image"] == image  # the chart's image is the runner's too
    env = container_env(pod, container, "127.0.0.1", lambda kind, name: None)
    identity = TokenDirectory(tmp_path / "runner-sa", cp.server, cp.token,
                              cp.workdir / "certs" / "apiserver.crt", ns,
                              pod["spec"]["serviceAccountName"], pod=pod)
    argv = container_argv(container, env)
    name = f"runner-{secrets.token_hex(3)}"
    log = tmp_path / "runner.log"
    proc = podman_run(image, name, argv[1:], {**env, **in_cluster_env(cp.api_port)},
                      {identity.directory: str(SERVICE_ACCOUNT_DIR)}, log, entrypoint=argv[0])
    containers.append((name, proc))
    await asyncio.to_thread(proc.wait, 180)
    assert proc.returncode == 0, log.read_text(errors="replace")
    # The operator mirrors the runner's ConfigMap into the RayJob a moment later.
    await eventually(lambda: kube.get(RAYJOB, "boxed", ns),
                     lambda job: (job.get("status") or {}).get("jobStatus") == "SUCCEEDED",
                     what="RayJob boxed SUCCEEDED in its status")
