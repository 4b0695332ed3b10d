"""Wait for a condition on the real apiserver, with a clear message when it never comes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    check: Callable[[T], bool],
    timeout: float = 30.0,
    what: str = "condition",
) -> T:
    """Call ``probe`` until ``check`` accepts its result; fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    value = await probe()
    while not check(value):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not reached after {timeout}s; last seen: {value!r}")
        await asyncio.sleep(0.25)
        value = await probe()
    return value
