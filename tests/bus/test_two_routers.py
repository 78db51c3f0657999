"""Two routers on one swarm: routing stays exactly-once per message id, also when one
of them is SIGKILLed mid-stream (the other reclaims what it had read). Real
redis-server and two real ``swarm bus route`` processes."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.bus.conftest import BusFactory
from tests.bus.test_routed import drain
from tests.support.router import RouterFactory
from tests.support.services import RedisServer

pytestmark = pytest.mark.slow


async def test_two_routers_route_each_id_once_even_when_one_dies(
    make_bus: BusFactory, applied: aioredis.Redis, redis_server: RedisServer, router_factory: RouterFactory
) -> None:
    first = router_factory(redis_url=redis_server.url, swarm="lab", reclaim_idle_ms=300)
    router_factory(redis_url=redis_server.url, swarm="lab", reclaim_idle_ms=300)
    planner = await make_bus("planner")
    ids = [f"job-{n}" for n in range(200)]
    for n, mid in enumerate(ids):
        await planner.publish("tasks.research", {"n": n}, message_id=mid)
        await planner.publish("tasks.research", {"n": n}, message_id=mid)  # a retry: a duplicate
        if n == 80:
            first.kill()  # whatever it had read but not routed is reclaimed by the other
    got = await drain(await make_bus("worker-a"), idle=1.5, limit=60)
    counts = Counter(m.message_id for m in got)
    assert counts == Counter({mid: 1 for mid in ids})
    log: Any = await applied.xrange("swarm:{lab}:topic:tasks.research")
    assert sorted(f["message_id"] for _, f in log) == sorted(ids)
    assert await applied.xlen("swarm:{lab}:outbox:planner") == 0
