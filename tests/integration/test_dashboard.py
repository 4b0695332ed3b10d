"""``ray-operator dashboard`` refusals against the real apiserver: one message naming the object,
no traceback. That it reaches a real dashboard and job API: tests/e2e/test_pods_start_ray.py."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ray_operator.kube import SERVICE, Kube
from ray_operator.localkube.control_plane import LocalControlPlane
from tests.dashboard_process import dashboard
from tests.waiting import eventually

EXAMPLES = Path(__file__).parents[2] / "examples"
pytestmark = pytest.mark.usefixtures("running_operator")


def run_dashboard(control_plane: LocalControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ray_operator", "dashboard", *args, "--port", "0"],
        env={**os.environ, "KUBECONFIG": str(control_plane.kubeconfig)},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_ray_that_does_not_exist_is_named(
    control_plane: LocalControlPlane, namespace: str
) -> None:
    done = run_dashboard(control_plane, "nothere", "-n", namespace)
    assert done.returncode == 1, done
    assert f"Ray 'nothere' not found in namespace '{namespace}'" in done.stderr
    assert "Traceback" not in done.stderr


async def test_a_head_without_the_dashboard_port_is_named_with_its_ports(
    kube: Kube, control_plane: LocalControlPlane, namespace: str
) -> None:
    # ray-full.yaml's head template lists 6379-6381, 12345 and 12346: no 8265.
    await kube.apply_manifest(yaml.safe_load((EXAMPLES / "ray-full.yaml").read_text()), namespace)
    await eventually(
        lambda: kube.get_or_none(SERVICE, "sample-cluster-head", namespace), bool, what="Service"
    )
    done = run_dashboard(control_plane, "sample-cluster", "-n", namespace)
    assert done.returncode == 1, done
    assert "Service sample-cluster-head has no dashboard port" in done.stderr
    assert "port-6379=6379" in done.stderr and "containerPort 8265" in done.stderr
    assert "Traceback" not in done.stderr


async def test_the_relay_serves_only_the_dashboard_port_and_only_its_own_host(
    kube: Kube, control_plane: LocalControlPlane, namespace: str
) -> None:
    """A path that climbs out of the proxy (which the apiserver would resolve against its own
    API with the user's credentials) and a foreign Host (DNS rebinding) are refused."""
    await kube.apply_manifest(yaml.safe_load((EXAMPLES / "ray-simple.yaml").read_text()), namespace)
    await eventually(
        lambda: kube.get_or_none(SERVICE, "sample-cluster-head", namespace), bool, what="Service"
    )
    async with dashboard(control_plane, "sample-cluster", namespace) as url:
        port = int(url.rsplit(":", 1)[1])

        async def raw(request: str) -> str:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request.encode())
            await writer.drain()
            answer = (await reader.read(4096)).decode(errors="replace")
            writer.close()
            return answer.splitlines()[0] if answer else ""

        secrets = f"/api/v1/namespaces/{namespace}/secrets"
        climbing = f"GET /../../../../..{secrets} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
        encoded = f"GET /%2e%2e/%2e%2e/%2e%2e{secrets} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
        assert " 400 " in await raw(climbing)
        assert " 400 " in await raw(encoded)
        rebound = "GET /api/version HTTP/1.1\r\nHost: evil.example:8265\r\n\r\n"
        assert " 403 " in await raw(rebound)
