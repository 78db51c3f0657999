"""BusCollector against a real redis-server with the bus applied: lag when Redis cannot give it,
series of an agent removed from the plan disappear, refreshes are at most one per min_interval."""

from __future__ import annotations

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, generate_latest

from swarm.bus.apply import apply_bus
from swarm.bus.metrics import BusCollector
from swarm.keys import SwarmKeys
from tests.bus.conftest import SECRET, SWARM_DOC, make_desired
from tests.support.metrics import Samples, parse

K = SwarmKeys("lab")


def render(collector: BusCollector) -> Samples:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    return parse(generate_latest(registry).decode())


async def test_lag_without_redis_lag_and_removed_agents(applied: aioredis.Redis) -> None:
    collector = BusCollector(applied, "lab", min_interval=0)
    inbox = K.inbox("worker-a")
    ids = [await applied.xadd(inbox, {"payload": f"{n}"}) for n in range(3)]
    await applied.xdel(inbox, ids[1])  # a tombstone after the group's last-delivered id: Redis' lag is nil
    groups = {g["name"]: g for g in await applied.xinfo_groups(inbox)}
    assert groups["worker-a"]["lag"] is None
    await collector.refresh()
    s = render(collector)
    assert s.value("swarm_bus_consumer_lag", agent="worker-a", stream="inbox", group="worker-a") == 2
    await applied.xreadgroup("worker-a", "c", {inbox: ">"}, count=1)
    await collector.refresh()
    s = render(collector)
    assert s.value("swarm_bus_consumer_pending", agent="worker-a", stream="inbox", group="worker-a") == 1
    assert s.value("swarm_bus_consumer_lag", agent="worker-a", stream="inbox", group="worker-a") == 1
    assert s.get_value("swarm_bus_breaker_state", agent="watcher", state="closed") == 1

    doc = {**SWARM_DOC, "agents": [a for a in SWARM_DOC["agents"] if a["id"] != "watcher"]}
    desired = make_desired(doc)
    await apply_bus(applied, desired.bus.model_copy(update={"spec_digest": "sha256:other"}), desired.acl, secret=SECRET)
    await collector.refresh()
    s = render(collector)
    assert s.value("swarm_bus_agents") == 3
    assert s.get_value("swarm_bus_breaker_state", agent="watcher", state="closed") is None  # gone with the spec
    assert not [labels for (name, labels) in s if ("agent", "watcher") in labels]


async def test_one_read_per_min_interval_and_down_when_not_installed(applied: aioredis.Redis) -> None:
    collector = BusCollector(applied, "lab", min_interval=3600)
    first = await collector.refresh()
    await applied.xadd(K.agent_dead_letter("planner"), {"reason": "x"})
    assert await collector.refresh() is first  # within min_interval: the same snapshot, no read
    assert render(collector).get_value("swarm_bus_dead_letters", agent="planner") == 0
    collector.min_interval = 0
    await collector.refresh()
    assert render(collector).value("swarm_bus_dead_lettered_total", agent="planner") == 1
    await applied.delete(K.bus)
    await collector.refresh()
    s = render(collector)
    assert s.get_value("swarm_bus_up") == 0 and s.get_value("swarm_bus_agents") is None
