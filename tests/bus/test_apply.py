"""apply_bus on a real redis-server: idempotence, the report, atomic table writes, prune,
and Redis ACL users that make Redis itself refuse writes outside an agent's topics."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError, ResponseError

from swarm.bus import EventBus
from swarm.bus.apply import agent_redis_url, apply_bus, bus_password, user_rules
from swarm.desired import AclDocument, BusPlan, DesiredState
from swarm.errors import BusError
from swarm.keys import SwarmKeys
from tests.bus.conftest import SECRET, SWARM_DOC, make_desired
from tests.support.services import RedisServer


async def test_first_apply_creates_everything_second_changes_nothing(admin: aioredis.Redis, desired: DesiredState) -> None:
    first = await apply_bus(admin, desired.bus, desired.acl, secret=SECRET)
    assert len(first.created_streams) == 5
    assert "tasks.research/worker-a" in first.created_groups and "tasks.research/watcher" in first.created_groups
    assert first.acl_updated and first.settings_updated
    assert first.created_users == ["swarm-lab-planner", "swarm-lab-watcher", "swarm-lab-worker-a", "swarm-lab-worker-b"]
    second = await apply_bus(admin, desired.bus, desired.acl, secret=SECRET)
    assert not second.changed and second.lines() == []
    assert BusPlan.model_validate_json(await admin.get("swarm:{lab}:bus")) == desired.bus
    assert AclDocument.model_validate_json(await admin.get("swarm:{lab}:acl")) == desired.acl
    groups = await admin.xinfo_groups("swarm:{lab}:topic:tasks.research")
    assert sorted(g["name"] for g in groups) == ["watcher", "worker-a", "worker-b"]
    assert {g["last-delivered-id"] for g in groups} == {"0-0"}


async def test_without_secret_users_are_skipped_and_said(admin: aioredis.Redis, desired: DesiredState) -> None:
    report = await apply_bus(admin, desired.bus, desired.acl)
    assert report.users_skipped and any("SWARM_BUS_SECRET" in line for line in report.lines())
    assert "swarm-lab-planner" not in await admin.acl_users()


async def test_changed_spec_updates_table_and_users_and_prune_removes_the_rest(admin: aioredis.Redis, desired: DesiredState) -> None:
    await apply_bus(admin, desired.bus, desired.acl, secret=SECRET)
    await admin.xadd("swarm:{lab}:dlq:tasks.admin.reset", {"x": "1"})
    doc = {**SWARM_DOC, "topics": [t for t in SWARM_DOC["topics"] if t["name"] != "tasks.admin.reset"]}
    doc["agents"] = [a for a in SWARM_DOC["agents"] if a["id"] != "watcher"]
    doc["roles"] = {**SWARM_DOC["roles"], "worker": {"publish": ["results.research"], "subscribe": ["tasks.*"]}}
    smaller = make_desired(doc)
    kept = await apply_bus(admin, smaller.bus, smaller.acl, secret=SECRET)
    assert kept.acl_updated and kept.settings_updated
    # rights follow the role: both workers lost the right to publish results.summary
    assert kept.updated_users == ["swarm-lab-worker-a", "swarm-lab-worker-b"]
    assert kept.pruned_streams == [] and await admin.exists("swarm:{lab}:topic:tasks.admin.reset")
    pruned = await apply_bus(admin, smaller.bus, smaller.acl, secret=SECRET, prune=True)
    assert pruned.pruned_streams == ["swarm:{lab}:dlq:tasks.admin.reset", "swarm:{lab}:topic:tasks.admin.reset"]
    assert sorted(pruned.pruned_groups) == [
        "results.research/watcher", "results.summary/watcher", "tasks.research/watcher", "tasks.summarize/watcher",
    ]
    assert pruned.pruned_users == ["swarm-lab-watcher"]
    assert not (await apply_bus(admin, smaller.bus, smaller.acl, secret=SECRET, prune=True)).changed


async def test_prune_leaves_another_swarm_with_a_prefix_name_alone(admin: aioredis.Redis, desired: DesiredState) -> None:
    other = make_desired({**SWARM_DOC, "metadata": {"name": "lab-x"}})
    await apply_bus(admin, other.bus, other.acl, secret=SECRET)
    report = await apply_bus(admin, desired.bus, desired.acl, secret=SECRET, prune=True)
    assert report.pruned_users == [] and report.pruned_streams == []
    assert "swarm-lab-x-planner" in await admin.acl_users()


def test_user_rules_give_write_only_to_published_streams() -> None:
    rules = user_rules(SwarmKeys("lab"), "w", ["results.research"], ["tasks.research"], "pw")
    assert "(+xadd %W~swarm:{lab}:topic:results.research)" in rules
    assert not any("+xadd" in r and "topic:tasks.research" in r for r in rules)
    assert rules[:3] == ["reset", "on", ">pw"]
    assert bus_password("s", "lab", "w") != bus_password("s", "lab", "v") == bus_password("s", "lab", "v")


async def test_redis_itself_refuses_writes_outside_the_agents_topics(redis_server: RedisServer, applied: aioredis.Redis) -> None:
    url = agent_redis_url(redis_server.url, "lab", "worker-a", SECRET)
    raw = redis.Redis.from_url(url, decode_responses=True)
    try:
        with pytest.raises(NoPermissionError):  # subscribes to tasks.research, may not publish it
            raw.xadd("swarm:{lab}:topic:tasks.research", {"payload": "{}"})
        with pytest.raises(NoPermissionError):
            raw.xadd("swarm:{lab}:topic:tasks.admin.reset", {"payload": "{}"})
        with pytest.raises(NoPermissionError):  # nor corrupt its own breaker
            raw.hset("swarm:{lab}:breaker:worker-a", "state", "closed")
        with pytest.raises(ResponseError):
            raw.eval("return redis.call('DEL', KEYS[1])", 1, "swarm:{lab}:breaker:worker-a")
        assert raw.xadd("swarm:{lab}:topic:results.research", {"payload": "{}"})
        wrong = redis.Redis.from_url(agent_redis_url(redis_server.url, "lab", "worker-a", "other-secret"))
        with pytest.raises(redis.exceptions.AuthenticationError):
            wrong.ping()
        wrong.close()
    finally:
        raw.close()


async def test_agents_work_through_their_own_redis_users(redis_server: RedisServer, applied: aioredis.Redis) -> None:
    pub_url = agent_redis_url(redis_server.url, "lab", "planner", SECRET)
    sub_url = agent_redis_url(redis_server.url, "lab", "worker-b", SECRET)
    async with EventBus(redis_url=pub_url, swarm="lab", agent_id="planner") as pub, \
            EventBus(redis_url=sub_url, swarm="lab", agent_id="worker-b", visibility_timeout=0.1, max_deliveries=1) as sub:
        r = await pub.publish_many([("tasks.summarize", {"n": 1}, "m1"), ("tasks.summarize", {"n": 1}, "m1")])
        assert [x.duplicate for x in r] == [False, True]
        seen = []
        async for m in sub.subscribe(["tasks.research", "tasks.summarize"]):
            seen.append((m.topic, m.deliveries))
            break  # not acked: dead-lettered on reclaim, with the agent's own rights
        assert seen == [("tasks.summarize", 1)]
        await asyncio.sleep(0.15)
        assert await sub.reclaim(["tasks.summarize"]) == []
        assert sub.stats.dead_lettered == 1


async def test_a_new_table_replaces_the_old_in_one_transaction(redis_server: RedisServer, admin: aioredis.Redis, desired: DesiredState) -> None:
    """acl.json and bus.json go in one MULTI/EXEC, so a reader's MGET never sees one new and one old."""
    await apply_bus(admin, desired.bus, desired.acl)
    smaller = make_desired({**SWARM_DOC, "topics": [t for t in SWARM_DOC["topics"] if t["name"] != "tasks.admin.reset"]})
    watcher = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    seen: list[list[str]] = []  # [command, first argument] as Redis ran them
    try:
        async with watcher.monitor() as monitor:
            task = asyncio.create_task(apply_bus(admin, smaller.bus, smaller.acl))
            while not seen or seen[-1][0] != "EXEC":
                seen.append((await asyncio.wait_for(monitor.next_command(), 5))["command"].split(" ")[:2])
            report = await task
    finally:
        await watcher.aclose()
    assert report.acl_updated and report.settings_updated
    assert seen[-4:] == [["MULTI"], ["SET", "swarm:{lab}:acl"], ["SET", "swarm:{lab}:bus"], ["EXEC"]]
    assert AclDocument.model_validate_json(await admin.get("swarm:{lab}:acl")) == smaller.acl


