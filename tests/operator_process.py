"""The operator as a separate process, so tests can kill, stop and restart it like a pod."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from ray_operator.localkube.control_plane import LocalControlPlane, die_with_parent, free_port
from ray_operator.localkube.service_account import (
    TokenDirectory,
    in_cluster_argv,
    in_cluster_env,
)


def value_of(samples: list[Sample], name: str, **labels: str) -> float:
    """The value of the sample with that name and exactly those labels, else 0."""
    return next((s.value for s in samples if s.name == name and s.labels == labels), 0.0)


class OperatorProcess:
    """`ray-operator run` against the local control plane; logs go to a file.

    With ``identity`` it runs as a pod would: in-cluster, with that ServiceAccount's projected
    token at the standard path (a mount namespace of its own) and no kubeconfig. Without it, it
    uses the control plane's admin kubeconfig (for tests that are about something else than
    rights, and say so).
    """

    def __init__(
        self,
        control_plane: LocalControlPlane,
        resync_seconds: float = 5.0,
        extra_env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
        identity: TokenDirectory | None = None,
    ) -> None:
        self.control_plane = control_plane
        self.extra_args = extra_args
        self.identity = identity
        self.log_path: Path = control_plane.workdir / f"operator-{time.time_ns()}.log"
        self.metrics_port = free_port()
        env = {
            **os.environ,
            "RAY_OPERATOR_RESYNC_SECONDS": str(resync_seconds),
            "RAY_OPERATOR_LEADER_ELECTION": "false",
            "KUBECONFIG": str(control_plane.kubeconfig),
            **(extra_env or {}),
            # The one value not taken from the caller: pods each have an address of their own,
            # these processes share the loopback.
            "RAY_OPERATOR_METRICS_PORT": str(self.metrics_port),
        }
        if identity is not None:
            env.pop("KUBECONFIG", None)
            env.update(in_cluster_env(control_plane.api_port))
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        """Start the operator."""
        log = self.log_path.open("ab")
        argv = [sys.executable, "-m", "ray_operator", "run", *self.extra_args]
        if self.identity is not None:
            argv = in_cluster_argv(self.identity.directory, argv)
        self.proc = subprocess.Popen(
            argv,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,  # never outlive a killed test session
        )
        return self

    @property
    def pid(self) -> int:
        """The operator's process id (the group leader)."""
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL, as when a node dies."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def pause(self) -> None:
        """SIGSTOP: the process is still there but does nothing (a frozen node)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 10 s; the exit status."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else None

    def probe(self, path: str) -> int:
        """HTTP status of one of the operator's endpoints (0: nothing answers)."""
        try:
            return httpx.get(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=2).status_code
        except httpx.HTTPError:
            return 0

    def metrics(self) -> str:
        """The operator's Prometheus metrics, as text."""
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def samples(self) -> list[Sample]:
        """Every sample of the operator's metrics, parsed."""
        return [s for family in text_string_to_metric_families(self.metrics())
                for s in family.samples]

    def metric(self, name: str, **labels: str) -> float:
        """One sample's value now (0 when the operator has not exported it yet)."""
        return value_of(self.samples(), name, **labels)

    def reconciles(self, controller: str = "ray", result: str = "success") -> int:
        """Reconciles of ``controller`` that ended so (``success``, ``error``).

        From the operator's own metrics.
        """
        return int(self.metric("ray_operator_reconcile_total", controller=controller,
                               result=result))

    async def more_reconciles(
        self, count: int, controller: str = "ray", timeout: float = 120, result: str = "success"
    ) -> None:
        """Wait until ``count`` more reconciles of ``controller`` have finished: the window in
        which something must (or must not) have happened, measured in the operator's own work
        rather than in seconds."""
        target = await asyncio.to_thread(self.reconciles, controller, result) + count
        deadline = time.monotonic() + timeout
        while await asyncio.to_thread(self.reconciles, controller, result) < target:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"fewer than {count} {controller} reconciles in {timeout}s:\n"
                    f"{self.logs()[-3000:]}"
                )
            await asyncio.sleep(0.25)

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until /readyz answers 200 (caches synced), or fail with the log."""
        deadline = time.monotonic() + timeout
        while self.probe("/readyz") != 200:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"the operator exited:\n{self.logs()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"operator not ready after {timeout}s:\n{self.logs()[-4000:]}")
            time.sleep(0.2)

    def logs(self) -> str:
        """Everything the operator logged."""
        return self.log_path.read_text(errors="replace")
