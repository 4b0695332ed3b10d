"""The kubelet's part for service account tokens: projected, expiring, rotated files.

Since Kubernetes 1.24 a pod's identity is a short-lived token the kubelet asks for with the
TokenRequest API (bound to the pod), writes into the pod's
``/var/run/secrets/kubernetes.io/serviceaccount`` next to ``ca.crt`` and ``namespace``, and
renews when 80% of its lifetime has passed. :class:`TokenDirectory` does the same for a local
process: a directory holding those three files, kept fresh by a thread, which the process sees
at the standard path through a bind mount in a mount namespace of its own (see
:func:`in_cluster_argv`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import threading
import time
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger(__name__)
Obj = dict[str, Any]
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# The kubelet's default for projected tokens (kube-apiserver extends shorter requests to 1 h
# only when --service-account-extend-token-expiration says so; we ask for what we use).
DEFAULT_EXPIRATION = 3607


def request_token(
    server: str,
    admin_token: str,
    namespace: str,
    service_account: str,
    seconds: int = DEFAULT_EXPIRATION,
    pod: Obj | None = None,
) -> tuple[str, float]:
    """A token for a ServiceAccount (bound to ``pod`` when given) and its lifetime in seconds."""
    spec: Obj = {"expirationSeconds": seconds}
    if pod is not None:
        spec["boundObjectRef"] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod["metadata"]["name"],
            "uid": pod["metadata"]["uid"],
        }
    response = httpx.post(
        f"{server}/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
        json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        headers={"Authorization": f"Bearer {admin_token}"},
        verify=False,  # noqa: S501 - the local control plane's self-signed certificate
        timeout=10,
    )
    response.raise_for_status()
    status = response.json()["status"]
    return str(status["token"]), float(seconds)


class TokenDirectory:
    """``token``, ``ca.crt`` and ``namespace`` of one identity, renewed at 80% of its life."""

    def __init__(
        self,
        directory: Path,
        server: str,
        admin_token: str,
        ca_file: Path,
        namespace: str,
        service_account: str,
        seconds: int = DEFAULT_EXPIRATION,
        pod: Obj | None = None,
    ) -> None:
        self.directory = directory
        self._args = (server, admin_token, namespace, service_account, seconds, pod)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.renewals = 0
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "ca.crt").write_bytes(ca_file.read_bytes())
        (directory / "namespace").write_text(namespace)
        self._lifetime = self._renew()

    def _renew(self) -> float:
        token, lifetime = request_token(*self._args)
        # Written next to it, then renamed: a reader sees the old token or the new one, whole.
        staged = self.directory / ".token.new"
        staged.write_text(token)
        staged.replace(self.directory / "token")
        self.renewals += 1
        return lifetime

    def start(self) -> TokenDirectory:
        """Keep the token fresh in a background thread."""
        self._thread = threading.Thread(target=self._loop, daemon=True, name="token-renewal")
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self._lifetime * 0.8):
            try:
                self._lifetime = self._renew()
            except httpx.HTTPError as exc:
                log.warning("could not renew the token in %s: %s", self.directory, exc)
                self._lifetime = 10.0 / 0.8  # try again soon

    def stop(self) -> None:
        """Stop renewing."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def in_cluster_env(api_port: int) -> dict[str, str]:
    """What the kubelet tells every container about the apiserver (host network here)."""
    return {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api_port)}


def in_cluster_argv(
    tokens: Path, argv: list[str], mount_at: Path = SERVICE_ACCOUNT_DIR
) -> list[str]:
    """``argv`` run in a private mount namespace where ``mount_at`` shows ``tokens``."""
    with contextlib.suppress(OSError):
        os.makedirs(mount_at, exist_ok=True)  # the mount point, empty on the host
    setup = f'mount --bind {shlex.quote(str(tokens))} {shlex.quote(str(mount_at))} && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", setup, "sh", *argv]


def wait_for_account(server: str, admin_token: str, namespace: str, name: str) -> None:
    """Wait until a ServiceAccount exists (it is made by the chart or the operator)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = httpx.get(
            f"{server}/api/v1/namespaces/{namespace}/serviceaccounts/{name}",
            headers={"Authorization": f"Bearer {admin_token}"},
            verify=False,  # noqa: S501
            timeout=5,
        )
        if r.status_code == 200:
            return
        time.sleep(0.2)
    raise TimeoutError(f"ServiceAccount {namespace}/{name} does not exist after 30 s")