async def test_a_prune_of_more_than_half_is_refused_unless_forced(admin: aioredis.Redis, desired: DesiredState) -> None:
    await apply_bus(admin, desired.bus, desired.acl, secret=SECRET)
    doc = {**SWARM_DOC, "topics": SWARM_DOC["topics"][:1], "agents": SWARM_DOC["agents"][:1]}
    doc["agents"] = [{**doc["agents"][0], "publishes": ["tasks.research"], "subscribes": []}]
    tiny = make_desired(doc)
    with pytest.raises(BusError, match=r"remove 4 of 5 topic streams .*--force-prune"):
        await apply_bus(admin, tiny.bus, tiny.acl, secret=SECRET, prune=True)
    assert await admin.exists(*(f"swarm:{{lab}}:topic:{t['name']}" for t in SWARM_DOC["topics"])) == 5
    assert AclDocument.model_validate_json(await admin.get("swarm:{lab}:acl")) == desired.acl  # nothing changed
    report = await apply_bus(admin, tiny.bus, tiny.acl, secret=SECRET, prune=True, force_prune=True)
    assert len(report.pruned_streams) == 4 and len(report.pruned_users) == 3
    # users alone: 3 of 4 agents gone is refused too, even when every topic stays
    await apply_bus(admin, desired.bus, desired.acl, secret=SECRET)
    few = make_desired({**SWARM_DOC, "agents": SWARM_DOC["agents"][:1]})
    with pytest.raises(BusError, match=r"remove 3 of 4 agents' Redis users"):
        await apply_bus(admin, few.bus, few.acl, secret=SECRET, prune=True)
