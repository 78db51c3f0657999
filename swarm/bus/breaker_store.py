"""Circuit breakers shared in Redis: the adapter around ``lua/breaker.lua``.

Called by the health prober (acquire a check, record its result), by
``swarm bus breaker`` (show, reset) and by the reconciler (read states). The rules
are those of :mod:`swarm.bus.breaker`; here they run as one Lua script per call so
that a transition is atomic across processes, timed on the Redis server's clock
(``TIME``), and appends a ``breaker-opened`` / ``breaker-closed`` watch event to the
swarm's event stream in the same step. The registry lists an agent as critical from
the hash's ``state`` field.

>>> # store = BreakerStore(redis, "research", BreakerPolicy())
>>> # ticket = await store.acquire("web-researcher")  # None: do not check now
>>> # await store.record_failure("web-researcher", ticket)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from swarm.bus.breaker import BreakerPolicy, BreakerSnapshot, BreakerState
from swarm.bus.scripts import load_script
from swarm.foreign import REDIS_ERRORS, redis_error
from swarm.keys import SwarmKeys, as_text

#: Watch events kept in the swarm's event stream (XADD MAXLEN ~).
EVENTS_MAXLEN = 10_000


@dataclass(frozen=True)
class BreakerReply:
    """The state after one script call, the ticket it handed out and any transition."""

    snapshot: BreakerSnapshot
    ticket: int | None
    transition: BreakerState | None
    now_ms: int

    def cooldown_left_ms(self) -> int:
        retry_at = self.snapshot.retry_at_ms()
        return max(0, retry_at - self.now_ms) if retry_at is not None else 0


def policy_from_settings(settings: Any) -> BreakerPolicy:
    """A policy from ``BusConfig.breaker`` (bus.json); the probe timeout is the probe interval."""
    return BreakerPolicy.from_seconds(
        failure_threshold=settings.failure_threshold,
        cooldown_seconds=settings.cooldown_seconds,
        max_cooldown_seconds=settings.max_cooldown_seconds,
        probe_timeout_seconds=max(1.0, settings.probe_interval_seconds * 2),
    )


class BreakerStore:
    """Breakers of one swarm in Redis; every method is one atomic script call."""

    def __init__(self, redis: aioredis.Redis, swarm: str, policy: BreakerPolicy | None = None) -> None:
        self.redis = redis
        self.keys = SwarmKeys(swarm)
        self.policy = policy or BreakerPolicy()
        self._script = redis.register_script(load_script("breaker"))

    async def _call(self, op: str, agent_id: str, *, epoch: int = -1, now_ms: int | None = None, lock_ms: int = 0) -> BreakerReply:
        p = self.policy
        args: list[Any] = [
            op, epoch, p.failure_threshold, p.cooldown_ms, p.max_cooldown_ms, p.probe_timeout_ms,
            agent_id, "" if now_ms is None else now_ms, EVENTS_MAXLEN, lock_ms,
        ]
        try:
            raw = await self._script(keys=[self.keys.breaker(agent_id), self.keys.events], args=args)
        except REDIS_ERRORS as exc:
            raise redis_error(exc, f"breaker of {agent_id!r}") from exc
        return parse_reply(raw)

    async def read(self, agent_id: str) -> BreakerReply:
        return await self._call("read", agent_id)

    async def acquire(self, agent_id: str, *, now_ms: int | None = None) -> int | None:
        """The epoch to run a health check under, or None (open before cooldown, probe in flight)."""
        return (await self.acquire_reply(agent_id, now_ms=now_ms)).ticket

    async def acquire_reply(self, agent_id: str, *, now_ms: int | None = None) -> BreakerReply:
        return await self._call("acquire", agent_id, now_ms=now_ms)

    async def record_success(self, agent_id: str, epoch: int, *, now_ms: int | None = None) -> BreakerReply:
        return await self._call("success", agent_id, epoch=epoch, now_ms=now_ms)

    async def record_failure(self, agent_id: str, epoch: int, *, now_ms: int | None = None) -> BreakerReply:
        return await self._call("failure", agent_id, epoch=epoch, now_ms=now_ms)

    async def reset(self, agent_id: str) -> BreakerReply:
        return await self._call("reset", agent_id)

    async def lock(self, agent_id: str, lock_ms: int) -> bool:
        """Take this agent's check slot for ``lock_ms``; False if another prober holds it."""
        return (await self._call("lock", agent_id, lock_ms=max(1, lock_ms))).ticket is not None


def parse_reply(raw: list[Any]) -> BreakerReply:
    text = [as_text(x) for x in raw]
    snap = BreakerSnapshot(
        state=BreakerState(text[0]),
        failures=int(text[1]),
        epoch=int(text[2]),
        opened_at_ms=int(text[3]),
        cooldown_ms=int(text[4]),
        probe_until_ms=int(text[5]),
    )
    ticket = int(text[6])
    return BreakerReply(
        snapshot=snap,
        ticket=None if ticket < 0 else ticket,
        transition=BreakerState(text[7]) if text[7] else None,
        now_ms=int(text[8]),
    )
