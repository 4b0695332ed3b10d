"""Start etcd, kube-apiserver and kube-controller-manager on free loopback ports."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

# The release scripts/kube/go.mod builds (a unit test keeps the two equal).
KUBE_VERSION = "1.37.2"
CACHE_ENV = "RAY_OPERATOR_KUBE_CACHE"
# Admission as on a current managed cluster: the defaults (ServiceAccount, PodSecurity, ...) plus
# what EKS also enables, so a child that names its owner with blockOwnerDeletion needs the right
# to update that owner's finalizers.
ADMISSION_PLUGINS = ("OwnerReferencesPermissionEnforcement", "PodSecurity", "ServiceAccount")
# The controllers of kube-controller-manager the tests rely on (no scheduler, no kubelet: the
# pod runner plays both parts).
CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "garbage-collector-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "pod-garbage-collector-controller",
    # Jobs run pods (the GCS cleanup of a Ray with fault tolerance).
    "job-controller",
    # Claims bind to volumes, and the protection finalizers the default admission adds go away.
    "persistentvolume-binder-controller",
    "persistentvolume-protection-controller",
    "persistentvolumeclaim-protection-controller",
)


def kube_bin_dir() -> Path:
    """Where scripts/build-kube.sh leaves etcd, kube-apiserver, kube-controller-manager, kubectl."""
    default = Path.home() / ".cache" / "ray-operator" / f"kube-{KUBE_VERSION}"
    return Path(os.environ.get(CACHE_ENV, default)) / "bin"


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports nobody listens on right now.

    Every socket stays bound until all are chosen: ports picked one at a time may repeat, since
    the OS can hand a just-closed port out again (a Ray head once got one port for two roles).
    """
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    return free_ports(1)[0]


