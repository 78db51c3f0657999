"""Leases: TTL eviction, the mass-eviction guard, grace after restarts, several processes.

Expiry is simulated where timing would make a test slow or flaky: the test moves
leases into the past on the Redis clock (one ZADD), exactly as if the agents had
stopped heartbeating long ago.
"""

from __future__ import annotations

import pytest
from typing import Any

import httpx
import redis
import redis.asyncio as aioredis

from swarm.registry.metrics import RegistryMetrics
from swarm.registry.store import RegistryStore
from swarm.registry.sweeper import LeaseSweeper
from tests.registry.conftest import RegistryFactory, RegistryProcess, make_catalog
from tests.support.services import RedisServer
from tests.support.wait import wait_until

LEASES = "swarm:{research}:leases"
EVENTS = "swarm:{research}:events"
FAST = ["--sweep-interval", "0.1"]


def expire(r: redis.Redis, ids: list[str]) -> None:
    """Put the leases of ``ids`` one second in the past (Redis clock)."""
    seconds, micros = r.time()
    past = seconds * 1000 + micros // 1000 - 1000
    r.zadd(LEASES, {i: past for i in ids})


def events_of(r: redis.Redis, kind: str) -> list[str]:
    return [f[b"agent"].decode() for _, f in r.xrange(EVENTS) if f[b"type"] == kind.encode()]


def ids_of(reg: RegistryProcess) -> list[str]:
    return [a["agent_id"] for a in reg.get("/agents").json()["agents"]]


def test_expired_lease_is_evicted_with_one_event(registry_factory: RegistryFactory) -> None:
    reg = registry_factory(extra_args=FAST)
    reg.push(make_catalog(["alpha", "beta"], ttl_seconds=1))
    assert reg.register("alpha").status_code == 201
    assert reg.register("beta").status_code == 201
    wait_until(lambda: ids_of(reg) == [], timeout=10, what="eviction after the 1 s TTL")
    r = reg.redis.client()
    assert sorted(events_of(r, "expired")) == ["alpha", "beta"]
    r.close()
    assert "swarm_registry_evictions_total 2.0" in reg.get("/metrics").text
    hb = httpx.post(reg.url + "/agents/alpha/heartbeat", headers=reg.agent_headers("alpha"))
    assert hb.status_code == 404


def test_mass_eviction_protection_holds_then_ends_with_renewals(registry_factory: RegistryFactory) -> None:
    ids = [f"agent-{i:02d}" for i in range(12)]
    reg = registry_factory(extra_args=FAST)
    reg.push(make_catalog(ids, ttl_seconds=30))
    for agent_id in ids:
        assert reg.register(agent_id).status_code == 201
    r = reg.redis.client()
    expire(r, ids)
    wait_until(lambda: reg.get("/status").json()["protection"], what="protection mode", timeout=10)
    status = reg.get("/status").json()
    assert status["last_sweep"]["protected"] is True
    assert status["agents"]["expiring"] == 12
    assert len(ids_of(reg)) == 12  # none evicted
    assert events_of(r, "expired") == []
    assert "swarm_registry_protection_mode 1.0" in reg.get("/metrics").text
    assert reg.get("/health").json()["protection"] is True
    # renewals return: heartbeats renew even the expired-but-kept leases
    for agent_id in ids:
        hb = httpx.post(reg.url + f"/agents/{agent_id}/heartbeat", headers=reg.agent_headers(agent_id))
        assert hb.status_code == 200
    wait_until(lambda: not reg.get("/status").json()["protection"], what="protection to end", timeout=10)
    assert "swarm_registry_protection_mode 0.0" in reg.get("/metrics").text
    # a few expiries (below the guard) are evicted normally
    expire(r, ids[:3])
    wait_until(lambda: len(ids_of(reg)) == 9, what="normal eviction of 3", timeout=10)
    assert sorted(events_of(r, "expired")) == ids[:3]
    assert not r.exists("swarm:{research}:protection")
    r.close()


@pytest.mark.slow  # moved out of the quick suite (CI time budget)
def test_leases_get_one_ttl_of_grace_after_registry_restart(registry_factory: RegistryFactory) -> None:
    reg = registry_factory(extra_args=FAST)
    reg.push(make_catalog(["alpha", "beta", "gamma"], ttl_seconds=30))
    for agent_id in ("alpha", "beta", "gamma"):
        reg.register(agent_id)
    reg.stop()
    r = reg.redis.client()
    expire(r, ["alpha", "beta", "gamma"])  # they "expired" while the registry was away
    reg.start()
    wait_until(lambda: reg.get("/status").json()["last_sweep"], what="a sweep", timeout=10)
    agents = reg.get("/agents").json()["agents"]
    assert [a["agent_id"] for a in agents] == ["alpha", "beta", "gamma"]
    seconds, _ = r.time()
    assert all(a["lease_expires_at"] >= seconds * 1000 + 25_000 for a in agents)
    assert all(a["status"] == "healthy" for a in agents)
    assert events_of(r, "expired") == []
    r.close()


