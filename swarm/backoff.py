"""The one backoff of swarm: capped exponential delays with full jitter.

Every retry loop (the registry client's heartbeats, the agent runtime's bus loop,
the reconcile loop, the router, ``swarm bus read --follow``) waits through this
module, so the policy lives in one place: "full jitter" (uniform over
``[0, min(cap, base * 2**failures)]``) spreads a fleet's retries so they do not hit
a recovering service in lockstep, and ``floor`` keeps a loop from ever spinning.
Pure apart from the random draw and, in :meth:`Backoff.sleep`, the sleep.

>>> b = Backoff(base=0.1, cap=1.0)
>>> 0.05 <= b.next_delay() <= 0.1
True
>>> b.reset(); b.failures
0
"""

from __future__ import annotations

import asyncio
import random

from swarm.errors import InvalidRequestError

#: Lower bound of every wait: full jitter may draw ~0, and a loop must never spin.
MIN_DELAY = 0.05


def backoff_delay(
    failures: int,
    *,
    base: float = 0.2,
    cap: float = 1.5,
    floor: float = MIN_DELAY,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after ``failures`` consecutive failures (0 = the first one).

    >>> 0.05 <= backoff_delay(10, rng=random.Random(1)) <= 1.5
    True
    """
    if failures < 0:
        raise InvalidRequestError(f"failures must be >= 0, got {failures}")
    ceiling = min(cap, base * 2 ** min(failures, 32))
    draw = (rng or random).uniform(0.0, ceiling)
    return max(floor, min(draw, cap))


class Backoff:
    """Consecutive-failure counter of one retry loop; :meth:`reset` after a success."""

    def __init__(
        self,
        *,
        base: float = 0.2,
        cap: float = 1.5,
        floor: float = MIN_DELAY,
        rng: random.Random | None = None,
    ) -> None:
        if base <= 0 or cap <= 0 or floor < 0:
            raise InvalidRequestError(f"backoff needs base > 0, cap > 0, floor >= 0 (got {base}, {cap}, {floor})")
        self.base, self.cap, self.floor, self._rng = base, cap, min(floor, cap), rng
        self.failures = 0

    def next_delay(self) -> float:
        """Count one failure and return how long to wait before the next attempt."""
        delay = backoff_delay(self.failures, base=self.base, cap=self.cap, floor=self.floor, rng=self._rng)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0

    async def sleep(self) -> float:
        """Count one failure and sleep the delay; returns the delay slept."""
        delay = self.next_delay()
        await asyncio.sleep(delay)
        return delay
