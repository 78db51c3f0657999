"""What ``swarm up`` prints as it happens: one readable line per registry event.

:func:`event_line` is pure (one entry of ``swarm:{N}:events`` -> a line, or None for
events not worth a line, e.g. a heartbeat's ``same``); :func:`follow_events` is the
async task ``up`` runs beside the watch loop: it reads the stream from its end
(XREAD BLOCK) and prints each line. Registrations, updates, deregistrations,
expiries (the registry's Lua scripts) and breaker changes (``breaker-opened`` /
``breaker-closed``, the prober's breaker script) all arrive on that one stream.

>>> event_line({"type": "expired", "agent": "writer-1", "data": "{}"}, "12:01:03")
'12:01:03 expired     writer-1'
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, Mapping

from swarm.backoff import Backoff
from swarm.foreign import REDIS_ERRORS, raise_if_cancelled
from swarm.keys import SwarmKeys, as_text, event_data as _doc

_WORDS = {
    "registered": "registered",
    "updated": "updated",
    "deregistered": "deregistered",
    "expired": "expired",
    "breaker-opened": "breaker open",
    "breaker-closed": "breaker closed",
    "catalog-changed": "catalog",
}


def event_line(fields: Mapping[str, str], clock: str) -> str | None:
    """The line ``up`` prints for one event (``clock`` is ``HH:MM:SS``); None when it prints none."""
    kind = fields.get("type", "")
    agent = fields.get("agent", "")
    word = _WORDS.get(kind)
    if word is None:  # "same" (a re-registration that changed nothing) and unknown kinds
        return None
    if kind == "catalog-changed":
        return None  # the watch loop already prints its passes
    head = f"{clock} {word:<11} {agent}"
    if kind in ("registered", "updated"):
        doc = _doc(fields.get("data", ""))
        details = []
        if doc.get("role"):
            details.append(f"role {doc['role']}")
        if doc.get("version"):
            details.append(f"v{str(doc['version']).removeprefix('v')}")
        if details:
            head += f" ({', '.join(details)})"
    return head


async def follow_events(redis: Any, swarm: str, out: Callable[[str], None], *, block_ms: int = 1000) -> None:
    """Print every new event of ``swarm`` through ``out`` until cancelled; Redis faults are retried with backoff."""

    def print_entry(fields: Mapping[str, str]) -> None:
        line = event_line(fields, time.strftime("%H:%M:%S"))
        if line is not None:
            out(line)

    await follow_entries(redis, swarm, print_entry, block_ms=block_ms)


async def follow_entries(
    redis: Any,
    swarm: str,
    on_entry: Callable[[Mapping[str, str]], None],
    *,
    block_ms: int = 1000,
    after_read: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Call ``on_entry`` with each new event of ``swarm`` (from the stream's end) until cancelled;
    ``after_read`` (if any) after every read, at least every ``block_ms``. Redis faults are retried with backoff."""
    key = SwarmKeys(swarm).events
    last = "$"
    backoff = Backoff(base=0.2, cap=2.0)
    while True:
        raise_if_cancelled()  # redis-py may have swallowed a cancel in the last read
        try:
            if last == "$":  # the newest entry's id, once: "$" again at each read would skip what came between
                newest = await redis.xrevrange(key, "+", "-", count=1)
                last = as_text(newest[0][0]) if newest else "0-0"
            reply = await redis.xread({key: last}, block=block_ms, count=100)
            if after_read is not None:
                await after_read()
        except REDIS_ERRORS:
            await backoff.sleep()
            continue
        backoff.reset()
        for _stream, entries in reply or []:
            for entry_id, raw in entries:
                last = as_text(entry_id)
                on_entry({as_text(k): as_text(v) for k, v in raw.items()})
