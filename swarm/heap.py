"""Keeping Python's cyclic collector off a long-lived process's big heap (``gc.freeze``).

A 10,000-agent swarm is millions of objects in the reconcile daemon (the spec, the desired
state) and hundreds of thousands in the registry (the catalog's models). Python's cyclic
collector walks every one of them on each full collection, and under load full collections
come every few seconds: the registry's heartbeat p99 at 10,000 agents was 2x the bare
endpoint's, and with full collections kept off the big heap it falls below it. So long-lived
processes settle their heap now and then: collect, then freeze what survives, out of the
collector's sight. Reference counting still frees frozen objects that nothing holds (models
and dicts hold no cycles); only cyclic garbage among them waits for the next full settle.
"""

from __future__ import annotations

import asyncio
import gc
import time


class HeapSettler:
    """Collect, then freeze what survives.

    Most settles collect only what is not frozen yet (what was allocated since the last
    settle: a few milliseconds); every ``full_every``-th, and after ``full_seconds``, it
    unfreezes first, so cyclic garbage among frozen objects is found too. A full settle at
    10,000 agents holds the GIL ~0.45 s in the daemon: paid after every pass, it delayed a
    save that landed meanwhile by as much.
    """

    def __init__(self, full_every: int = 32, full_seconds: float = 300.0) -> None:
        self.full_every, self.full_seconds = full_every, full_seconds
        self._count, self._full_at = 0, float("-inf")

    def settle(self) -> bool:
        """Collect and freeze; True when this one was full."""
        self._count += 1
        now = time.monotonic()
        full = self._count % self.full_every == 1 or now - self._full_at >= self.full_seconds
        if full:
            gc.unfreeze()
            self._full_at = now
        gc.collect()
        gc.freeze()
        return full


async def settle_every(stop: asyncio.Event, seconds: float, settler: HeapSettler | None = None) -> None:
    """Settle the heap every ``seconds`` until ``stop`` (a server's background task: its
    long-lived objects, such as a catalog pushed since, leave the collector's sight)."""
    settler = settler or HeapSettler()
    while not stop.is_set():
        settler.settle()
        try:
            await asyncio.wait_for(stop.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass
