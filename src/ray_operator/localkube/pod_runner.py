"""A small stand-in for a kubelet: pods of the local control plane become Running and Ready.

Two modes:
- status only: each pod gets an address and is marked Running and Ready at once (enough for the
  Deployment controller to make Deployments Available, which is what ``Health`` reads);
- containers: each container's command runs as a local process, inside a network namespace of
  its own with the pod's address, with the env the pod spec resolves to, Service names
  resolvable through a private ``/etc/hosts``, and a temporary directory of its own, seen by
  every pod at the same path (``TMPDIR``; not a mount over ``/tmp``, which may hold the project
  itself): Ray nodes take the head's temp path from the GCS, and pods that shared one directory
  there would collide on its socket names, as containers never do. The image is not pulled:
  commands run with this machine's programs (``ray`` from the active virtualenv). A pod is
  Ready when its containers' readiness probes (httpGet, tcpSocket) pass; a container that exits
  is restarted with a back-off (``restartPolicy`` Always; with Never or OnFailure, a Job's
  pod ends Succeeded or Failed); the processes end when the pod goes. Volumes of kind
  ``emptyDir``, ``hostPath`` and ``persistentVolumeClaim`` (bound to a ``hostPath`` or ``local``
  PersistentVolume) are bind-mounted at each ``volumeMount`` (``subPath``, ``readOnly``) in the
  container's mount namespace; until a claim is bound the pod waits in ``ContainerCreating``.
  ``configMap`` volumes are directories of the ConfigMap's keys, rewritten when it changes. With
  a control plane given, a pod's ServiceAccount token (the projected volume the ServiceAccount
  admission plugin adds) is requested for the pod and kept fresh, and the apiserver is reachable
  as ``KUBERNETES_SERVICE_HOST`` through a relay (see :mod:`api_relay`).

As a kubelet does, the runner reports a pod ``Pending`` until its init containers succeeded, and
``Ready`` only when its containers are ready and every readiness gate's condition is True; it
writes status as strategic merge patches, so conditions others own (a readiness gate's) stay.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from ray_operator.api.constants import LABEL_CLUSTER
from ray_operator.kube import (
    CONFIGMAP,
    ENDPOINTS,
    NODE,
    PERSISTENT_VOLUME,
    PERSISTENT_VOLUME_CLAIM,
    POD,
    SECRET,
    SERVICE,
    Kube,
    KubeError,
    KubeTransportError,
)
from ray_operator.localkube.api_relay import API_HOST, ApiRelay
from ray_operator.localkube.control_plane import LocalControlPlane
from ray_operator.localkube.pod_env import (
    container_argv,
    container_env,
    non_root_problem,
)
from ray_operator.localkube.pod_network import PodNetwork
from ray_operator.localkube.service_account import TokenDirectory

log = logging.getLogger(__name__)
Obj = dict[str, Any]
PodKey = tuple[str, str]
NODE_NAME = "ray-operator-local"
# Where memory-backed emptyDir volumes live: this machine's tmpfs.
MEMORY_VOLUMES = Path("/dev/shm/ray-operator-pods")
# Where each pod sees its own temporary directory (a bind mount in its mount namespace). Short:
# Ray puts unix sockets under it, and their paths may not exceed 107 bytes.
POD_TMP = Path("/var/tmp/pod")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class VolumeNotReadyError(Exception):
    """A volume the pod needs cannot be mounted yet (a claim not bound); the kubelet retries."""


@dataclass
class LocalPod:
    """One pod this runner looks after."""

    key: PodKey
    uid: str
    ip: str
    netns: str | None = None
    workdir: Path | None = None
    tmpdir: Path | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    ready: bool = False
    initialized: bool = True  # every init container has succeeded
    task: asyncio.Task[None] | None = None
    volumes: dict[str, Path] = field(default_factory=dict)  # volume name -> directory here
    pod: Obj = field(default_factory=dict)  # the pod as last seen (readiness gates' conditions)
    token: TokenDirectory | None = None  # its ServiceAccount token, when a control plane is given
    # configMap volumes: directory -> (ConfigMap name, items), rewritten when the data changes.
    config_maps: dict[Path, tuple[str, list[Obj] | None]] = field(default_factory=dict)


class PodRunner:
    """Watches pods and plays the kubelet's part for them."""

    def __init__(
        self,
        kube: Kube,
        namespace: str | None = None,
        run_containers: bool = False,
        label_selector: str = LABEL_CLUSTER,
        workdir: Path | None = None,
        control_plane: LocalControlPlane | None = None,
    ) -> None:
        self.kube = kube
        # Given: pods get their ServiceAccount's token and reach the apiserver (process mode).
        self.control_plane = control_plane
        self.relay: ApiRelay | None = None
        self.namespace = namespace
        self.run_containers = run_containers
        self.label_selector = label_selector
        self._workdir = workdir
        self.pods: dict[PodKey, LocalPod] = {}
        self.network = PodNetwork() if run_containers else None
        # Status-only pods get addresses nobody serves (nothing is sent to them); Endpoints
        # refuse loopback addresses, so these are not 127.x.
        self._addresses = (
            f"10.251.{b}.{c}" for b, c in itertools.product(range(256), range(2, 255))
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._hosts_cache: dict[Path, str] = {}

    async def start(self) -> PodRunner:
        """Register the node and begin watching pods."""
        await self._register_node()
        if self.network is not None:
            await asyncio.to_thread(self.network.up)
            if self.control_plane is not None and self.network.subnet is not None:
                gateway = str(self.network.subnet[1])
                self.relay = await ApiRelay(self.control_plane.api_port).start(gateway)
        self._tasks.append(asyncio.create_task(self._watch_forever()))
        if self.run_containers:
            self._tasks.append(asyncio.create_task(self._refresh_hosts_forever()))
        return self

    async def stop(self) -> None:
        """Stop watching and end every local pod."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for key in list(self.pods):
            await self._end_pod(key)
        if self.relay is not None:
            await self.relay.stop()
        if self.network is not None:
            await asyncio.to_thread(self.network.down)

    async def _register_node(self) -> None:
        # Endpoints need a node name on each address, and a bound pod is only deleted once its
        # node confirms: the runner registers a node and plays that part.
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": NODE_NAME, "labels": {"kubernetes.io/hostname": NODE_NAME}},
        }
        with contextlib.suppress(KubeError):
            await self.kube.create(NODE, node)
        cpus = str(os.cpu_count() or 1)
        status = {
            "capacity": {"cpu": cpus, "memory": "24Gi", "pods": "1000"},
            "allocatable": {"cpu": cpus, "memory": "24Gi", "pods": "1000"},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "lastHeartbeatTime": _now(),
                    "lastTransitionTime": _now(),
                }
            ],
            "addresses": [{"type": "Hostname", "address": NODE_NAME}],
        }
        await self.kube.patch(NODE, NODE_NAME, {"status": status}, subresource="status")

    # --- watching ---------------------------------------------------------------------------
    async def _watch_forever(self) -> None:
        while True:
            try:
                pods = await self.kube.request(
                    "GET", POD.path(self.namespace), params={"labelSelector": self.label_selector}
                )
                for pod in pods.get("items", []):
                    await self._on_event("ADDED", pod)
                version = pods["metadata"]["resourceVersion"]
                async for kind, pod in self.kube.watch(
                    POD, self.namespace, self.label_selector, resource_version=version
                ):
                    await self._on_event(kind, pod)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a broken watch is restarted, as a kubelet would
                log.exception("pod watch failed; restarting")
                await asyncio.sleep(1)

    async def _on_event(self, kind: str, pod: Obj) -> None:
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"])
        known = self.pods.get(key)
        if kind == "DELETED" or meta.get("deletionTimestamp"):
            if known is not None:
                await self._end_pod(key)
            if kind != "DELETED" and pod["spec"].get("nodeName") == NODE_NAME:
                # The kubelet's last word: the containers are gone, the pod can go.
                with contextlib.suppress(KubeError):
                    await self.kube.request(
                        "DELETE",
                        POD.path(key[0], key[1]),
                        {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0},
                    )
            return
        if known is not None and known.uid != meta["uid"]:
            await self._end_pod(key)
            known = None
        if known is not None:
            known.pod = pod
            if not self.run_containers and known.ip and known.ready != _gates_pass(pod):
                # A readiness gate changed: Ready follows it, as a kubelet's status sync does.
                known.ready = not known.ready
                with contextlib.suppress(KubeError):
                    await self._write_status(known, pod, ready=known.ready)
        if not pod["spec"].get("nodeName") and pod["spec"].get("schedulingGates"):
            return  # not to be scheduled yet: a scheduler waits for its gates to go
        if known is None and pod.get("status", {}).get("phase") in (None, "Pending"):
            local = LocalPod(key=key, uid=meta["uid"], ip="", pod=pod)
            self.pods[key] = local
            local.task = asyncio.create_task(self._run_pod(local, pod))

    # --- one pod ----------------------------------------------------------------------------
    async def _run_pod(self, local: LocalPod, pod: Obj) -> None:
        try:
            if not pod["spec"].get("nodeName"):
                await self._bind(local)
            containers = [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]
            refused = next((p for c in containers if (p := non_root_problem(pod, c))), None)
            if refused is not None:
                await self._write_config_error(local, pod, refused)
                return
            if not self.run_containers:
                local.ip = next(self._addresses)
                local.ready = _gates_pass(pod)
                await self._write_status(local, pod, ready=local.ready)
                return
            assert self.network is not None
            local.netns, local.ip = await asyncio.to_thread(self.network.add_pod)
            local.workdir = self.workdir / f"{local.key[0]}_{local.key[1]}"
            local.workdir.mkdir(parents=True, exist_ok=True)
            local.tmpdir = Path(tempfile.mkdtemp(prefix="rp", dir="/var/tmp"))
            await self._refresh_hosts()
            await self._write_status(local, pod, ready=False)
            local.volumes = await self._mountable_volumes(local, pod)
            await self._supervise(local, pod)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported on the pod, as a kubelet would
            if isinstance(exc, KubeError) and exc.not_found:
                return  # deleted while it started (a ReplicaSet's short-lived replacement)
            log.exception("pod %s/%s failed to start", *local.key)
            await self._write_failed(local, str(exc))

    async def _supervise(self, local: LocalPod, pod: Obj) -> None:
        data = await self._referenced_data(pod)
        await self._wait_for_service_addresses(local.key[0])
        init = pod["spec"].get("initContainers") or []
        # Native sidecars (restartPolicy Always) start in order and then run with the others.
        sidecars = [c for c in init if c.get("restartPolicy") == "Always"]
        if len(sidecars) < len(init):
            local.initialized = False
            await self._write_status(local, pod, ready=False)
            await self._run_init_containers(local, pod, data)
            local.initialized = True
            await self._write_status(local, pod, ready=False)  # Running: the containers start
        containers = [*sidecars, *pod["spec"]["containers"]]
        backoff: dict[str, float] = {}
        policy = pod["spec"].get("restartPolicy", "Always")
        finished: dict[str, int] = {}  # exit codes of containers that stay ended (Job pods)
        while True:
            for container in containers:
                name = container["name"]
                proc = local.processes.get(name)
                if proc is not None and proc.poll() is None or name in finished:
                    continue
                if proc is not None and container not in sidecars and (
                    policy == "Never" or (policy == "OnFailure" and proc.returncode == 0)
                ):
                    finished[name] = int(proc.returncode or 0)
                    continue
                if proc is not None:
                    local.restarts[name] = local.restarts.get(name, 0) + 1
                    delay = backoff.get(name, 1.0)
                    backoff[name] = min(delay * 2, 10.0)
                    log.info(
                        "container %s of %s/%s exited with %s; restarting in %ss",
                        name,
                        *local.key,
                        proc.returncode,
                        delay,
                    )
                    if local.ready:
                        local.ready = False
                        await self._write_status(local, pod, ready=False)
                    await asyncio.sleep(delay)
                local.processes[name] = self._start_container(local, pod, container, data)
            main = [c["name"] for c in pod["spec"]["containers"]]
            if all(name in finished for name in main):
                await self._write_ended(local, pod, finished)
                return
            ready = all(await asyncio.gather(*(self._probe(local, c) for c in containers))) and all(
                p.poll() is None for p in local.processes.values()
            ) and _gates_pass(local.pod)
            if ready != local.ready:
                local.ready = ready
                await self._write_status(local, pod, ready=ready)
            await asyncio.sleep(1)

    async def _run_init_containers(
        self, local: LocalPod, pod: Obj, data: dict[tuple[str, str], dict[str, str]]
    ) -> None:
        """Each init container to success, in order.

        One that fails is run again after a doubling delay, as a kubelet does for pods that
        restart (restartPolicy Always).
        """
        for container in pod["spec"].get("initContainers") or []:
            if container.get("restartPolicy") == "Always":
                local.processes[container["name"]] = self._start_container(
                    local, pod, container, data
                )
                continue
            name, delay = container["name"], 1.0
            while True:
                proc = self._start_container(local, pod, container, data)
                local.processes[name] = proc
                while proc.poll() is None:
                    await asyncio.sleep(0.2)
                del local.processes[name]
                if proc.returncode == 0:
                    break
                local.restarts[name] = local.restarts.get(name, 0) + 1
                log.info("init container %s of %s/%s exited with %s; again in %ss",
                         name, *local.key, proc.returncode, delay)
                await self._write_status(local, pod, ready=False)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _start_container(
        self, local: LocalPod, pod: Obj, container: Obj, data: dict[tuple[str, str], dict[str, str]]
    ) -> subprocess.Popen[bytes]:
        assert local.workdir is not None and local.tmpdir is not None and local.netns is not None
        env = container_env(pod, container, local.ip, lambda kind, name: data.get((kind, name)))
        argv = container_argv(container, env)
        hosts = local.workdir / "hosts"
        # This interpreter's bin first, so `ray` and `python` resolve to the project's virtualenv.
        path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        full_env = {
            "PATH": path,
            "HOME": str(local.workdir),
            "TMPDIR": str(POD_TMP),
            "HOSTNAME": local.key[1],
            # Names resolve only through the pod's /etc/hosts (there is no cluster DNS), which
            # gRPC's bundled c-ares resolver does not consult; Ray's gRPC must use libc's.
            "GRPC_DNS_RESOLVER": "native",
            **env,
        }
        if "VIRTUAL_ENV" in os.environ:
            full_env["VIRTUAL_ENV"] = os.environ["VIRTUAL_ENV"]
        if self.relay is not None:
            # What a kubelet tells every container about the apiserver.
            full_env.setdefault("KUBERNETES_SERVICE_HOST", API_HOST)
            full_env.setdefault("KUBERNETES_SERVICE_PORT", str(self.relay.port))
        # The processes run as root, whatever runAsUser says: the project's interpreter lives
        # where only root may read it (the checked-out virtualenv under root's home).
        POD_TMP.mkdir(parents=True, exist_ok=True)  # the mount point, empty on the host
        mounts = " && ".join(
            [f"mount --bind {shlex.quote(str(hosts))} /etc/hosts",
             f"mount --bind {shlex.quote(str(local.tmpdir))} {POD_TMP}",
             *_mount_commands(container, local.volumes)]
        )
        setup = f'{mounts} && cd "$HOME" && exec "$@"'
        log_file = open(local.workdir / f"{container['name']}.log", "ab")  # noqa: SIM115
        return subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                local.netns,
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                setup,
                "sh",
                *argv,
            ],
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    async def _mountable_volumes(self, local: LocalPod, pod: Obj) -> dict[str, Path]:
        """Each mountable volume of the pod as a directory here.

        Waits, as a kubelet does (reporting ``ContainerCreating``), until every claim is bound.
        """
        reported = ""
        while True:
            try:
                return await self._resolve_volumes(local, pod)
            except VolumeNotReadyError as exc:
                if str(exc) != reported:
                    reported = str(exc)
                    await self._write_waiting(local, pod, "ContainerCreating", reported)
                await asyncio.sleep(1.0)

    async def _resolve_volumes(self, local: LocalPod, pod: Obj) -> dict[str, Path]:
        assert local.workdir is not None
        found: dict[str, Path] = {}
        namespace = local.key[0]
        for volume in pod["spec"].get("volumes") or []:
            name = volume["name"]
            if "emptyDir" in volume:
                # medium Memory is a tmpfs for a kubelet: a directory of this machine's own
                # /dev/shm (tmpfs), shared by the pod's containers, gone with the pod.
                memory = (volume["emptyDir"] or {}).get("medium") == "Memory"
                base = MEMORY_VOLUMES / local.uid if memory else local.workdir / "volumes"
                found[name] = base / name
                found[name].mkdir(parents=True, exist_ok=True)
            elif "hostPath" in volume:
                found[name] = Path(volume["hostPath"]["path"])
                if volume["hostPath"].get("type", "") == "DirectoryOrCreate":
                    found[name].mkdir(parents=True, exist_ok=True)
            elif "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                found[name] = await self._claim_directory(namespace, claim)
            elif "configMap" in volume:
                source = volume["configMap"]
                found[name] = local.workdir / "configmaps" / name
                found[name].mkdir(parents=True, exist_ok=True)
                local.config_maps[found[name]] = (source["name"], source.get("items"))
                if not await self._write_config_map(namespace, found[name], source) and not (
                    source.get("optional")
                ):
                    raise VolumeNotReadyError(f'configmap "{source["name"]}" not found')
            elif _token_volume(volume) and self.control_plane is not None:
                found[name] = await self._token_directory(local, pod)
        return found

    async def _token_directory(self, local: LocalPod, pod: Obj) -> Path:
        """The pod's ServiceAccount token, ca.crt and namespace, renewed as a kubelet does."""
        assert self.control_plane is not None and local.workdir is not None
        if local.token is None:
            cp = self.control_plane
            account = pod["spec"].get("serviceAccountName") or "default"
            local.token = (
                await asyncio.to_thread(
                    TokenDirectory,
                    local.workdir / "serviceaccount",
                    cp.server,
                    cp.token,
                    cp.workdir / "certs" / "apiserver.crt",
                    local.key[0],
                    account,
                    pod=pod,
                )
            ).start()
        return local.token.directory

    async def _write_config_map(self, namespace: str, directory: Path, source: Obj) -> bool:
        """The ConfigMap's keys as files (each replaced whole, as a kubelet swaps them)."""
        found = await self.kube.get_or_none(CONFIGMAP, source["name"], namespace)
        if found is None:
            return False
        data = found.get("data") or {}
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            if item["key"] not in data:
                continue
            target = directory / item["path"]
            if target.exists() and target.read_text() == data[item["key"]]:
                continue
            staged = target.with_name(f".{target.name}.new")
            staged.write_text(data[item["key"]])
            staged.replace(target)
        return True

    async def _claim_directory(self, namespace: str, claim: str) -> Path:
        pvc = await self.kube.get_or_none(PERSISTENT_VOLUME_CLAIM, claim, namespace)
        if pvc is None:
            raise VolumeNotReadyError(f'persistentvolumeclaim "{claim}" not found')
        bound = pvc["spec"].get("volumeName")
        if not bound or (pvc.get("status") or {}).get("phase") != "Bound":
            raise VolumeNotReadyError(f'persistentvolumeclaim "{claim}" is not bound yet')
        pv = await self.kube.get_or_none(PERSISTENT_VOLUME, bound)
        source = (pv or {}).get("spec", {})
        path = (source.get("hostPath") or source.get("local") or {}).get("path")
        if not path:
            raise VolumeNotReadyError(
                f'persistentvolume "{bound}" of claim "{claim}" is neither hostPath nor local: '
                "the local pod runner mounts only those"
            )
        return Path(path)

    async def _write_waiting(self, local: LocalPod, pod: Obj, reason: str, message: str) -> None:
        waiting = {"waiting": {"reason": reason, "message": message}}
        status = {
            "phase": "Pending",
            "containerStatuses": [
                {"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": False,
                 "restartCount": 0, "state": waiting}
                for c in pod["spec"]["containers"]
            ],
        }
        with contextlib.suppress(KubeError):
            await self.kube.patch(POD, local.key[1], {"status": status}, local.key[0], "status",
                                  patch_type="strategic")

    async def _probe(self, local: LocalPod, container: Obj) -> bool:
        probe = container.get("readinessProbe")
        if not probe:
            return True
        try:
            if "httpGet" in probe:
                get = probe["httpGet"]
                port = self._port(container, get["port"])
                async with httpx.AsyncClient(timeout=2) as client:
                    r = await client.get(f"http://{local.ip}:{port}{get.get('path', '/')}")
                return 200 <= r.status_code < 400
            if "tcpSocket" in probe:
                port = self._port(container, probe["tcpSocket"]["port"])
                _, writer = await asyncio.wait_for(asyncio.open_connection(local.ip, port), 2)
                writer.close()
                return True
        except (TimeoutError, OSError, httpx.HTTPError):
            return False
        return True  # exec probes are not run locally

    @staticmethod
    def _port(container: Obj, port: int | str) -> int:
        if isinstance(port, int):
            return port
        for p in container.get("ports", []):
            if p.get("name") == port:
                return int(p["containerPort"])
        return int(port)

    async def _referenced_data(self, pod: Obj) -> dict[tuple[str, str], dict[str, str]]:
        wanted: set[tuple[str, str]] = set()
        for container in pod["spec"]["containers"]:
            for item in container.get("env", []):
                src = item.get("valueFrom", {})
                if "configMapKeyRef" in src:
                    wanted.add(("ConfigMap", src["configMapKeyRef"]["name"]))
                if "secretKeyRef" in src:
                    wanted.add(("Secret", src["secretKeyRef"]["name"]))
            for item in container.get("envFrom", []):
                if "configMapRef" in item:
                    wanted.add(("ConfigMap", item["configMapRef"]["name"]))
                if "secretRef" in item:
                    wanted.add(("Secret", item["secretRef"]["name"]))
        data: dict[tuple[str, str], dict[str, str]] = {}
        for kind, name in wanted:
            obj = await self.kube.get_or_none(
                CONFIGMAP if kind == "ConfigMap" else SECRET, name, pod["metadata"]["namespace"]
            )
            if obj is None:
                continue
            raw = obj.get("data") or {}
            if kind == "Secret":
                raw = {k: base64.b64decode(v).decode() for k, v in raw.items()}
            data[(kind, name)] = raw
        return data

    # --- names: a private /etc/hosts per pod -------------------------------------------------
    async def _refresh_hosts_forever(self) -> None:
        while True:
            with contextlib.suppress(KubeError, KubeTransportError):
                await self._refresh_hosts()
                for local in list(self.pods.values()):
                    for directory, (name, items) in list(local.config_maps.items()):
                        source: Obj = {"name": name, **({"items": items} if items else {})}
                        await self._write_config_map(local.key[0], directory, source)
            await asyncio.sleep(1)

    async def _wait_for_service_addresses(self, namespace: str, timeout: float = 30.0) -> None:
        # In a cluster a Service name resolves (to its ClusterIP) as soon as the Service exists;
        # here it resolves once a pod backs it. Waiting for that keeps a worker from caching a
        # failed lookup of the head's name.
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            endpoints = await self.kube.list(ENDPOINTS, namespace)
            services = {s["metadata"]["name"] for s in await self.kube.list(SERVICE, namespace)}
            backed = {e["metadata"]["name"] for e in endpoints if _endpoint_addresses(e)}
            if services <= backed | {"kubernetes"}:
                await self._refresh_hosts()
                return
            await asyncio.sleep(0.5)

    async def _refresh_hosts(self) -> None:
        namespaces = {p.key[0] for p in self.pods.values() if p.workdir is not None}
        entries: dict[str, list[str]] = {}
        for ns in namespaces:
            for ep in await self.kube.list(ENDPOINTS, ns):
                addresses = _endpoint_addresses(ep)
                if addresses:
                    name = ep["metadata"]["name"]
                    names = [
                        name,
                        f"{name}.{ns}",
                        f"{name}.{ns}.svc",
                        f"{name}.{ns}.svc.cluster.local",
                    ]
                    entries.setdefault(ns, []).append(" ".join([addresses[0], *names]))
        for pod in self.pods.values():
            if pod.workdir is None:
                continue
            api = [f"{self.network.subnet[1]} {API_HOST}"] if (
                self.relay is not None and self.network is not None
                and self.network.subnet is not None
            ) else []
            text = (
                "\n".join(
                    ["127.0.0.1 localhost", f"{pod.ip} {pod.key[1]}", *api,
                     *entries.get(pod.key[0], [])]
                )
                + "\n"
            )
            path = pod.workdir / "hosts"
            if self._hosts_cache.get(path) != text:
                # Rewrite in place: the bind mount inside the pod follows the inode.
                mode = "r+" if path.exists() else "w"
                with path.open(mode) as f:
                    f.seek(0)
                    f.write(text)
                    f.truncate()
                self._hosts_cache[path] = text

    async def _bind(self, local: LocalPod) -> None:
        """Schedule the pod onto the local node (there is no scheduler)."""
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": local.key[1]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": NODE_NAME},
        }
        await self.kube.request("POST", POD.path(local.key[0], local.key[1]) + "/binding", binding)

    # --- status -----------------------------------------------------------------------------
    async def _write_status(self, local: LocalPod, pod: Obj, ready: bool) -> None:
        now = _now()
        flag = "True" if ready else "False"
        status = {
            # A kubelet reports Running once the init containers succeeded and a container runs.
            "phase": "Running" if local.initialized else "Pending",
            "podIP": local.ip,
            "podIPs": [{"ip": local.ip}],
            "hostIP": local.ip,
            "startTime": pod.get("status", {}).get("startTime") or now,
            "conditions": [
                {
                    "type": "Initialized",
                    "status": "True" if local.initialized else "False",
                    "lastTransitionTime": now,
                },
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
                {"type": "Ready", "status": flag, "lastTransitionTime": now},
            ],
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": ready,
                    "started": local.initialized,
                    "restartCount": local.restarts.get(c["name"], 0),
                    "state": (
                        {"running": {"startedAt": now}}
                        if local.initialized
                        else {"waiting": {"reason": "PodInitializing"}}
                    ),
                }
                for c in pod["spec"]["containers"]
            ],
        }
        if pod["spec"].get("initContainers"):
            status["initContainerStatuses"] = [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": local.initialized,
                    "restartCount": local.restarts.get(c["name"], 0),
                    "state": (
                        {"terminated": {"exitCode": 0, "reason": "Completed"}}
                        if local.initialized and c.get("restartPolicy") != "Always"
                        else {"running": {"startedAt": now}}
                    ),
                }
                for c in pod["spec"]["initContainers"]
            ]
        try:
            await self.kube.patch(POD, local.key[1], {"status": status}, local.key[0], "status",
                                  patch_type="strategic")
        except KubeError as exc:
            if not exc.not_found:
                raise

    async def _write_config_error(self, local: LocalPod, pod: Obj, message: str) -> None:
        """What a kubelet reports for a container it will not start: the pod stays Pending."""
        waiting = {"waiting": {"reason": "CreateContainerConfigError", "message": message}}
        status = {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": _now()},
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "ContainersNotReady",
                    "lastTransitionTime": _now(),
                },
            ],
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": waiting,
                }
                for c in pod["spec"]["containers"]
            ],
        }
        with contextlib.suppress(KubeError):
            await self.kube.patch(POD, local.key[1], {"status": status}, local.key[0], "status",
                                  patch_type="strategic")

    async def _write_ended(self, local: LocalPod, pod: Obj, codes: dict[str, int]) -> None:
        """A pod whose containers ended for good (restartPolicy Never/OnFailure): its phase."""
        now = _now()
        status = {
            "phase": "Succeeded" if not any(codes.values()) else "Failed",
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "PodCompleted",
                 "lastTransitionTime": now},
            ],
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "restartCount": local.restarts.get(c["name"], 0),
                    "state": {"terminated": {
                        "exitCode": codes[c["name"]],
                        "reason": "Completed" if codes[c["name"]] == 0 else "Error",
                        "finishedAt": now,
                    }},
                }
                for c in pod["spec"]["containers"]
            ],
        }
        with contextlib.suppress(KubeError):
            await self.kube.patch(POD, local.key[1], {"status": status}, local.key[0], "status",
                                  patch_type="strategic")

    async def _write_failed(self, local: LocalPod, message: str) -> None:
        with contextlib.suppress(KubeError):
            await self.kube.patch(
                POD,
                local.key[1],
                {
                    "status": {
                        "phase": "Failed",
                        "reason": "LocalRunFailed",
                        "message": message[:1000],
                    }
                },
                local.key[0],
                "status",
            )

    async def _end_pod(self, key: PodKey) -> None:
        local = self.pods.pop(key, None)
        if local is None:
            return
        if local.task is not None:
            local.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await local.task
        await asyncio.to_thread(_terminate, list(local.processes.values()))
        if local.netns is not None and self.network is not None:
            await asyncio.to_thread(self.network.remove_pod, local.netns)
        if local.workdir is not None:
            self._hosts_cache.pop(local.workdir / "hosts", None)
        if local.tmpdir is not None:
            shutil.rmtree(local.tmpdir, ignore_errors=True)
        if local.token is not None:
            await asyncio.to_thread(local.token.stop)
        shutil.rmtree(MEMORY_VOLUMES / local.uid, ignore_errors=True)

    @property
    def workdir(self) -> Path:
        """Where container logs and hosts files go (created on first use)."""
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="ray-operator-pods-", dir="/var/tmp"))
        return self._workdir

    def logs(self, namespace: str, pod: str, container: str) -> str:
        """What a container printed so far (process mode)."""
        path = self.workdir / f"{namespace}_{pod}" / f"{container}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _mount_commands(container: Obj, volumes: dict[str, Path]) -> list[str]:
    """Shell commands that bind-mount the container's volumeMounts, in order."""
    commands = []
    for mount in container.get("volumeMounts") or []:
        source = volumes.get(mount["name"])
        if source is None:
            continue  # a kind this runner does not mount (configMap, secret, projected)
        if mount.get("subPath"):
            source = source / mount["subPath"]
        target = shlex.quote(mount["mountPath"])
        commands.append(f"mkdir -p {shlex.quote(str(source))} {target}")
        commands.append(f"mount --bind {shlex.quote(str(source))} {target}")
        if mount.get("readOnly"):
            commands.append(f"mount -o remount,bind,ro {target}")
    return commands


