"""Waiting for something to happen, in tests: poll a condition until it holds or a deadline
passes, never sleep a fixed time and hope. The deadline is generous (a busy CI machine), the
poll frequent, so a test takes as long as the behaviour does, not as long as its worst case."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

POLL_S = 0.02


async def until(condition: Callable[[], bool | Awaitable[bool]], timeout_s: float = 30, what: str = "") -> None:
    """Return once `condition()` (plain or awaitable) is true; AssertionError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        outcome = condition()
        if await outcome if inspect.isawaitable(outcome) else outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s} s: {what or condition}")
        await asyncio.sleep(POLL_S)


def until_sync(condition: Callable[[], bool], timeout_s: float = 30, what: str = "") -> None:
    """`until` for tests that do not run an event loop."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s} s: {what or condition}")
        time.sleep(POLL_S)
