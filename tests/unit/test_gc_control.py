"""The operator's garbage-collector policy: survivors of a full collection are frozen, so the
next full collections do not walk the caches again; uninstalling gives them back."""

from __future__ import annotations

import asyncio
import gc
import time

from ray_operator.runtime.gc_control import FreezeAfterFullCollections, gc_pauses


async def test_survivors_of_a_full_collection_are_frozen_and_thawed_on_uninstall() -> None:
    policy = FreezeAfterFullCollections()
    policy.install()
    try:
        cache = [{"metadata": {"name": f"ray-{i}", "labels": {"app": "ray"}}} for i in range(5000)]
        assert gc.get_freeze_count() == 0
        gc.collect()  # a full collection, as the interpreter runs them on its own
        await asyncio.sleep(0)  # the freeze runs on the loop, after the collection
        assert policy.freezes == 1
        assert gc.get_freeze_count() > 3 * len(cache)  # each entry is 3 tracked containers
        gc.collect(1)  # a young collection is no reason to freeze again
        await asyncio.sleep(0)
        assert policy.freezes == 1
    finally:
        policy.uninstall()
    assert gc.get_freeze_count() == 0
    gc.collect()
    await asyncio.sleep(0)
    assert policy.freezes == 1  # uninstalled: no more freezes


async def test_the_hourly_thaw_gives_everything_back_to_the_collector() -> None:
    policy = FreezeAfterFullCollections(thaw_seconds=0.05)
    policy.install()
    try:
        gc.collect()
        await asyncio.sleep(0)
        assert gc.get_freeze_count() > 0
        deadline = time.monotonic() + 5
        while gc.get_freeze_count() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        frozen_after_thaw = gc.get_freeze_count()
    finally:
        policy.uninstall()
    assert frozen_after_thaw == 0


def test_collection_time_is_counted_by_generation() -> None:
    pauses = gc_pauses()
    before = list(pauses.seconds)
    gc.collect()
    assert pauses.seconds[2] > before[2]
    (family,) = pauses.collect()
    assert {s.labels["generation"] for s in family.samples} == {"0", "1", "2"}
