"""Run a RayJob's runner Pod as a local process: the kubelet's part in the RayJob tests.

The process gets what the Pod would get and nothing more: the container's command and env as the
kubelet resolves them, its Secret volumes as local directories (env values that point into a
mount point are pointed at the copy), and the Pod's ServiceAccount as its only identity (a
kubeconfig with that account's token), so a test proves the Role the operator made is enough.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray_operator.kube import CONFIGMAP, SECRET, Kube
from ray_operator.localkube.control_plane import LocalControlPlane
from ray_operator.localkube.pod_env import container_argv, container_env

Obj = dict[str, Any]


@dataclass
class RunnerResult:
    """How the runner process ended."""

    returncode: int
    output: str


async def service_account_token(kube: Kube, name: str, namespace: str, timeout: float = 30) -> str:
    """The token the controller-manager issues for a ServiceAccount (its token Secret)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for secret in await kube.list(SECRET, namespace):
            annotations = secret["metadata"].get("annotations") or {}
            if (
                secret.get("type") == "kubernetes.io/service-account-token"
                and annotations.get("kubernetes.io/service-account.name") == name
                and (secret.get("data") or {}).get("token")
            ):
                return base64.b64decode(secret["data"]["token"]).decode()
        await asyncio.sleep(0.5)
    raise AssertionError(f"no token Secret for ServiceAccount {namespace}/{name} after {timeout} s")


async def _namespace_data(kube: Kube, namespace: str) -> dict[tuple[str, str], dict[str, str]]:
    data: dict[tuple[str, str], dict[str, str]] = {}
    for cm in await kube.list(CONFIGMAP, namespace):
        data[("ConfigMap", cm["metadata"]["name"])] = dict(cm.get("data") or {})
    for secret in await kube.list(SECRET, namespace):
        data[("Secret", secret["metadata"]["name"])] = {
            k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()
        }
    return data


async def start_pod(
    kube: Kube, control_plane: LocalControlPlane, pod: Obj, workdir: Path
) -> subprocess.Popen[str]:
    """Start the Pod's single container as a local process (stdout and stderr merged)."""
    namespace = pod["metadata"]["namespace"]
    (container,) = pod["spec"]["containers"]
    objects = await _namespace_data(kube, namespace)

    def lookup(kind: str, name: str) -> Mapping[str, str] | None:
        return objects.get((kind, name))

    env = container_env(pod, container, "127.0.0.1", lookup)
    # Secret volumes: a directory with one file per key, as the kubelet mounts them.
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts") or []:
        secret = volumes[mount["name"]]["secret"]["secretName"]
        local = workdir / "volumes" / mount["name"]
        local.mkdir(parents=True, exist_ok=True)
        for key, value in (objects.get(("Secret", secret)) or {}).items():
            (local / key).write_text(value)
        mounts[mount["mountPath"]] = local
    for name, value in env.items():
        for path, local in mounts.items():
            if value == path or value.startswith(path + "/"):
                env[name] = str(local) + value[len(path) :]
    account = pod["spec"]["serviceAccountName"]
    token = await service_account_token(kube, account, namespace)
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.write_text(
        control_plane.kubeconfig_text(token, f"system:serviceaccount:{namespace}:{account}")
    )
    argv = container_argv(container, env)
    if argv[0] == "python":  # the image's python is this test's interpreter
        argv[0] = sys.executable
    # Only what a process needs to start (PATH, HOME) from the test's own environment.
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    return subprocess.Popen(
        argv,
        env={**base, **env, "KUBECONFIG": str(kubeconfig)},
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def finish(proc: subprocess.Popen[str], timeout: float = 180) -> RunnerResult:
    """Wait for a started runner; fails the test with its output when it outlives ``timeout``."""
    try:
        out, _ = await asyncio.to_thread(proc.communicate, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"runner still running after {timeout}s; output:\n{out}") from None
    return RunnerResult(proc.returncode, out)


async def run_pod(
    kube: Kube, control_plane: LocalControlPlane, pod: Obj, workdir: Path, timeout: float = 180
) -> RunnerResult:
    """Run the Pod's container to its end."""
    return await finish(await start_pod(kube, control_plane, pod, workdir), timeout)
