"""GET /agents streamed a batch at a time: the same JSON as the whole listing (real registry, real Redis).

2,500 agents (five batches of the server's 500) registered through the store on
the registry's own redis-server; the body must equal, byte for byte, what
``AgentList(...).model_dump_json()`` of the store's whole listing gives, with
and without filters, and private metadata must stay hidden in every batch.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from redis import asyncio as aioredis

from swarm.registry.admission import resolve_registration
from swarm.registry.models import AgentList, RegisterRequest
from swarm.registry.store import RegistryStore
from tests.registry.conftest import RegistryFactory, make_catalog
from tests.support.services import RedisServer

N = 2500


def _register_all(redis_server: RedisServer, catalog: Any) -> None:
    async def run() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        store = RegistryStore(client, "research")
        try:
            for n, agent_id in enumerate(sorted(catalog.agents)):
                meta = {"secret_note": f"s{n}", "zone": f"z{n % 3}"}
                req = RegisterRequest(agent_id=agent_id, metadata=meta,
                                      capabilities=["research", f"c{n % 4}"] if n % 2 else None)
                await store.register(resolve_registration(req, catalog), catalog)
        finally:
            await client.aclose()

    asyncio.run(run())


def _whole_listing(redis_server: RedisServer, catalog: Any) -> list[Any]:
    async def run() -> list[Any]:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            return await RegistryStore(client, "research").list(catalog)
        finally:
            await client.aclose()

    return asyncio.run(run())


def test_get_agents_streams_every_agent_with_the_same_json(
    registry_factory: RegistryFactory, redis_server: RedisServer
) -> None:
    reg = registry_factory(redis_server)
    ids = [f"agent-{i:04d}" for i in range(N)]
    base = make_catalog(ids, ttl_seconds=600, capabilities=("research", "c0", "c1", "c2", "c3"))
    catalog = base.model_copy(update={"settings": base.settings.model_copy(update={"private_metadata": ["secret_note"]})})
    reg.push(catalog)
    _register_all(redis_server, catalog)

    r = reg.get("/agents")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["count"] == N and [a["agent_id"] for a in body["agents"]] == ids
    assert all("secret_note" not in a["metadata"] and "zone" in a["metadata"] for a in body["agents"])

    whole = _whole_listing(redis_server, catalog)
    redacted = [a.model_copy(update={"metadata": {k: v for k, v in a.metadata.items() if k != "secret_note"}})
                for a in whole]
    # byte for byte what the non-streaming handler sent (timestamps do not move: no heartbeats)
    assert r.content == AgentList(agents=redacted, count=N).model_dump_json().encode()

    some = reg.get("/agents", params={"capability": "c1"})
    want = [a for a in redacted if "c1" in a.capabilities]
    assert 0 < len(want) < N
    assert some.content == AgentList(agents=want, count=len(want)).model_dump_json().encode()

    none = reg.get("/agents", params={"role": "nobody"})
    assert none.status_code == 200 and none.content == b'{"agents":[],"count":0}'

    admin = reg.get("/agents", headers=reg.admin_headers())  # the admin sees private metadata
    assert json.loads(admin.content)["agents"][7]["metadata"]["secret_note"] == "s7"