def die_with_parent() -> None:
    """In a child before exec: be sent SIGTERM when the parent dies, so nothing is left over."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ControlPlaneError(RuntimeError):
    """The local control plane could not be started."""


@dataclass
class LocalControlPlane:
    """etcd + kube-apiserver + kube-controller-manager, as child processes."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="localkube-")))
    controller_manager: bool = True
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    api_port: int = 0
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # More `system:masters` users, each with a token of its own (see `kubeconfig_for`), so one
    # client's requests can be told apart: 1.20's apiserver_request_total has no client label.
    extra_users: tuple[str, ...] = ()
    # Write `audit_log_path`: one JSON line per request of the extra users (all users when there
    # are none), Metadata level, stages RequestReceived and ResponseComplete.
    audit_log: bool = False
    # A TokenReview webhook (URL) that authenticates bearer tokens the static file does not
    # know: tests that need tokens which really expire (exec plugins) serve one.
    token_webhook: str | None = None
    # False: watches are served from etcd, not the apiserver's cache, so compacting etcd
    # (``compact_etcd``) makes a client's watch resume with 410 Gone, as a long outage would.
    watch_cache: bool = True
    user_tokens: dict[str, str] = field(default_factory=dict)

    @property
    def server(self) -> str:
        """The apiserver URL."""
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        """A kubeconfig for a `system:masters` user."""
        return self.workdir / "kubeconfig"

    @property
    def audit_log_path(self) -> Path:
        """The audit log (written only with ``audit_log=True``)."""
        return self.workdir / "audit.log"

    def kubeconfig_for(self, user: str) -> Path:
        """A kubeconfig for one of ``extra_users`` (call after ``start``)."""
        path = self.workdir / f"kubeconfig-{user}"
        path.write_text(self.kubeconfig_text(self.user_tokens[user], user))
        return path

    @property
    def kubectl(self) -> Path:
        """The kubectl built with this control plane (not the machine's)."""
        return kube_bin_dir() / "kubectl"

    def start(self, timeout: float = 60.0) -> LocalControlPlane:
        """Start every part and wait until the apiserver answers and namespaces exist."""
        bins = kube_bin_dir()
        for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl"):
            if not (bins / name).exists():
                raise ControlPlaneError(
                    f"{bins / name} is missing: run scripts/build-kube.sh once (about 10 minutes)"
                )
        etcd = str(bins / "etcd")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_credentials()
        etcd_port, peer_port, self.api_port = free_ports(3)
        self.kubeconfig.write_text(self.kubeconfig_text(self.token, "admin"))
        # etcd data on tmpfs when there is one: fsync on a real disk makes every write slow.
        shm = Path("/dev/shm")
        data_dir = Path(tempfile.mkdtemp(prefix="etcd-", dir=shm if shm.is_dir() else None))
        self._spawn(
            "etcd",
            [
                etcd,
                f"--data-dir={data_dir}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--log-level=error",
            ],
        )
        self._data_dir = data_dir
        self.etcd_url = f"http://127.0.0.1:{etcd_port}"
        d = self.workdir
        self._apiserver_argv = [
            str(bins / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--secure-port={self.api_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            # Loopback cannot back the `kubernetes` Service's endpoints (nothing routes to
            # Service IPs here anyway): keep the Service, skip its endpoints.
            "--endpoint-reconciler-type=none",
            f"--cert-dir={d / 'certs'}",
            f"--token-auth-file={d / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={d / 'sa.pub'}",
            f"--service-account-signing-key-file={d / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--service-cluster-ip-range=10.0.0.0/16",  # room for 1,000+ head Services
            f"--enable-admission-plugins={','.join(ADMISSION_PLUGINS)}",
            "--allow-privileged=true",
            *self._audit_flags(),
            *self._webhook_flags(),
            *([] if self.watch_cache else ["--watch-cache=false"]),
            "--v=0",
        ]
        self._spawn("kube-apiserver", self._apiserver_argv)
        self._wait_ready(timeout)
        if self.controller_manager:
            self._spawn(
                "kube-controller-manager",
                [
                    str(bins / "kube-controller-manager"),
                    f"--kubeconfig={self.kubeconfig}",
                    f"--controllers={','.join(CONTROLLERS)}",
                    f"--service-account-private-key-file={d / 'sa.key'}",
                    f"--root-ca-file={d / 'certs' / 'apiserver.crt'}",
                    "--use-service-account-credentials=false",
                    "--leader-elect=false",
                    "--secure-port=0",
                    "--concurrent-deployment-syncs=10",
                    "--concurrent-replicaset-syncs=10",
                    "--concurrent-gc-syncs=10",
                    "--v=0",
                ],
            )
        return self

    def stop_apiserver(self, grace: float = 10.0) -> None:
        """Stop kube-apiserver alone, as when its node restarts.

        SIGTERM, then SIGKILL after ``grace`` seconds: it drains open requests first, and the
        watch of a frozen (SIGSTOPped) client never drains.
        """
        (proc,) = [p for p in self.processes if p.args == self._apiserver_argv]
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self.processes.remove(proc)

    def start_apiserver(self, timeout: float = 60.0) -> None:
        """Start kube-apiserver again, on the same port, with the same flags."""
        self._spawn("kube-apiserver", self._apiserver_argv)
        self._wait_ready(timeout)

    def compact_etcd(self) -> int:
        """Compact etcd's history up to its current revision; that revision."""
        head = httpx.post(f"{self.etcd_url}/v3/kv/range", json={"key": "AA=="}, timeout=10)
        revision = int(head.json()["header"]["revision"])
        httpx.post(
            f"{self.etcd_url}/v3/kv/compaction",
            json={"revision": str(revision), "physical": True},
            timeout=30,
        ).raise_for_status()
        return revision

    def stop(self) -> None:
        """Stop every part, newest first, and remove what they wrote."""
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.processes):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes.clear()
        data_dir = getattr(self, "_data_dir", None)
        if data_dir is not None:
            shutil.rmtree(data_dir, ignore_errors=True)

    def __enter__(self) -> LocalControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def kubectl_env(self) -> dict[str, str]:
        """Environment for running the project's kubectl against this control plane."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def run_kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the project's kubectl with this control plane's kubeconfig."""
        return subprocess.run(
            [str(self.kubectl), *args],
            env=self.kubectl_env(),
            capture_output=True,
            text=True,
            check=check,
        )

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.processes.append(
            subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        )

    def _write_credentials(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        d = self.workdir
        lines = [f'{self.token},admin,admin,"system:masters"']
        for user in self.extra_users:
            token = self.user_tokens.setdefault(user, secrets.token_hex(16))
            lines.append(f'{token},{user},{user},"system:masters"')
        (d / "tokens.csv").write_text("\n".join(lines) + "\n")
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (d / "sa.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        (d / "sa.pub").write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def _webhook_flags(self) -> list[str]:
        if not self.token_webhook:
            return []
        path = self.workdir / "token-webhook.kubeconfig"
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: webhook\n  cluster:\n    server: {self.token_webhook}\n"
            "users:\n- name: apiserver\n  user: {}\n"
            "contexts:\n- name: webhook\n  context:\n    cluster: webhook\n    user: apiserver\n"
            "current-context: webhook\n"
        )
        # No caching of the webhook's answers: an expired token is refused at once.
        return [
            f"--authentication-token-webhook-config-file={path}",
            "--authentication-token-webhook-cache-ttl=0s",
        ]

    def _audit_flags(self) -> list[str]:
        if not self.audit_log:
            return []
        rule: dict[str, object] = {"level": "Metadata"}
        if self.extra_users:
            rule["users"] = list(self.extra_users)
        policy = {
            "apiVersion": "audit.k8s.io/v1",
            "kind": "Policy",
            "omitStages": ["ResponseStarted"],
            "rules": [rule, {"level": "None"}],
        }
        path = self.workdir / "audit-policy.json"  # JSON is YAML
        path.write_text(json.dumps(policy))
        return [
            f"--audit-policy-file={path}",
            f"--audit-log-path={self.audit_log_path}",
            "--audit-log-mode=blocking",  # written as each request is handled, not batched
            "--audit-log-maxsize=10000",  # MB: never rotated during a run
        ]

    def kubeconfig_text(self, token: str, user: str) -> str:
        """A kubeconfig that reaches this apiserver with a bearer token."""
        return (
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: local\n  cluster:\n    server: {self.server}\n"
            "    insecure-skip-tls-verify: true\n"
            f"users:\n- name: {user}\n  user:\n    token: {token}\n"
            f"contexts:\n- name: local\n  context:\n    cluster: local\n    user: {user}\n"
            "current-context: local\n"
        )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {self.token}"}
        last = ""
        while time.monotonic() < deadline:
            for proc in self.processes:
                if proc.poll() is not None:
                    raise ControlPlaneError(
                        f"{proc.args!r} exited with {proc.returncode}; see {self.workdir}"
                    )
            try:
                r = httpx.get(f"{self.server}/readyz", headers=headers, verify=False, timeout=2)
                if r.status_code == 200:
                    ns = httpx.get(
                        f"{self.server}/api/v1/namespaces/default",
                        headers=headers,
                        verify=False,
                        timeout=2,
                    )
                    if ns.status_code == 200:
                        return
                last = r.text
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise ControlPlaneError(f"kube-apiserver not ready after {timeout}s: {last}")
