"""Run the job runner as its Pod would: `python -m ray_operator.jobs` with the Pod's env."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray_operator.kube import CONFIGMAP, Kube


@dataclass
class RunnerResult:
    returncode: int
    output: str


def runner_command() -> list[str]:
    return [sys.executable, "-m", "ray_operator.jobs"]


def start_runner(kubeconfig: Path | str, namespace: str, configmap: str, **env: str) -> Any:
    full_env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "RAY_JOB_CONFIGMAP": configmap,
        "RAY_JOB_NAMESPACE": namespace,
        # No mounted Secrets unless a test gives them.
        "RAY_JOB_S3_CREDENTIALS_DIR": "/nonexistent",
        "RAY_JOB_RAY_TOKEN_FILE": "/nonexistent",
        **env,
    }
    return subprocess.Popen(
        runner_command(), env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


async def run_runner(
    kubeconfig: Path | str, namespace: str, configmap: str, timeout: float = 180, **env: str
) -> RunnerResult:
    proc = start_runner(kubeconfig, namespace, configmap, **env)
    try:
        out, _ = await asyncio.to_thread(proc.communicate, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"runner still running after {timeout}s; output:\n{out}") from None
    return RunnerResult(proc.returncode, out)


async def wait_for_data(
    kube: Kube, namespace: str, name: str, key: str, values: set[str], timeout: float = 90
) -> dict[str, str]:
    async with asyncio.timeout(timeout):
        while True:
            data: dict[str, str] = (await kube.get(CONFIGMAP, name, namespace)).get("data") or {}
            if data.get(key) in values:
                return data
            await asyncio.sleep(0.2)


def configmap(name: str, data: Mapping[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": dict(data)}
