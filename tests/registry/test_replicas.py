"""Three registry replicas on one swarm (one Redis): every watcher of every replica sees
every event once, and each expiry is evicted by exactly one replica's sweeper.
Real redis-server and three real uvicorn registries."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.registry.conftest import RegistryFactory, SSEEvent, SSEReader, make_catalog
from tests.support.services import RedisServer

pytestmark = pytest.mark.slow

AGENTS = [f"agent-{n}" for n in range(8)]


async def _collect(http: httpx.AsyncClient, url: str, until_expired: set[str], out: list[SSEEvent],
                   ready: asyncio.Event) -> None:
    async with http.stream("GET", url + "/agents/watch") as resp:
        assert resp.status_code == 200
        sse = SSEReader(resp)
        ready.set()
        expired: set[str] = set()
        while expired != until_expired:
            event = await sse.next_event(timeout=30)
            out.append(event)
            if event.event == "expired":
                expired.add(str(event.json()["agent_id"]))  # type: ignore[index]


async def test_three_replicas_every_watcher_sees_each_event_once_and_each_expiry_happens_once(
    registry_factory: RegistryFactory, redis_server: RedisServer
) -> None:
    # 8 agents, under the mass-eviction guard's minimum (10): nothing holds these expiries back
    replicas = [registry_factory(redis_server, extra_args=["--no-probe", "--sweep-interval", "0.1"])
                for _ in range(3)]
    replicas[0].push(make_catalog(AGENTS, ttl_seconds=2))
    seen: list[list[SSEEvent]] = [[], [], []]
    async with httpx.AsyncClient(headers=replicas[0].read_headers(), timeout=30) as http:
        ready = [asyncio.Event() for _ in replicas]
        watchers = [asyncio.create_task(_collect(http, r.url, set(AGENTS), seen[i], ready[i]))
                    for i, r in enumerate(replicas)]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ready)), 10)
        for n, agent in enumerate(AGENTS):  # registrations spread over the replicas
            reg = replicas[n % 3]
            r = await http.post(reg.url + "/agents/register", json={"agent_id": agent},
                                headers=reg.agent_headers(agent))
            assert r.status_code == 201, r.text
        await asyncio.wait_for(asyncio.gather(*watchers), 60)  # no heartbeats: all expire

    client: Any = redis_server.client(decode_responses=True)
    try:
        stream = client.xrange("swarm:{research}:events")
    finally:
        client.close()
    expired = Counter(f["agent"] for _, f in stream if f["type"] == "expired")
    assert expired == Counter({a: 1 for a in AGENTS}), "each expiry evicted by exactly one sweeper"
    wanted = [(i, f["type"]) for i, f in stream if f["type"] in ("registered", "expired")]
    for events in seen:
        ids = [e.id for e in events]
        assert len(ids) == len(set(ids)), "no event twice"
        assert [(e.id, e.event) for e in events if e.event in ("registered", "expired")] == wanted
