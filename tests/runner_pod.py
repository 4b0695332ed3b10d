"""Run a RayJob's runner Pod as a local process: the kubelet's part in the RayJob tests.

The process gets what the Pod would get and nothing more: the container's command and env as the
kubelet resolves them, its Secret volumes as local directories (env values that point into a
mount point are pointed at the copy), and the Pod's ServiceAccount as its only identity: a
projected token bound to the Pod at the standard in-cluster path (a mount namespace of its own),
so a test proves the Role the operator made is enough.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray_operator.api.constants import LABEL_RAYJOB
from ray_operator.kube import CONFIGMAP, ENDPOINTS, POD, SECRET, Kube, KubeError
from ray_operator.localkube.control_plane import LocalControlPlane
from ray_operator.localkube.pod_env import container_argv, container_env
from ray_operator.localkube.service_account import (
    SERVICE_ACCOUNT_DIR,
    TokenDirectory,
    in_cluster_argv,
    in_cluster_env,
)

Obj = dict[str, Any]


@dataclass
class RunnerResult:
    """How the runner process ended."""

    returncode: int
    output: str


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
    kube: Kube,
    control_plane: LocalControlPlane,
    pod: Obj,
    workdir: Path,
    hosts: Path | None = None,
) -> subprocess.Popen[str]:
    """Start the Pod's single container as a local process (stdout and stderr merged).

    ``hosts``: an ``/etc/hosts`` for the process (Service names of the cluster: there is no
    cluster DNS), bind-mounted in its mount namespace.
    """
    namespace = pod["metadata"]["namespace"]
    (container,) = pod["spec"]["containers"]
    objects = await _namespace_data(kube, namespace)

    def lookup(kind: str, name: str) -> Mapping[str, str] | None:
        return objects.get((kind, name))

    env = container_env(pod, container, "127.0.0.1", lookup)
    # Secret volumes: a directory with one file per key, as the kubelet mounts them.
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    mounts: dict[str, Path] = {}
    binds: list[tuple[Path, str]] = []
    for mount in container.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        if "projected" in volume:
            # The ServiceAccount admission plugin's token volume: the TokenDirectory below.
            assert mount["mountPath"] == str(SERVICE_ACCOUNT_DIR), mount
            continue
        local = workdir / "volumes" / mount["name"]
        local.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume:
            # Where the runner reads a file the ConfigMap says (spec.scriptFrom): bound at the
            # mount path in the process's own mount namespace, as the kubelet would show it.
            source = volume["configMap"]
            data = objects.get(("ConfigMap", source["name"])) or {}
            items = source.get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                (local / item["path"]).write_text(data[item["key"]])
            binds.append((local, mount["mountPath"]))
            continue
        secret = volume["secret"]["secretName"]
        for key, value in (objects.get(("Secret", secret)) or {}).items():
            (local / key).write_text(value)
        mounts[mount["mountPath"]] = local
    for name, value in env.items():
        for path, local in mounts.items():
            if value == path or value.startswith(path + "/"):
                env[name] = str(local) + value[len(path) :]
    account = pod["spec"].get("serviceAccountName") or "default"
    identity = await asyncio.to_thread(
        TokenDirectory,
        workdir / "serviceaccount",
        control_plane.server,
        control_plane.token,
        control_plane.workdir / "certs" / "apiserver.crt",
        namespace,
        account,
        pod=pod,
    )
    argv = container_argv(container, env)
    if argv[0] == "python":  # the image's python is this test's interpreter
        argv[0] = sys.executable
    if hosts is not None:
        binds.append((hosts, "/etc/hosts"))
    if binds:
        setup = " && ".join(
            (f"mkdir -p {shlex.quote(target)} && " if source.is_dir() else "")
            + f"mount --bind {shlex.quote(str(source))} {shlex.quote(target)}"
            for source, target in binds
        )
        argv = ["sh", "-c", f'{setup} && exec "$@"', "sh", *argv]
    # Only what a process needs to start (PATH, HOME) from the test's own environment.
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    return subprocess.Popen(
        in_cluster_argv(identity.directory, argv),
        env={**base, **env, **in_cluster_env(control_plane.api_port)},
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


async def service_hosts(kube: Kube, namespace: str) -> str:
    """An ``/etc/hosts`` naming each Service of ``namespace`` (all its DNS forms) with the
    address of its first ready endpoint, as cluster DNS would resolve it."""
    lines = ["127.0.0.1 localhost"]
    for endpoints in await kube.list(ENDPOINTS, namespace):
        addresses = [a["ip"] for subset in endpoints.get("subsets") or []
                     for a in subset.get("addresses") or []]
        if addresses:
            name = endpoints["metadata"]["name"]
            forms = [name, f"{name}.{namespace}", f"{name}.{namespace}.svc",
                     f"{name}.{namespace}.svc.cluster.local"]
            lines.append(" ".join([addresses[0], *forms]))
    return "\n".join(lines) + "\n"


class RunnerPods:
    """The kubelet's part for runner Pods: each one that appears runs once, to its end."""

    def __init__(self, kube: Kube, cp: LocalControlPlane, namespace: str, workdir: Path) -> None:
        self.kube, self.cp, self.namespace, self.workdir = kube, cp, namespace, workdir
        self.started: dict[str, subprocess.Popen[str]] = {}
        self.outputs: dict[str, str] = {}
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            for pod in await self.kube.list(POD, self.namespace, LABEL_RAYJOB):
                name = pod["metadata"]["name"]
                if name in self.started or pod["metadata"].get("deletionTimestamp"):
                    continue
                hosts = self.workdir / f"{name}.hosts"
                hosts.write_text(await service_hosts(self.kube, self.namespace))
                work = self.workdir / name
                work.mkdir()
                self.started[name] = await start_pod(self.kube, self.cp, pod, work, hosts)
                asyncio.create_task(self._collect(name))
            await asyncio.sleep(0.5)

    async def _collect(self, name: str) -> None:
        result = await finish(self.started[name], timeout=900)
        self.outputs[name] = result.output
        # What a kubelet reports for a container that ended in a Pod that does not restart.
        phase = "Succeeded" if result.returncode == 0 else "Failed"
        with contextlib.suppress(KubeError):  # the Pod may be gone already
            await self.kube.patch(POD, name, {"status": {"phase": phase}}, self.namespace,
                                  "status")

    async def stop(self) -> None:
        self._task.cancel()
        for proc in self.started.values():
            if proc.poll() is None:
                proc.kill()