def _gates_pass(pod: Obj) -> bool:
    """Every readiness gate's condition is True (a missing one is not), as a kubelet reads them."""
    gates = [g.get("conditionType") for g in pod.get("spec", {}).get("readinessGates") or []]
    conditions = {c.get("type"): c.get("status")
                  for c in (pod.get("status") or {}).get("conditions") or []}
    return all(conditions.get(gate) == "True" for gate in gates)


def _token_volume(volume: Obj) -> bool:
    """The projected volume of a ServiceAccount token (kube-api-access-*)."""
    sources = (volume.get("projected") or {}).get("sources") or []
    return any("serviceAccountToken" in source for source in sources)


def _endpoint_addresses(endpoints: Obj) -> list[str]:
    """Ready addresses first, then those not ready yet (a name should resolve to a started pod)."""
    subsets = endpoints.get("subsets") or []
    ready = [a["ip"] for s in subsets for a in s.get("addresses") or []]
    waiting = [a["ip"] for s in subsets for a in s.get("notReadyAddresses") or []]
    return ready + waiting


def _terminate(processes: list[subprocess.Popen[bytes]], grace: float = 10.0) -> None:
    """SIGTERM each process group, then SIGKILL what is left after ``grace`` seconds."""
    for proc in processes:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    for proc in processes:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
