"""The rate-limited work queue: single flight per key, backoff on failure, a quick stop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable

import pytest

from ray_operator.runtime.workqueue import Backoff, WorkQueue


async def test_a_key_runs_once_at_a_time_and_triggers_meanwhile_merge() -> None:
    running = 0
    most = 0
    runs = 0

    async def work(_: Hashable) -> None:
        nonlocal running, most, runs
        running += 1
        most = max(most, running)
        runs += 1
        await asyncio.sleep(0.05)
        running -= 1

    queue = WorkQueue("t", work)
    queue.start()
    queue.add("k")
    await asyncio.sleep(0.01)  # the first run has started
    for _ in range(10):
        queue.add("k")
    await asyncio.sleep(0.3)
    assert most == 1
    assert runs == 2  # the first, then one more for all the triggers that came meanwhile


async def test_failures_back_off_exponentially_and_success_resets() -> None:
    times: list[float] = []
    fail = 4

    async def work(_: Hashable) -> None:
        times.append(time.monotonic())
        if len(times) <= fail:
            raise Backoff("not yet")

    queue = WorkQueue("t", work, base_delay=0.05)
    queue.start()
    queue.add("k")
    while len(times) <= fail:
        await asyncio.sleep(0.01)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # 0.05, 0.1, 0.2, 0.4 s, each within the +-20 % jitter.
    for gap, expected in zip(gaps, (0.05, 0.1, 0.2, 0.4), strict=False):
        assert expected * 0.8 <= gap <= expected * 1.2 + 0.05, gaps
    assert queue.failures("k") == 0  # the last run succeeded


async def test_a_failure_is_one_log_line_and_a_traceback_only_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def work(_: Hashable) -> None:
        raise RuntimeError("broken")

    queue = WorkQueue("t", work, base_delay=0.01)
    caplog.set_level(logging.DEBUG, logger="ray_operator.runtime.workqueue")
    queue.start()
    queue.add("k")
    while queue.failures("k") < 6:
        await asyncio.sleep(0.01)
    await queue.stop()
    records = [r for r in caplog.records if "attempt" in r.getMessage()]
    assert len(records) >= 6
    assert sum(1 for r in records if r.exc_info) == 1
    assert sum(1 for r in records if r.levelno >= logging.WARNING) == 3


async def test_stop_ends_within_its_grace_even_with_work_that_hangs() -> None:
    async def work(_: Hashable) -> None:
        await asyncio.sleep(3600)

    queue = WorkQueue("t", work)
    queue.start()
    queue.add("k")
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await queue.stop(grace=0.2)
    assert time.monotonic() - started < 1.0
    assert len(queue) == 0
