"""apply_bus on a real redis-server: idempotence, the report, atomic table writes, prune,
and Redis ACL users that make Redis itself refuse everything outside an agent's own keys."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError, ResponseError

from swarm.bus.apply import agent_redis_url, apply_bus, bus_password, user_rules
from swarm.desired import AclDocument, BusPlan, DesiredState
from swarm.errors import BusError
from swarm.keys import SwarmKeys
from tests.bus.conftest import SECRET, SWARM_DOC, make_desired
from tests.support.services import RedisServer


AGENTS = ["planner", "watcher", "worker-a", "worker-b"]


async def test_first_apply_creates_everything_second_changes_nothing(admin: aioredis.Redis, desired: DesiredState) -> None:
    first = await apply_bus(admin, desired.bus, desired.acl, secret=SECRET)
    keys = SwarmKeys("lab")
    assert sorted(first.created_streams) == sorted(
        [keys.topic(t["name"]) for t in SWARM_DOC["topics"]] + [keys.outbox(a) for a in AGENTS]
        + [keys.inbox(a) for a in AGENTS])
    assert sorted(first.created_groups) == sorted(
        [f"{keys.outbox(a)}/router" for a in AGENTS] + [f"{keys.inbox(a)}/{a}" for a in AGENTS])
    assert first.acl_updated and first.settings_updated
    assert first.created_users == ["swarm.lab.planner", "swarm.lab.watcher", "swarm.lab.worker-a", "swarm.lab.worker-b"]
    second = await apply_bus(admin, desired.bus, desired.acl, secret=SECRET)
    assert not second.changed and second.lines() == []
    assert BusPlan.model_validate_json(await admin.get("swarm:{lab}:bus")) == desired.bus
    assert AclDocument.model_validate_json(await admin.get("swarm:{lab}:acl")) == desired.acl
    assert await admin.xinfo_groups(keys.topic("tasks.research")) == []  # topic logs have no groups now
    for agent in AGENTS:
        (outbox,) = await admin.xinfo_groups(keys.outbox(agent))
        (inbox,) = await admin.xinfo_groups(keys.inbox(agent))
        assert (outbox["name"], inbox["name"]) == ("router", agent)
        assert outbox["last-delivered-id"] == inbox["last-delivered-id"] == "0-0"


async def test_without_secret_users_are_skipped_and_said(admin: aioredis.Redis, desired: DesiredState) -> None:
    report = await apply_bus(admin, desired.bus, desired.acl)
    assert report.users_skipped and any("SWARM_BUS_SECRET" in line for line in report.lines())
    assert "swarm.lab.planner" not in await admin.acl_users()


async def test_changed_spec_updates_the_table_and_prune_removes_the_rest(admin: aioredis.Redis, desired: DesiredState) -> None:
    await apply_bus(admin, desired.bus, desired.acl, secret=SECRET)
    await admin.xadd("swarm:{lab}:dlq:tasks.admin.reset", {"x": "1"})
    await admin.xadd("swarm:{lab}:receipts:watcher", {"x": "1"})
    await admin.xgroup_create("swarm:{lab}:topic:tasks.research", "worker-a", id="0")  # the old layout's group
    doc = {**SWARM_DOC, "topics": [t for t in SWARM_DOC["topics"] if t["name"] != "tasks.admin.reset"]}
    doc["agents"] = [a for a in SWARM_DOC["agents"] if a["id"] != "watcher"]
    smaller = make_desired(doc)
    kept = await apply_bus(admin, smaller.bus, smaller.acl, secret=SECRET)
    assert kept.acl_updated and kept.settings_updated
    assert kept.updated_users == []  # rights are the agent's own keys: topics do not change them
    assert kept.pruned_streams == [] and await admin.exists("swarm:{lab}:topic:tasks.admin.reset")
    pruned = await apply_bus(admin, smaller.bus, smaller.acl, secret=SECRET, prune=True)
    assert pruned.pruned_streams == [
        "swarm:{lab}:dlq:tasks.admin.reset", "swarm:{lab}:inbox:watcher", "swarm:{lab}:outbox:watcher",
        "swarm:{lab}:receipts:watcher", "swarm:{lab}:topic:tasks.admin.reset",
    ]
    assert pruned.pruned_groups == ["swarm:{lab}:topic:tasks.research/worker-a"]
    assert pruned.pruned_users == ["swarm.lab.watcher"]
    assert await admin.exists("swarm:{lab}:outbox:planner", "swarm:{lab}:inbox:worker-b") == 2
    assert not (await apply_bus(admin, smaller.bus, smaller.acl, secret=SECRET, prune=True)).changed


async def test_prune_leaves_another_swarm_with_a_prefix_name_alone(admin: aioredis.Redis, desired: DesiredState) -> None:
    other = make_desired({**SWARM_DOC, "metadata": {"name": "lab-x"}})
    await apply_bus(admin, other.bus, other.acl, secret=SECRET)
    report = await apply_bus(admin, desired.bus, desired.acl, secret=SECRET, prune=True)
    assert report.pruned_users == [] and report.pruned_streams == []
    assert "swarm.lab-x.planner" in await admin.acl_users()


async def test_a_user_of_another_owner_is_never_overwritten_nor_pruned(admin: aioredis.Redis, desired: DesiredState) -> None:
    """A user named like one of ours whose keys are not all in this swarm belongs to someone else."""
    await admin.execute_command("ACL", "SETUSER", "swarm.lab.planner", "on", ">theirs", "+@all", "~*")
    await admin.execute_command("ACL", "SETUSER", "swarm.lab.ghost", "on", ">theirs", "+get", "~other:*")
    before = await admin.acl_getuser("swarm.lab.planner")
    with pytest.raises(BusError, match=r"swarm\.lab\.planner.*refusing to overwrite"):
        await apply_bus(admin, desired.bus, desired.acl, secret=SECRET)
    assert await admin.acl_getuser("swarm.lab.planner") == before
    assert await admin.get("swarm:{lab}:bus") is None  # refused before anything changed
    await admin.acl_deluser("swarm.lab.planner")
    report = await apply_bus(admin, desired.bus, desired.acl, secret=SECRET, prune=True, force_prune=True)
    assert "swarm.lab.ghost" in await admin.acl_users() and report.pruned_users == []


def test_user_rules_are_exactly_the_agents_own_keys() -> None:
    keys = SwarmKeys("lab")
    rules = user_rules(keys, "w", ["results.research"], ["tasks.research"], "pw")
    assert rules == [
        "reset", "on", ">pw", "+ping", "+multi", "+exec", "+discard",
        "(+xadd %W~swarm:{lab}:outbox:w %W~swarm:{lab}:dlq:@w)",
        "(+xreadgroup +xack +xdel +xautoclaim +xpending ~swarm:{lab}:inbox:w)",
        "(+xread +xrange +xrevrange %R~swarm:{lab}:receipts:w)",
        "(+hget +hmget +hgetall %R~swarm:{lab}:breaker:w)",
        "(+get +mget +getrange %R~swarm:{lab}:acl %R~swarm:{lab}:bus)",
    ]
    assert not any(word in " ".join(rules) for word in ("eval", "script", "function", "fcall", "topic:", "dedup"))
    assert bus_password("s", "lab", "w") != bus_password("s", "lab", "v") == bus_password("s", "lab", "v")


async def test_redis_itself_refuses_everything_outside_the_agents_own_keys(
    redis_server: RedisServer, applied: aioredis.Redis
) -> None:
    url = agent_redis_url(redis_server.url, "lab", "worker-a", SECRET)
    raw = redis.Redis.from_url(url, decode_responses=True)
    keys = SwarmKeys("lab")
    denied: list[tuple[Any, ...]] = [
        ("XADD", keys.topic("results.research"), "*", "payload", "{}"),  # even a topic it may publish
        ("XADD", keys.outbox("worker-b"), "*", "topic", "results.summary"),
        ("XADD", keys.inbox("worker-b"), "*", "payload", "{}"),
        ("XADD", keys.agent_dead_letter("worker-b"), "*", "x", "1"),
        ("XREADGROUP", "GROUP", "worker-b", "c", "STREAMS", keys.inbox("worker-b"), ">"),
        ("XREADGROUP", "GROUP", "router", "c", "STREAMS", keys.outbox("worker-a"), ">"),  # its own outbox's router group
        ("XACK", keys.outbox("worker-a"), "router", "0-1"),
        ("XTRIM", keys.outbox("worker-a"), "MAXLEN", "0"),
        ("XDEL", keys.inbox("worker-b"), "0-1"),  # its own inbox yes (ack deletes), another's no
        ("XDEL", keys.outbox("worker-a"), "0-1"),
        ("XGROUP", "CREATE", keys.inbox("worker-a"), "mine", "0"),
        ("XSETID", keys.inbox("worker-a"), "0-1"),
        ("DEL", keys.inbox("worker-a")),
        ("XRANGE", keys.topic("tasks.research"), "-", "+"),
        ("XRANGE", keys.outbox("worker-a"), "-", "+"),
        ("XREAD", "STREAMS", keys.receipts("worker-b"), "0"),
        ("SET", keys.dedup("tasks.research", "planner", "future"), "1-0"),
        ("HSET", keys.breaker("worker-a"), "state", "closed"),
        ("HGETALL", keys.breaker("worker-b")),
        ("SET", keys.bus, "{}"),
        ("GET", keys.catalog),
        ("EVAL", "return 1", "0"),
        ("EVALSHA", "a" * 40, "0"),
        ("SCRIPT", "LOAD", "return 1"),
        ("FCALL", "f", "0"),
        ("FUNCTION", "LIST"),
        ("KEYS", "*"),
        ("ACL", "LIST"),
    ]
    try:
        for command in denied:
            with pytest.raises(NoPermissionError):
                raw.execute_command(*command)
        assert raw.execute_command("XADD", keys.outbox("worker-a"), "*", "topic", "results.research", "payload", "{}")
        assert raw.execute_command("XADD", keys.agent_dead_letter("worker-a"), "*", "x", "1")
        assert raw.xreadgroup("worker-a", "c", {keys.inbox("worker-a"): ">"}) == []
        assert raw.xpending(keys.inbox("worker-a"), "worker-a")["pending"] == 0
        assert raw.xdel(keys.inbox("worker-a"), "0-1") == 0  # an ack deletes its own delivery
        assert raw.xautoclaim(keys.inbox("worker-a"), "worker-a", "c", 0)[0] == "0-0"
        assert raw.xrange(keys.receipts("worker-a")) == [] and raw.xrevrange(keys.receipts("worker-a")) == []
        assert raw.hgetall(keys.breaker("worker-a")) == {}
        assert raw.get(keys.bus) is not None and raw.getrange(keys.acl, 0, 0) == "{"
        wrong = redis.Redis.from_url(agent_redis_url(redis_server.url, "lab", "worker-a", "other-secret"))
        with pytest.raises(redis.exceptions.AuthenticationError):
            wrong.ping()
        wrong.close()
    finally:
        raw.close()


async def test_agents_work_end_to_end_through_their_own_redis_users(redis_server: RedisServer, applied: aioredis.Redis) -> None:
    """Plain Redis commands with the agents' own users, and the router in between."""
    from swarm.bus.router import Router

    keys = SwarmKeys("lab")
    planner = redis.Redis.from_url(agent_redis_url(redis_server.url, "lab", "planner", SECRET), decode_responses=True)
    worker = redis.Redis.from_url(agent_redis_url(redis_server.url, "lab", "worker-b", SECRET), decode_responses=True)
    try:
        oid = planner.xadd(keys.outbox("planner"), {"topic": "tasks.summarize", "payload": '{"n": 1}', "message_id": "m1"})
        async with Router(redis_url=redis_server.url, swarm="lab", block_ms=20) as router:
            assert await router.route_batch() == 1
        (_, receipt), = planner.xrange(keys.receipts("planner"))
        assert receipt["outbox_id"] == oid and receipt["status"] == "routed"
        (_, entries), = worker.xreadgroup("worker-b", "w1", {keys.inbox("worker-b"): ">"})
        (eid, fields), = entries
        assert (fields["sender"], fields["message_id"], fields["payload"]) == ("planner", "m1", '{"n": 1}')
        assert worker.xack(keys.inbox("worker-b"), "worker-b", eid) == 1
    finally:
        planner.close()
        worker.close()


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
    assert len([s for s in report.pruned_streams if ":topic:" in s]) == 4 and len(report.pruned_users) == 3
    assert len([s for s in report.pruned_streams if ":outbox:" in s or ":inbox:" in s]) == 6  # 3 agents gone
    # users alone: 3 of 4 agents gone is refused too, even when every topic stays
    await apply_bus(admin, desired.bus, desired.acl, secret=SECRET)
    few = make_desired({**SWARM_DOC, "agents": SWARM_DOC["agents"][:1]})
    with pytest.raises(BusError, match=r"remove 3 of 4 agents' Redis users"):
        await apply_bus(admin, few.bus, few.acl, secret=SECRET, prune=True)
