"""Waiting for a condition in tests: a bound on how long something may take to happen, not a timing claim.

``wait_until(check, timeout, every)`` calls ``check`` until it returns something
truthy and returns that value; after ``timeout`` seconds it fails the test
(AssertionError, naming ``what`` and the last value seen). ``await_until`` is the
same inside an event loop: ``check`` may return a value or an awaitable of one,
and the loop keeps running between tries.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, Awaitable, Callable, TypeVar

T = TypeVar("T")


def _timed_out(what: str, timeout: float, last: object) -> AssertionError:
    return AssertionError(f"{what} not met within {timeout}s (last: {last!r})")


def wait_until(check: Callable[[], T], timeout: float = 20.0, every: float = 0.05, what: str = "condition") -> T:
    """The first truthy value of ``check()``; AssertionError once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, value)
        time.sleep(every)


async def await_until(check: Callable[[], Awaitable[T] | T], timeout: float = 20.0, every: float = 0.05,
                      what: str = "condition") -> T:
    """:func:`wait_until` for a test running in an event loop (``check`` may be a coroutine function)."""
    deadline = time.monotonic() + timeout
    while True:
        value: Any = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[no-any-return]
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, value)
        await asyncio.sleep(every)
