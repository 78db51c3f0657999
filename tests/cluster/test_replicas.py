"""Replicas of the registry and the router on one swarm (one Redis): three registries, each
watched, see every event once and evict each expiry once; two routers route each message id
exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest

from swarm.bus.apply import agent_redis_url, apply_bus
from swarm.bus.bus import EventBus
from swarm.redis_conn import async_client
from tests.bus.conftest import SECRET, make_desired
from tests.registry.conftest import SSEReader, make_catalog
from tests.support.services import RedisServer

pytestmark = pytest.mark.slow

EVENTS = "swarm:{research}:events"


async def _watch(reg: Any, want: int, seen: Counter[tuple[str, str]], ready: asyncio.Event) -> None:
    async with httpx.AsyncClient(headers=reg.read_headers(), timeout=30) as http:
        async with http.stream("GET", reg.url + "/agents/watch") as resp:
            assert resp.status_code == 200
            ready.set()
            sse = SSEReader(resp)
            while sum(seen.values()) < want:
                ev = await sse.next_event(timeout=20)
                data = ev.json()
                if ev.event in ("registered", "expired"):
                    seen[(ev.event, data["agent_id"])] += 1  # type: ignore[index]
            try:  # a duplicate would come right behind
                ev = await sse.next_event(timeout=1.0)
                if ev.event in ("registered", "expired"):
                    seen[(ev.event, ev.json()["agent_id"])] += 1  # type: ignore[index]
            except (asyncio.TimeoutError, TimeoutError):
                pass


def test_three_registries_every_watcher_sees_each_event_once_and_each_expiry_is_evicted_once(
    registry_factory: Any, redis_server: RedisServer
) -> None:
    args = ["--sweep-interval", "0.1", "--min-protect", "1000", "--no-route", "--no-probe"]
    regs = [registry_factory(redis_server, extra_args=args) for _ in range(3)]
    ids = [f"agent-{i}" for i in range(6)]
    regs[0].push(make_catalog(ids, ttl_seconds=1))

    async def scenario() -> list[Counter[tuple[str, str]]]:
        seen: list[Counter[tuple[str, str]]] = [Counter() for _ in regs]
        ready = [asyncio.Event() for _ in regs]
        watchers = [asyncio.create_task(_watch(reg, 2 * len(ids), s, r)) for reg, s, r in zip(regs, seen, ready)]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 20)
        await asyncio.sleep(0.3)
        for n, agent_id in enumerate(ids):  # through each registry in turn; no heartbeats: all expire
            r = await asyncio.to_thread(regs[n % 3].register, agent_id)
            assert r.status_code == 201, r.text
        await asyncio.wait_for(asyncio.gather(*watchers), 60)
        return seen

    seen = asyncio.run(scenario())
    expected = Counter({(kind, a): 1 for a in ids for kind in ("registered", "expired")})
    for counts in seen:
        assert counts == expected
    with redis_server.client() as r:  # type: ignore[attr-defined]
        expired = [f[b"agent"].decode() for _, f in r.xrange(EVENTS) if f[b"type"] == b"expired"]
    assert sorted(expired) == ids  # evicted once each, by whichever registry swept first
    evictions = sum(float(line.split()[-1]) for reg in regs for line in reg.get("/metrics").text.splitlines()
                    if line.startswith("swarm_registry_evictions_total"))
    assert evictions == len(ids)


async def test_two_routers_route_each_message_id_exactly_once(redis_server: RedisServer, router_factory: Any) -> None:
    desired = make_desired()
    admin = async_client(redis_server.url, swarm="lab", decode_responses=True)
    await apply_bus(admin, desired.bus, desired.acl, secret=SECRET)
    await admin.aclose()
    for _ in range(2):
        router_factory(redis_url=redis_server.url, swarm="lab")

    def bus(agent_id: str) -> EventBus:
        return EventBus(redis_url=agent_redis_url(redis_server.url, "lab", agent_id, SECRET), swarm="lab",
                        agent_id=agent_id, block_ms=200)

    planner, worker = bus("planner"), bus("worker-a")
    await planner.connect()
    await worker.connect()
    try:
        ids = [f"m{i}" for i in range(60)]
        for mid in ids:
            await planner.publish("tasks.research", {"id": mid}, message_id=mid)
        for mid in ids[:20]:  # retries of the same ids: the routers drop them as duplicates
            await planner.publish("tasks.research", {"id": mid}, message_id=mid)
        again = await planner.publish("tasks.research", {"id": "m0"}, message_id="m0", wait=True, timeout=10)
        assert again.status == "duplicate"
        got: Counter[str] = Counter()

        async def consume() -> None:
            async for message in worker.subscribe():
                got[message.message_id] += 1
                await message.ack()
                if len(got) == len(ids):
                    break

        await asyncio.wait_for(consume(), 30)
        await asyncio.sleep(1.0)  # anything routed twice would be in the inbox by now
        with redis_server.client() as r:  # type: ignore[attr-defined]
            assert r.xlen("swarm:{lab}:inbox:worker-a") == 0
            topic_ids = [f[b"message_id"].decode() for _, f in r.xrange("swarm:{lab}:topic:tasks.research")]
            readers = r.xinfo_consumers("swarm:{lab}:outbox:planner", "router")
        assert sorted(topic_ids) == sorted(ids)  # once each in the topic's log too
        assert len(readers) == 2  # both routers read the outbox
        assert got == Counter({mid: 1 for mid in ids})
    finally:
        await planner.close()
        await worker.close()
