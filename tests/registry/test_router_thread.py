"""The registry runs its bus router on an event loop of its own, in a thread
(``swarm.registry.server._in_own_thread``): the router's long upkeep never holds up the
registry's requests, and the registry's stop still ends the router, after its cleanup."""

from __future__ import annotations

import asyncio
import threading
import time

from swarm.registry.server import _in_own_thread


def test_the_run_gets_its_own_loop_and_thread_and_ends_with_the_stop() -> None:
    seen: dict[str, object] = {}

    async def run(own_stop: asyncio.Event) -> None:
        seen["thread"] = threading.current_thread().name
        seen["loop"] = asyncio.get_running_loop()
        time.sleep(0.3)  # a stretch of synchronous work: the caller's loop must not wait for it
        await own_stop.wait()
        await asyncio.sleep(0.05)
        seen["cleaned"] = True  # the caller returns only after this

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(_in_own_thread("bus-router", run, stop))
        ticks, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < 0.25:  # this loop keeps turning while the run sleeps
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks >= 10, ticks
        assert seen["thread"] == "bus-router" and seen["loop"] is not asyncio.get_running_loop()
        stop.set()
        await asyncio.wait_for(task, timeout=10)
        assert seen.get("cleaned") is True

    asyncio.run(main())


def test_a_cancel_also_stops_the_run() -> None:
    ended = threading.Event()

    async def run(own_stop: asyncio.Event) -> None:
        await own_stop.wait()
        ended.set()

    async def main() -> None:
        task = asyncio.create_task(_in_own_thread("bus-router", run, asyncio.Event()))
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert ended.is_set()

    asyncio.run(main())
