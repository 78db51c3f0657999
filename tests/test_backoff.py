"""The one backoff (swarm.backoff): bounded, jittered, never a busy loop."""

from __future__ import annotations

import random

import pytest

from swarm.backoff import MIN_DELAY, Backoff, backoff_delay
from swarm.errors import InvalidRequestError


def test_delays_stay_within_floor_and_the_doubling_window() -> None:
    rng = random.Random(7)
    for failures in range(40):
        ceiling = min(1.5, 0.2 * 2**failures)
        for _ in range(50):
            d = backoff_delay(failures, rng=rng)
            assert MIN_DELAY <= d <= max(MIN_DELAY, ceiling)


def test_window_grows_then_caps() -> None:
    rng = random.Random(1)
    first = max(backoff_delay(0, base=0.1, cap=10, rng=rng) for _ in range(200))
    later = max(backoff_delay(6, base=0.1, cap=10, rng=rng) for _ in range(200))
    assert first <= 0.1 < later <= 6.4


def test_backoff_counts_and_resets() -> None:
    b = Backoff(base=0.5, cap=4.0, rng=random.Random(3))
    delays = [b.next_delay() for _ in range(10)]
    assert b.failures == 10
    assert all(MIN_DELAY <= d <= 4.0 for d in delays)
    b.reset()
    assert b.failures == 0
    assert b.next_delay() <= 0.5


@pytest.mark.parametrize("kwargs", [{"base": 0}, {"cap": -1}, {"floor": -0.1}])
def test_nonsense_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidRequestError):
        Backoff(**kwargs)


def test_negative_failures_are_refused() -> None:
    with pytest.raises(InvalidRequestError):
        backoff_delay(-1)


async def test_sleep_counts_a_failure() -> None:
    b = Backoff(base=0.01, cap=0.01, floor=0.0)
    slept = await b.sleep()
    assert 0.0 <= slept <= 0.01 and b.failures == 1
