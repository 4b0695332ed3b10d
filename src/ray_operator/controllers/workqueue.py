"""A per-key work queue: one reconcile at a time per key, bursts of triggers coalesced."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger(__name__)


class WorkQueue:
    """Run ``work(key)`` after each trigger, never twice at once for a key, merging bursts."""

    def __init__(
        self,
        work: Callable[[Hashable], Awaitable[None]],
        retry_seconds: float = 2.0,
        max_concurrent: int = 24,
    ):
        self._work = work
        # Bounded like controller-runtime's MaxConcurrentReconciles: hundreds of reconciles at
        # once only queue up in the HTTP pool and finish later, all of them.
        self._slots = asyncio.Semaphore(max_concurrent)
        self._running: dict[Hashable, asyncio.Task[None]] = {}
        self._dirty: set[Hashable] = set()
        self._retry_seconds = retry_seconds

    def trigger(self, key: Hashable) -> None:
        """Reconcile ``key`` soon; if it is being reconciled, once more afterwards."""
        if key in self._running:
            self._dirty.add(key)
            return
        self._running[key] = asyncio.create_task(self._run(key))

    async def _run(self, key: Hashable) -> None:
        try:
            while True:
                self._dirty.discard(key)
                try:
                    async with self._slots:
                        await self._work(key)
                except Exception:  # noqa: BLE001 - one cluster's failure must not stop the others
                    log.exception(
                        "reconcile of %s failed; retrying in %ss", key, self._retry_seconds
                    )
                    await asyncio.sleep(self._retry_seconds)
                    self._dirty.add(key)
                if key not in self._dirty:
                    return
        finally:
            self._running.pop(key, None)

    async def drain(self) -> None:
        """Wait for every running reconcile (used at shutdown)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)
