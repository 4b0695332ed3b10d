"""``ray-operator dashboard`` refusals against the real apiserver: one message naming the object,
no traceback. That it reaches a real dashboard and job API: tests/e2e/test_pods_start_ray.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ray_operator.kube import SERVICE, Kube
from ray_operator.localkube.control_plane import LocalControlPlane
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
