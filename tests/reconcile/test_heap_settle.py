"""The watch loop's heap settle between passes (``swarm.reconcile.loop._HeapSettler``):
young garbage is collected at every settle, garbage among frozen objects at the next full one."""

from __future__ import annotations

import gc
import weakref
from typing import Any, Iterator

import pytest

from swarm.reconcile.loop import _HeapSettler


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
    settler = _HeapSettler(full_every=3, full_seconds=3600)
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
    settler = _HeapSettler(full_every=1000, full_seconds=0.0)
    assert settler.settle() is True and settler.settle() is True
