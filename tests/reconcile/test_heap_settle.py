"""The heap settle of long-lived processes (``swarm.heap.HeapSettler``: the watch loop between passes, the registry every 10 s):
young garbage is collected at every settle, garbage among frozen objects at the next full one."""

from __future__ import annotations

import gc
import weakref
from typing import Any, Iterator

import pytest

from swarm.heap import HeapSettler


class _Node:
    def __init__(self) -> None:
        self.other: Any = None


def _cycle() -> weakref.ref[_Node]:
    """A two-object reference cycle nothing else holds: only the cyclic collector frees it."""
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture(autouse=True)
def _thawed() -> Iterator[None]:
    yield
    gc.unfreeze()  # leave the test process' collector as it was


def test_young_garbage_goes_at_every_settle_old_garbage_at_the_next_full_one() -> None:
    settler = HeapSettler(full_every=3, full_seconds=3600)
    assert settler.settle() is True  # the first one is full
    old = _Node()
    old.other = _Node()
    old.other.other = old
    alive = weakref.ref(old)
    assert settler.settle() is False  # `old` is frozen now
    del old
    young = _cycle()
    assert settler.settle() is False
    assert young() is None, "a cycle made since the last settle outlived a settle"
    assert alive() is not None, "a frozen cycle was collected by a settle that is not full"
    assert settler.settle() is True  # the 4th: full_every=3 -> 1st, 4th, 7th, ...
    assert alive() is None, "a full settle left a frozen cycle"


def test_a_full_settle_after_full_seconds_whatever_the_count() -> None:
    settler = HeapSettler(full_every=1000, full_seconds=0.0)
    assert settler.settle() is True and settler.settle() is True


async def test_settle_every_freezes_what_was_made_since_and_ends_with_its_stop_event() -> None:
    import asyncio

    from swarm.heap import settle_every

    stop = asyncio.Event()
    task = asyncio.create_task(settle_every(stop, 0.02))
    await asyncio.sleep(0.05)
    before = gc.get_freeze_count()
    kept = [_Node() for _ in range(5000)]  # long-lived objects made after a settle
    await asyncio.sleep(0.1)
    assert gc.get_freeze_count() >= before + len(kept), "a settle since did not freeze them"
    stop.set()
    await asyncio.wait_for(task, timeout=2)


async def test_the_registry_settles_its_heap_in_its_lifespan_unless_told_not_to(redis_server: Any) -> None:
    """The registry holds a catalog of 10,000 models: its lifespan runs the settle (every
    ``heap_settle_seconds``), and ``heap_settle_seconds=0`` runs none."""
    import asyncio

    from swarm.registry.config import RegistryConfig
    from swarm.registry.server import create_app

    for seconds, want in ((0.05, True), (0.0, False)):
        gc.unfreeze()
        app = create_app(RegistryConfig(swarm="research", insecure=True, redis_url=redis_server.url, probe=False,
                                        route=False, heap_settle_seconds=seconds))
        async with app.router.lifespan_context(app):
            await asyncio.sleep(0.1)
            names = {t.get_name() for t in asyncio.all_tasks()}
            assert ("heap-settle" in names) is want, names
            assert (gc.get_freeze_count() > 0) is want  # the settle ran (froze the heap), or nothing did
        assert "heap-settle" not in {t.get_name() for t in asyncio.all_tasks()}  # stopped with the lifespan