@pytest.mark.slow  # moved out of the quick suite (CI time budget)
def test_two_registry_processes_evict_each_agent_once(registry_factory: RegistryFactory,
                                                       redis_server: RedisServer) -> None:
    ids = ["a1", "a2", "a3", "a4"]
    one = registry_factory(redis_server, extra_args=FAST)
    two = registry_factory(redis_server, extra_args=FAST)
    one.push(make_catalog(ids, ttl_seconds=30))
    for n, agent_id in enumerate(ids):
        assert (one if n % 2 else two).register(agent_id).status_code == 201
    r = redis_server.client()
    for agent_id in ids:  # one at a time, so the guard never triggers
        expire(r, [agent_id])
        wait_until(lambda: agent_id not in ids_of(two), what=f"eviction of {agent_id}", timeout=10)
    expired = events_of(r, "expired")
    assert sorted(expired) == sorted(ids)  # each exactly once
    total = 0.0
    for reg in (one, two):
        for line in reg.get("/metrics").text.splitlines():
            if line.startswith("swarm_registry_evictions_total "):
                total += float(line.split()[1])
    assert total == len(ids)
    r.close()


async def test_sweeper_grants_grace_when_redis_restarts(redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    store = RegistryStore(client, "research")
    await store.put_catalog(make_catalog(["alpha", "beta"]), "r", "d")
    sweeper = LeaseSweeper(store, RegistryMetrics(), interval=0.1, ttl_seconds=_none)
    from swarm.registry.admission import resolve_registration
    from swarm.registry.models import RegisterRequest

    catalog = make_catalog(["alpha", "beta"])
    for agent_id in ("alpha", "beta"):
        await store.register(resolve_registration(RegisterRequest(agent_id=agent_id), catalog), catalog)
    assert (await sweeper.tick()) is not None and sweeper.graces == 1  # start: grace first
    sync = redis_server.client()
    expire(sync, ["alpha"])
    info = await sweeper.tick()
    assert info is not None and info.evicted == 1 and sweeper.graces == 1  # same Redis: no grace
    expire(sync, ["beta"])
    sync.close()
    redis_server.restart()  # append-only: data survives, run_id changes
    info = await _tick_until_swept(sweeper)
    assert sweeper.graces == 2
    assert info is not None and info.evicted == 0
    assert [a.agent_id for a in await store.list(catalog)] == ["beta"]
    redis_server.stop()
    assert await sweeper.tick() is None  # unreachable: skipped, grace owed on return
    redis_server.start()
    await _tick_until_swept(sweeper)
    assert sweeper.graces == 3
    await client.aclose()


async def _none() -> float | None:
    return None


async def _tick_until_swept(sweeper: LeaseSweeper) -> Any:
    """The first command on a pooled connection to a restarted Redis may fail: tick again."""
    for _ in range(5):
        info = await sweeper.tick()
        if info is not None:
            return info
    raise AssertionError("no sweep succeeded")


async def test_short_outage_grants_no_grace_so_flaps_do_not_keep_dead_agents(redis_server: RedisServer) -> None:
    """After a failed sweep against the same Redis, only leases the outage may have hurt
    (outage > TTL - 2 heartbeat intervals) get grace; a start or a Redis restart still
    gives every lease grace."""
    from swarm.errors import RedisUnavailableError
    from swarm.registry.admission import resolve_registration
    from swarm.registry.models import RegisterRequest

    client = aioredis.Redis.from_url(redis_server.url)
    store = RegistryStore(client, "research")
    catalog = make_catalog(["alpha", "beta"], ttl_seconds=30)
    await store.put_catalog(catalog, "r", "d")
    sweeper = LeaseSweeper(store, RegistryMetrics(), interval=0.1, ttl_seconds=_none)
    for agent_id in ("alpha", "beta"):
        await store.register(resolve_registration(RegisterRequest(agent_id=agent_id), catalog), catalog)
    assert await sweeper.tick() is not None and sweeper.graces == 1  # start: grace for all

    real_sweep = store.sweep

    async def failing_sweep(**kw: Any) -> Any:
        raise RedisUnavailableError("flaky link")

    store.sweep = failing_sweep  # type: ignore[method-assign]
    assert await sweeper.tick() is None  # a transient failure
    store.sweep = real_sweep  # type: ignore[method-assign]
    sync = redis_server.client()
    expire(sync, ["alpha"])  # alpha died: its lease ran out
    info = await sweeper.tick()  # a short outage (< 30 s - 2 x 10 s): no lease was hurt by it
    assert info is not None and info.evicted == 1
    assert events_of(sync, "expired") == ["alpha"]

    store.sweep = failing_sweep  # type: ignore[method-assign]
    assert await sweeper.tick() is None
    store.sweep = real_sweep  # type: ignore[method-assign]
    expire(sync, ["beta"])
    assert sweeper._last_ok is not None
    sweeper._last_ok -= 15  # an outage of 15 s: beta may have missed its renewals
    info = await sweeper.tick()
    assert info is not None and info.evicted == 0
    assert [a.agent_id for a in await store.list(catalog)] == ["beta"]
    sync.close()
    await client.aclose()
