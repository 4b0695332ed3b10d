"""The operator as a separate process, so tests can kill and restart it like a pod."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ray_operator.localkube.control_plane import LocalControlPlane, die_with_parent


class OperatorProcess:
    """`ray-operator run` with the control plane's kubeconfig; logs go to a file."""

    def __init__(
        self,
        control_plane: LocalControlPlane,
        resync_seconds: float = 5.0,
        extra_env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.control_plane = control_plane
        self.extra_args = extra_args  # e.g. ("--liveness", URL), as the chart runs it
        self.log_path: Path = control_plane.workdir / f"operator-{time.time_ns()}.log"
        self.env = {
            **os.environ,
            "KUBECONFIG": str(control_plane.kubeconfig),
            "RAY_OPERATOR_RESYNC_SECONDS": str(resync_seconds),
            **(extra_env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        """Start the operator."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ray_operator", "run", *self.extra_args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,  # never outlive a killed test session
        )
        return self

    def kill(self) -> None:
        """SIGKILL, as when a node dies."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def logs(self) -> str:
        """Everything the operator logged."""
        return self.log_path.read_text(errors="replace")
