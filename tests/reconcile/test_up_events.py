"""Unit tests of the pure event -> line printing of ``swarm up``."""

from __future__ import annotations

import asyncio
import json

from swarm.foreign import raise_if_cancelled
from swarm.reconcile.up_events import event_line, follow_entries


def test_registration_line_names_role_and_version() -> None:
    data = json.dumps({"agent_id": "writer-1", "role": "writer", "version": "1.2.0"})
    line = event_line({"type": "registered", "agent": "writer-1", "data": data}, "12:01:03")
    assert line == "12:01:03 registered  writer-1 (role writer, v1.2.0)"


def test_expiry_deregistration_and_breaker_lines() -> None:
    assert event_line({"type": "expired", "agent": "w", "data": "{}"}, "t") == "t expired     w"
    assert event_line({"type": "deregistered", "agent": "w", "data": "{}"}, "t") == "t deregistered w"
    assert event_line({"type": "breaker-opened", "agent": "w", "data": "{}"}, "t") == "t breaker open w"
    assert event_line({"type": "breaker-closed", "agent": "w", "data": ""}, "t") == "t breaker closed w"


def test_heartbeats_catalog_and_unknown_kinds_print_nothing() -> None:
    for kind in ("same", "catalog-changed", "nonsense"):
        assert event_line({"type": kind, "agent": "w", "data": "{}"}, "t") is None


def test_bad_data_still_gives_a_line() -> None:
    assert event_line({"type": "registered", "agent": "w", "data": "not json"}, "t") == "t registered  w"


class _SwallowingRedis:
    """redis-py's quirk (issues #2028, #2551) made certain: a cancel during XREAD BLOCK comes back as a timeout."""

    def __init__(self) -> None:
        self.reads = 0
        self.swallowed = 0

    async def xrevrange(self, *_args: object, **_kwargs: object) -> list[object]:
        return []

    async def xread(self, *_args: object, **_kwargs: object) -> None:
        self.reads += 1
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            if self.swallowed:  # once is the quirk; a second cancel goes through, so a failing test ends
                raise
            self.swallowed += 1  # what redis-py does when the cancel meets its read timeout
        return None


def test_a_cancel_the_redis_client_swallows_still_ends_the_follower() -> None:
    """``swarm up`` cancels its event follower on Ctrl-C; a swallowed cancel must not keep it (and up) running."""
    fake = _SwallowingRedis()

    async def run() -> None:
        task = asyncio.create_task(follow_entries(fake, "research", lambda _fields: None, block_ms=50))
        await asyncio.sleep(0.12)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5)
        assert done == {task}, "the follower ignored its cancel"
        assert task.cancelled()

    asyncio.run(run())
    assert fake.swallowed == 1 and fake.reads >= 2


def test_raise_if_cancelled_is_quiet_outside_a_cancel() -> None:
    async def run() -> str:
        raise_if_cancelled()
        return "ran on"

    assert asyncio.run(run()) == "ran on"
    raise_if_cancelled()  # no running task at all: nothing to honour
