"""Login the way kubectl does: an ``exec`` plugin whose tokens expire after a minute.

The plugin is a small script (as ``aws eks get-token`` is for EKS): it mints a token, records it
where the test's TokenReview webhook reads it, counts its calls, and prints an ExecCredential
with ``expirationTimestamp``. The apiserver asks the webhook about every request (no caching),
and the webhook refuses a token past its expiry, so an operator that did not renew before the
minute is out would be refused from then on.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from ray_operator.api.crd import all_crds
from ray_operator.kube import NAMESPACE, RAY, Kube
from ray_operator.localkube.control_plane import LocalControlPlane, free_port
from ray_operator.localkube.crds import install_crds
from ray_operator.localkube.pod_runner import PodRunner
from tests.conftest import RESTRICTED
from tests.operator_process import OperatorProcess
from tests.waiting import eventually

Obj = dict[str, Any]
LIFETIME = 60

PLUGIN = """
import json, secrets, sys, time
tokens, calls, lifetime = sys.argv[1], sys.argv[2], int(sys.argv[3])
token = secrets.token_hex(16)
expiry = time.time() + lifetime
with open(tokens, "a") as f:
    f.write(json.dumps({"token": token, "expiry": expiry}) + "\\n")
with open(calls, "a") as f:
    f.write(str(time.time()) + "\\n")
print(json.dumps({
    "apiVersion": "client.authentication.k8s.io/v1",
    "kind": "ExecCredential",
    "status": {
        "token": token,
        "expirationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expiry)),
    },
}))
"""


class Webhook:
    """The TokenReview webhook: tokens the plugin minted, until their expiry."""

    def __init__(self, tokens: Path) -> None:
        self.tokens = tokens
        self.port = free_port()
        self.refused = 0

    def valid(self, token: str) -> bool:
        if not self.tokens.exists():
            return False
        for line in self.tokens.read_text().splitlines():
            entry = json.loads(line)
            if entry["token"] == token:
                return bool(entry["expiry"] > time.time())
        return False

    async def review(self, request: web.Request) -> web.Response:
        body = await request.json()
        token = body["spec"]["token"]
        status: Obj = {"authenticated": False}
        if self.valid(token):
            # Rights are not what this test is about: the plugin's user is an administrator.
            status = {"authenticated": True,
                      "user": {"username": "exec-user", "groups": ["system:masters"]}}
        else:
            self.refused += 1
        return web.json_response({**body, "status": status})

    async def __aenter__(self) -> Webhook:
        app = web.Application()
        app.router.add_post("/", self.review)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._runner.cleanup()


@pytest.fixture
async def exec_cluster(tmp_path: Path) -> AsyncIterator[tuple[LocalControlPlane, Kube, Path]]:
    """A control plane whose webhook knows the plugin's tokens, and an exec kubeconfig."""
    tokens, calls = tmp_path / "tokens.jsonl", tmp_path / "calls"
    async with Webhook(tokens) as webhook:
        with LocalControlPlane(token_webhook=f"http://127.0.0.1:{webhook.port}/") as cp:
            plugin = tmp_path / "plugin.py"
            plugin.write_text(PLUGIN)
            kubeconfig = tmp_path / "exec-kubeconfig"
            kubeconfig.write_text(json.dumps({
                "apiVersion": "v1", "kind": "Config", "current-context": "eks",
                "clusters": [{"name": "eks", "cluster": {
                    "server": cp.server, "insecure-skip-tls-verify": True}}],
                "users": [{"name": "exec", "user": {"exec": {
                    "apiVersion": "client.authentication.k8s.io/v1",
                    "command": sys.executable,
                    "args": [str(plugin), str(tokens), str(calls), str(LIFETIME)],
                    "interactiveMode": "Never",
                }}}],
                "contexts": [{"name": "eks", "context": {"cluster": "eks", "user": "exec"}}],
            }))
            admin = await Kube.connect(str(cp.kubeconfig))
            await install_crds(admin, all_crds())
            try:
                yield cp, admin, kubeconfig
            finally:
                await admin.close()


def calls(kubeconfig: Path) -> int:
    path = kubeconfig.parent / "calls"
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.slow
async def test_the_operator_keeps_working_past_the_first_expiry(
    exec_cluster: tuple[LocalControlPlane, Kube, Path],
) -> None:
    cp, admin, kubeconfig = exec_cluster
    ns = f"exec-{secrets.token_hex(3)}"
    await admin.create(
        NAMESPACE,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": RESTRICTED}},
    )
    runner = await PodRunner(admin, namespace=ns).start()
    operator = OperatorProcess(cp, extra_env={"KUBECONFIG": str(kubeconfig)}).start()
    started = time.monotonic()
    try:
        # In a thread: this event loop serves the webhook the apiserver asks meanwhile.
        await asyncio.to_thread(operator.wait_ready)
        await healthy_ray(admin, ns, "before")
        first = (kubeconfig.parent / "tokens.jsonl").read_text().splitlines()[0]
        # The first token runs out; a request still using it would now be refused.
        await asyncio.sleep(LIFETIME + 5)
        async with httpx.AsyncClient(verify=False) as client:  # noqa: S501 - self-signed
            refused = await client.get(
                f"{cp.server}/api/v1/namespaces",
                headers={"Authorization": f"Bearer {json.loads(first)['token']}"},
            )
        assert refused.status_code == 401
        await healthy_ray(admin, ns, "after")
        metrics = await asyncio.to_thread(operator.metrics)
    finally:
        await asyncio.to_thread(operator.stop)
        await runner.stop()
    elapsed = time.monotonic() - started
    # Renewed before each expiry (about every 48 s), not for every request.
    assert 2 <= calls(kubeconfig) <= elapsed / 40 + 2, (calls(kubeconfig), elapsed)
    # No request went out with an expired token: none was answered 401.
    assert not re.search(r'code="401"', metrics), "a request got 401"


async def healthy_ray(kube: Kube, ns: str, name: str) -> None:
    await kube.create(RAY, {"apiVersion": "ray.kubeflow.org/v1", "kind": "Ray",
                            "metadata": {"name": name}, "spec": {"worker": {"replicas": 1}}}, ns)
    await eventually(
        lambda: kube.get(RAY, name, ns),
        lambda r: (r.get("status") or {}).get("health") == "True",
        60,
        f"Ray {name} healthy",
    )
