"""RegistryStore's Lua scripts against a real redis-server: atomicity and events."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import pytest
import redis.asyncio as aioredis

from swarm.errors import RedisUnavailableError
from swarm.registry.admission import resolve_registration
from swarm.registry.models import RegisterRequest
from swarm.registry.store import FieldConflictError, RegistryStore, parse_stream_id
from tests.registry.conftest import make_catalog
from tests.support.services import RedisServer

CATALOG = make_catalog([f"a{i}" for i in range(8)])


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_server.url)
    yield c
    await c.aclose()


def fields(agent_id: str, **body: object):  # type: ignore[no-untyped-def]
    return resolve_registration(RegisterRequest(agent_id=agent_id, **body), CATALOG)  # type: ignore[arg-type]


async def event_types(client: aioredis.Redis) -> list[str]:
    return [f[b"type"].decode() for _, f in await client.xrange("swarm:{research}:events")]


async def expire(client: aioredis.Redis, ids: list[str]) -> None:
    seconds, micros = await client.time()
    await client.zadd("swarm:{research}:leases", {i: seconds * 1000 + micros // 1000 - 1000 for i in ids})


async def test_every_change_has_exactly_one_event(client: aioredis.Redis) -> None:
    store = RegistryStore(client, "research")
    assert (await store.register(fields("a0"), CATALOG)).kind == "registered"
    assert (await store.register(fields("a0"), CATALOG)).kind == "same"
    assert (await store.register(fields("a0", host="h"), CATALOG)).kind == "updated"
    assert await store.heartbeat("a0") is not None
    assert await store.deregister("a0") is not None
    assert await store.deregister("a0") is None
    assert await event_types(client) == ["registered", "updated", "deregistered"]
    assert await store.heartbeat("a0") is None


async def test_concurrent_conflicting_registrations_one_wins(client: aioredis.Redis) -> None:
    store = RegistryStore(client, "research")
    variants = [fields("a1", capabilities=["research"]), fields("a1", capabilities=[])] * 5
    results = await asyncio.gather(*(store.register(f, CATALOG) for f in variants), return_exceptions=True)
    wins = [r for r in results if not isinstance(r, BaseException)]
    conflicts = [r for r in results if isinstance(r, FieldConflictError)]
    assert len(wins) == 5 and len(conflicts) == 5
    assert {tuple(w.registration.capabilities) for w in wins} == {tuple(wins[0].registration.capabilities)}
    assert all(c.fields == ["capabilities"] for c in conflicts)
    assert await event_types(client) == ["registered"]


async def test_concurrent_sweeps_evict_each_lease_once(redis_server: RedisServer, client: aioredis.Redis) -> None:
    other = aioredis.Redis.from_url(redis_server.url)
    one, two = RegistryStore(client, "research"), RegistryStore(other, "research")
    ids = [f"a{i}" for i in range(6)]
    for agent_id in ids:
        await one.register(fields(agent_id), CATALOG)
    await expire(client, ids[:4])
    outcomes = await asyncio.gather(*(s.sweep(min_protect=10, ratio=0.5) for s in (one, two, one, two)))
    assert sum(o.evicted for o in outcomes) == 4
    assert (await event_types(client)).count("expired") == 4
    assert sorted(r.agent_id for r in await one.list(CATALOG)) == ids[4:]
    await other.aclose()


async def test_heartbeat_renews_an_expired_but_kept_lease(client: aioredis.Redis) -> None:
    store = RegistryStore(client, "research")
    await store.register(fields("a2"), CATALOG)
    await expire(client, ["a2"])
    assert (await store.get("a2", CATALOG)).status == "expiring"  # type: ignore[union-attr]
    renewed = await store.heartbeat("a2")
    assert renewed is not None
    assert (await store.get("a2", CATALOG)).status == "healthy"  # type: ignore[union-attr]


async def test_protection_sets_key_and_evicts_none(client: aioredis.Redis) -> None:
    store = RegistryStore(client, "research")
    ids = [f"a{i}" for i in range(8)]
    for agent_id in ids:
        await store.register(fields(agent_id), CATALOG)
    await expire(client, ids[:5])
    outcome = await store.sweep(min_protect=4, ratio=0.5)
    assert outcome.protected and outcome.evicted == 0 and outcome.expired_seen == 5
    assert await store.protection() is True
    assert await store.sweep(min_protect=6, ratio=0.5)  # leaves protection: grace, not eviction
    assert await store.protection() is False
    assert len(await store.list(CATALOG)) == 8
    assert "expired" not in await event_types(client)


@pytest.mark.parametrize(
    ("live", "expired", "protected"),
    [(20, 10, False), (20, 11, True), (10, 9, False), (10, 10, True)],
    ids=["exactly-half", "more-than-half", "fewer-than-10", "10-of-10"],
)
async def test_guard_needs_at_least_10_and_more_than_half(
    client: aioredis.Redis, live: int, expired: int, protected: bool
) -> None:
    ids = [f"g{i:02d}" for i in range(live)]
    catalog = make_catalog(ids)
    store = RegistryStore(client, "research")
    for agent_id in ids:
        await store.register(resolve_registration(RegisterRequest(agent_id=agent_id), catalog), catalog)
    await expire(client, ids[:expired])
    outcome = await store.sweep(min_protect=10, ratio=0.5)  # the registry's defaults
    assert outcome.protected is protected
    assert outcome.evicted == (0 if protected else expired)
    assert len(await store.list(catalog)) == (live if protected else live - expired)


async def test_grace_extends_every_lease_to_a_full_ttl(client: aioredis.Redis) -> None:
    store = RegistryStore(client, "research")
    await store.register(fields("a3", ttl_seconds=20), CATALOG)
    await store.register(fields("a4"), CATALOG)
    await expire(client, ["a3"])
    assert await store.grace() >= 1
    reg = await store.get("a3", CATALOG)
    seconds, _ = await client.time()
    assert reg is not None and reg.lease_expires_at >= seconds * 1000 + 19_000


async def test_snapshot_and_trim_detection(client: aioredis.Redis) -> None:
    store = RegistryStore(client, "research", events_maxlen=1)
    assert await store.trimmed_past("0-0") is False  # no stream yet
    assert await store.trimmed_past("5-0") is True  # an id of a stream that is gone (Redis lost its data)
    first = await store.register(fields("a5"), CATALOG)
    assert first.event_id is not None
    assert await store.trimmed_past(first.event_id) is False
    ms, _, seq = first.event_id.partition("-")
    assert await store.trimmed_past(f"{ms}-{int(seq) + 1}") is True  # never produced by this stream
    assert await store.trimmed_past(f"{int(ms) - 1}-0") is True  # before this stream's first event
    assert await store.trimmed_past("0-0") is False  # "from the start" is always valid
    for _ in range(200):
        await client.xadd("swarm:{research}:events", {"type": "noise"}, maxlen=1, approximate=False)
    assert await store.trimmed_past(first.event_id) is True
    snap = await store.snapshot(CATALOG)
    assert [a.agent_id for a in snap.agents] == ["a5"]
    assert snap.last_id == await store.last_event_id()
    assert await store.events_after(snap.last_id) == []


async def test_snapshot_declares_its_keys_and_includes_an_agent_registered_meanwhile(
    client: aioredis.Redis,
) -> None:
    store = RegistryStore(client, "research")
    await store.register(fields("a1"), CATALOG)
    script = store._snapshot
    seen_keys: list[list[str]] = []

    async def racing(keys: list[str], args: list[str]) -> object:
        seen_keys.append(list(keys))
        if len(seen_keys) == 1:  # a registration lands between reading the ids and the script
            await RegistryStore(client, "research").register(fields("a2"), CATALOG)
        return await script(keys=keys, args=args)

    store._snapshot = racing  # type: ignore[assignment]
    snap = await store.snapshot(CATALOG)
    assert [a.agent_id for a in snap.agents] == ["a1", "a2"]
    assert snap.last_id == await store.last_event_id()  # a2's event is inside the snapshot
    assert len(seen_keys) == 2
    # every agent key the script reads is declared in KEYS (restricted ACL users and Redis Cluster need that)
    assert seen_keys[-1][2:] == ["swarm:{research}:agent:a1", "swarm:{research}:agent:a2"]


def test_parse_stream_id() -> None:
    assert parse_stream_id("12-3") == "12-3"
    assert parse_stream_id("12") == "12-0"
    assert parse_stream_id("x-1") is None
    assert parse_stream_id("-1-2") is None


async def test_redis_errors_are_wrapped(redis_server: RedisServer, client: aioredis.Redis) -> None:
    store = RegistryStore(client, "research")
    redis_server.stop()
    with pytest.raises(RedisUnavailableError) as info:
        await store.heartbeat("a0")
    assert "heartbeat" in str(info.value)
    assert await store.ping() is False


async def test_catalog_cache_follows_every_push(redis_server: RedisServer, client: aioredis.Redis) -> None:
    other = aioredis.Redis.from_url(redis_server.url)
    reader, writer = RegistryStore(client, "research"), RegistryStore(other, "research")
    assert await reader.get_catalog() is None
    first = await writer.put_catalog(CATALOG, "r1", "d" * 64)
    assert first.changed
    assert (await reader.get_catalog()).revision == "r1"  # type: ignore[union-attr]
    assert not (await writer.put_catalog(CATALOG, "r2", "d" * 64)).changed  # same digest: no event
    assert (await reader.get_catalog()).revision == "r2"  # type: ignore[union-attr]  # another process pushed
    smaller = make_catalog(["a0"])
    assert (await writer.put_catalog(smaller, "r3", "e" * 64)).changed
    state = await reader.get_catalog()
    assert state is not None and list(state.catalog.agents) == ["a0"] and state.digest == "e" * 64
    assert (await event_types(client)).count("catalog-changed") == 2
    await other.aclose()
