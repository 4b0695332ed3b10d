"""``ray-operator dashboard`` run as a user runs it, for the tests that go through it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ray_operator.localkube.control_plane import LocalControlPlane


@asynccontextmanager
async def dashboard(
    control_plane: LocalControlPlane, name: str, namespace: str
) -> AsyncIterator[str]:
    """``ray-operator dashboard NAME`` as a user runs it; yields the URL it prints."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ray_operator", "dashboard", name, "-n", namespace, "--port", "0",
        env={**os.environ, "KUBECONFIG": str(control_plane.kubeconfig)},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert found, f"no URL in {line!r}"
        yield found.group(0)
    finally:
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 10) == 0
