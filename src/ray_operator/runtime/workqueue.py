"""A rate-limited work queue: one reconcile at a time per key, failures retried with backoff.

Like client-go's work queue with its per-item exponential rate limiter: a key is never
reconciled twice at once, triggers that arrive meanwhile merge into one more run, and a key
whose reconcile fails waits 0.5 s, 1 s, 2 s, ... up to 5 minutes (with jitter) before the next
attempt, until one succeeds. Each failure is logged as one line; a traceback only the first
time an unexpected error is seen for a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

from ray_operator.kube import KubeError

log = logging.getLogger(__name__)


class Backoff(Exception):  # noqa: N818 - a signal to the queue, not an error of the code
    """Raised by a reconcile that reported its problem itself and wants a later retry."""


@dataclass
class QueueStats:
    """What the queue did, for metrics."""

    on_result: Callable[[str, float], None] | None = None  # (success|error, seconds)
    on_retry: Callable[[], None] | None = None
    on_depth: Callable[[int], None] | None = None


@dataclass
class WorkQueue:
    """Runs ``work(key)`` for triggered keys, at most ``max_concurrent`` at once."""

    name: str
    work: Callable[[Hashable], Awaitable[None]]
    max_concurrent: int = 24
    base_delay: float = 0.5
    max_delay: float = 300.0
    stats: QueueStats = field(default_factory=QueueStats)
    _slots: asyncio.Semaphore = field(init=False)
    _running: dict[Hashable, asyncio.Task[None]] = field(default_factory=dict, init=False)
    _dirty: set[Hashable] = field(default_factory=set, init=False)
    _waiting: set[Hashable] = field(default_factory=set, init=False)  # added before start()
    _timers: dict[Hashable, tuple[float, asyncio.TimerHandle]] = field(
        default_factory=dict, init=False
    )
    _failures: dict[Hashable, int] = field(default_factory=dict, init=False)
    _logged: dict[Hashable, set[str]] = field(default_factory=dict, init=False)
    _started: bool = field(default=False, init=False)
    _stopping: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        # Bounded like controller-runtime's MaxConcurrentReconciles: hundreds of reconciles at
        # once only queue up in the HTTP pool and finish later, all of them.
        self._slots = asyncio.Semaphore(self.max_concurrent)

    # --- adding -----------------------------------------------------------------------------
    def add(self, key: Hashable) -> None:
        """Reconcile ``key`` soon; if it is being reconciled, once more afterwards."""
        if self._stopping:
            return
        if not self._started:
            self._waiting.add(key)
            return
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer[1].cancel()
        if key in self._running:
            self._dirty.add(key)
            return
        self._running[key] = asyncio.create_task(self._run(key))
        self._depth()

    def add_after(self, key: Hashable, seconds: float) -> None:
        """Reconcile ``key`` in ``seconds`` (an earlier pending time wins)."""
        if self._stopping:
            return
        if seconds <= 0:
            self.add(key)
            return
        when = time.monotonic() + seconds
        current = self._timers.get(key)
        if current is not None and current[0] <= when:
            return
        if current is not None:
            current[1].cancel()
        handle = asyncio.get_running_loop().call_later(seconds, self._fire, key)
        self._timers[key] = (when, handle)

    def forget(self, key: Hashable) -> None:
        """The object is gone: no retries, no pending timer."""
        self._failures.pop(key, None)
        self._logged.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer[1].cancel()

    def failures(self, key: Hashable) -> int:
        """Failed attempts in a row for ``key``."""
        return self._failures.get(key, 0)

    def __len__(self) -> int:
        return len(self._running) + len(self._timers) + len(self._waiting)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def _depth(self) -> None:
        if self.stats.on_depth is not None:
            self.stats.on_depth(len(self))

    # --- running ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start working (again, after :meth:`stop`), beginning with every key added so far."""
        self._started = True
        self._stopping = False
        waiting, self._waiting = self._waiting, set()
        for key in waiting:
            self.add(key)

    async def _run(self, key: Hashable) -> None:
        try:
            while True:
                self._dirty.discard(key)
                failed = False
                async with self._slots:
                    started = time.monotonic()
                    try:
                        await self.work(key)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - one object must not stop the rest
                        failed = True
                        self._record("error", started)
                        self._failed(key, exc)
                    else:
                        self._record("success", started)
                        self._failures.pop(key, None)
                        self._logged.pop(key, None)
                if failed or key not in self._dirty or self._stopping:
                    return
        finally:
            self._running.pop(key, None)
            self._depth()

    def _record(self, result: str, started: float) -> None:
        if self.stats.on_result is not None:
            self.stats.on_result(result, time.monotonic() - started)

    def _failed(self, key: Hashable, exc: Exception) -> None:
        attempt = self._failures.get(key, 0) + 1
        self._failures[key] = attempt
        delay = min(self.base_delay * 2 ** (attempt - 1), self.max_delay)
        delay *= random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security
        if self.stats.on_retry is not None:
            self.stats.on_retry()
        expected = isinstance(exc, Backoff | KubeError)
        seen = self._logged.setdefault(key, set())
        first = f"{type(exc).__name__}: {exc}" not in seen
        seen.add(f"{type(exc).__name__}: {exc}")
        log.log(
            logging.WARNING if first or attempt <= 3 else logging.DEBUG,
            "%s %s: attempt %d failed, retrying in %.1fs: %s",
            self.name,
            _show(key),
            attempt,
            delay,
            exc,
            exc_info=first and not expected,
        )
        self._dirty.discard(key)
        self.add_after(key, delay)

    async def stop(self, grace: float = 5.0) -> None:
        """Take no new work; let running reconciles finish for ``grace`` seconds, then cancel.

        Keys added afterwards are dropped until :meth:`start` (which begins with a resync).
        """
        self._stopping = True
        self._started = False
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._waiting.clear()
        tasks = list(self._running.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _show(key: Hashable) -> str:
    if isinstance(key, tuple) and all(isinstance(k, str) for k in key):
        return "/".join(key)
    return str(key)
