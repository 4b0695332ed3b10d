"""Python's cyclic garbage collector in a process whose caches hold thousands of objects.

The caches keep every watched object as parsed JSON: millions of dicts and lists at a thousand
clusters. A full (generation 2) collection walks all of them, 0.25 s of CPU each time at that
size, and finds nothing there: parsed JSON has no reference cycles. One such walk landing in a
quiet 30 s window is three quarters of a percent of a core, more than everything else the idle
operator does.

So after each full collection the survivors are frozen (``gc.freeze``: moved where no collection
looks), and later collections walk only what was created since. A frozen object that is dropped
is still freed at once by reference counting. Only a frozen object that ends up in an unreachable
cycle would stay; so once an hour everything is thawed, and the next full collection walks it
all again and frees such cycles before the survivors are frozen anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

THAW_SECONDS = 3600.0


class GcPauses(Collector):
    """Seconds spent in each generation's collections since start (``gc.callbacks``).

    prometheus_client's own GC collector counts collections but not their time.
    """

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self._started: float | None = None

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.seconds[int(info["generation"])] += time.perf_counter() - self._started
            self._started = None

    def collect(self) -> Iterator[CounterMetricFamily]:
        """One counter, a sample per generation."""
        family = CounterMetricFamily(
            "ray_operator_gc_pause_seconds",
            "Time spent in Python's cyclic garbage collector, by generation.",
            labels=["generation"],
        )
        for generation, seconds in enumerate(self.seconds):
            family.add_metric([str(generation)], seconds)
        yield family


_PROCESS_PAUSES: GcPauses | None = None


def gc_pauses() -> GcPauses:
    """The process's one timer (installed on first use: one callback however many registries)."""
    global _PROCESS_PAUSES
    if _PROCESS_PAUSES is None:
        _PROCESS_PAUSES = GcPauses()
        gc.callbacks.append(_PROCESS_PAUSES._callback)
    return _PROCESS_PAUSES


class FreezeAfterFullCollections:
    """While installed: freeze the survivors of every full collection; thaw once an hour."""

    def __init__(self, thaw_seconds: float = THAW_SECONDS) -> None:
        self.thaw_seconds = thaw_seconds
        self.freezes = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending = False
        self._thaw: asyncio.TimerHandle | None = None

    def install(self) -> None:
        """Start, on the running loop (the freeze runs there, never inside a collection)."""
        self._loop = asyncio.get_running_loop()
        gc.callbacks.append(self._callback)
        self._thaw = self._loop.call_later(self.thaw_seconds, self._thaw_all)

    def uninstall(self) -> None:
        """Stop, and give every frozen object back to the collector."""
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
        if self._thaw is not None:
            self._thaw.cancel()
        self._loop = None
        gc.unfreeze()

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase != "stop" or info["generation"] != 2 or self._pending or self._loop is None:
            return
        self._pending = True
        # A collection may run in any thread (a worker of to_thread, say): the loop's thread
        # does the freeze, after this collection has finished. A loop closed meanwhile needs
        # none (an exception here would only be printed by the collector).
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._freeze)

    def _freeze(self) -> None:
        self._pending = False
        gc.collect(1)  # what died since the full collection is not frozen with the survivors
        gc.freeze()
        self.freezes += 1

    def _thaw_all(self) -> None:
        gc.unfreeze()
        assert self._loop is not None
        self._thaw = self._loop.call_later(self.thaw_seconds, self._thaw_all)
