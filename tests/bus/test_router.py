"""The trusted router against real redis-servers: routing to every subscriber's inbox, every
refusal reason with its receipt, poison entries that never stop the good ones, dedup,
reclaim of a dead replica's entries, two router processes sharing the group, and a router
SIGKILLed mid-batch and restarted (nothing lost, nothing delivered twice per id), and a
property test: any mix of good, duplicate and poison entries in any batch size.

Agents are played with raw XADDs to their outboxes: that is the agent contract."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections import Counter
from typing import Any, AsyncIterator

import pytest
from redis.exceptions import ResponseError
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.bus.apply import apply_bus
from swarm.bus.router import Router
from swarm.bus.routing import REASONS
from swarm.desired import DesiredState
from swarm.keys import SwarmKeys
from tests.bus.conftest import SECRET, SWARM_DOC, make_desired
from tests.support.router import RouterFactory, router_factory  # noqa: F401  (fixture)
from tests.support.services import RedisServer
from tests.support.wait import await_until

K = SwarmKeys("lab")
SUBSCRIBERS = {"tasks.research": ["watcher", "worker-a", "worker-b"], "tasks.summarize": ["watcher", "worker-b"]}


@pytest.fixture
async def raw(redis_server: RedisServer, applied: aioredis.Redis) -> AsyncIterator[aioredis.Redis]:
    """A bytes client (entries may hold anything) on Redis with the bus applied."""
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def router(redis_server: RedisServer, applied: aioredis.Redis) -> AsyncIterator[Router]:
    r = Router(redis_url=redis_server.url, swarm="lab", block_ms=20, reclaim_idle_ms=200, refresh_seconds=0.05)
    await r.connect()
    yield r
    await r.close()


async def drain(router: Router, *, idle_rounds: int = 2) -> int:
    """Route until ``idle_rounds`` batches in a row find nothing; entries handled."""
    total, idle = 0, 0
    while idle < idle_rounds:
        n = await router.route_batch()
        total += n
        idle = 0 if n else idle + 1
    return total


async def inbox(admin: aioredis.Redis, agent: str) -> list[dict[str, str]]:
    return [fields for _, fields in await admin.xrange(K.inbox(agent))]


async def receipts(admin: aioredis.Redis, agent: str) -> list[dict[str, str]]:
    return [fields for _, fields in await admin.xrange(K.receipts(agent))]


async def publish(raw: aioredis.Redis, agent: str, topic: str, payload: Any, message_id: str | None = None) -> str:
    fields: dict[Any, Any] = {"topic": topic, "payload": json.dumps(payload)}
    if message_id is not None:
        fields["message_id"] = message_id
    return (await raw.xadd(K.outbox(agent), fields)).decode()


async def test_an_entry_reaches_every_subscriber_inbox_the_topic_log_and_a_receipt(
    raw: aioredis.Redis, router: Router, admin: aioredis.Redis
) -> None:
    oid = await publish(raw, "planner", "tasks.research", {"q": "é"}, "m1")
    assert await drain(router) == 1
    log = await admin.xrange(K.topic("tasks.research"))
    assert len(log) == 1
    topic_id, entry = log[0]
    assert entry == {"message_id": "m1", "sender": "planner", "payload": '{"q": "\\u00e9"}', "content_type": "application/json"}
    for agent in ("watcher", "worker-a", "worker-b"):
        assert await inbox(admin, agent) == [{**entry, "topic": "tasks.research", "topic_entry_id": topic_id}]
    assert await inbox(admin, "planner") == []  # a publisher is not its own subscriber
    assert await receipts(admin, "planner") == [
        {"outbox_id": oid, "message_id": "m1", "status": "routed", "entry_id": topic_id}]
    assert await admin.xlen(K.outbox("planner")) == 0  # routed entries are deleted from the outbox
    assert (await admin.xpending(K.outbox("planner"), "router"))["pending"] == 0
    assert router.stats.routed == 1 and router.stats.per_agent["planner"]["routed"] == 1


async def test_the_default_message_id_is_sender_and_outbox_id(raw: aioredis.Redis, router: Router, admin: aioredis.Redis) -> None:
    oid = await publish(raw, "worker-a", "results.research", {"r": 1})
    await drain(router)
    assert [m["message_id"] for m in await inbox(admin, "planner")] == [f"worker-a:{oid}"]


def _poisons() -> list[tuple[str, dict[bytes, bytes]]]:
    ok = {b"topic": b"tasks.research", b"payload": b"{}"}
    return [
        ("invalid_utf8", {b"topic": b"tasks.research", b"payload": b'"\xff\xfe"'}),
        ("invalid_utf8", {b"topic": b"tasks.\xc3", b"payload": b"{}"}),
        ("invalid_utf8", {**ok, b"\xff": b"x"}),
        ("unknown_field", {**ok, b"priority": b"high"}),
        ("missing_field", {b"topic": b"tasks.research"}),
        ("missing_field", {b"payload": b"{}"}),
        ("too_large", {b"topic": b"tasks.research", b"payload": b'"' + b"x" * 5000 + b'"'}),
        ("sender_mismatch", {**ok, b"sender": b"worker-a"}),
        ("invalid_content_type", {**ok, b"content_type": b"text/plain"}),
        ("invalid_message_id", {**ok, b"message_id": b"has space"}),
        ("invalid_message_id", {**ok, b"message_id": b""}),
        ("invalid_message_id", {**ok, b"message_id": b"m" * 201}),
        ("undeclared_topic", {b"topic": b"tasks.nosuch", b"payload": b"{}"}),
        ("acl_denied", {b"topic": b"tasks.admin.reset", b"payload": b"{}"}),  # role denies it
        ("acl_denied", {b"topic": b"results.research", b"payload": b"{}"}),  # neither declared nor permitted
        ("invalid_json", {b"topic": b"tasks.research", b"payload": b"{not json"}),
        ("invalid_json", {b"topic": b"tasks.research", b"payload": b"NaN"}),
    ]


async def test_every_poison_is_refused_with_its_reason_and_the_good_entries_behind_it_are_routed(
    raw: aioredis.Redis, router: Router, admin: aioredis.Redis
) -> None:
    expected: list[tuple[str, str]] = []  # (outbox id, status or reason)
    for i, (reason, fields) in enumerate(_poisons()):
        expected.append(((await raw.xadd(K.outbox("planner"), fields)).decode(), reason))  # type: ignore[arg-type]
        good = await publish(raw, "planner", "tasks.research", {"n": i}, f"good-{i}")
        expected.append((good, "routed"))
    assert await drain(router) == len(expected)
    got = [(r["outbox_id"], r.get("reason") or r["status"]) for r in await receipts(admin, "planner")]
    assert got == expected
    # every subscriber got exactly the good entries, in order
    goods = [f"good-{i}" for i in range(len(_poisons()))]
    for agent in SUBSCRIBERS["tasks.research"]:
        assert [m["message_id"] for m in await inbox(admin, agent)] == goods
    assert router.stats.per_agent["planner"] == Counter({"routed": len(goods), "refused": len(_poisons())})
    refused = await admin.xrange(K.refused)
    assert [f["reason"] for _, f in refused] == [r for r, _ in _poisons()]
    assert {f["sender"] for _, f in refused} == {"planner"}
    assert all(f["reason"] in REASONS for _, f in refused)
    for _, f in refused:  # a refused entry is never copied whole: size + a short escaped preview
        assert "payload" not in f and len(f["preview"]) <= 130 and len(f["topic"]) <= 130
    huge = next(f for _, f in refused if f["reason"] == "too_large")
    assert int(huge["size"]) > 5000 and huge["preview"].endswith("...")
    bad = next(f for _, f in refused if f["reason"] == "invalid_utf8")
    assert bad["preview"] == '"\\xff\\xfe"'
    assert router.stats.refused == Counter(r for r, _ in _poisons())
    assert await admin.xlen(K.outbox("planner")) == 0


async def test_a_huge_entry_is_refused_without_being_copied(raw: aioredis.Redis, router: Router, admin: aioredis.Redis) -> None:
    await raw.xadd(K.outbox("worker-a"), {"topic": "results.research", "payload": "[" + "1," * 2_000_000 + "1]"})
    await publish(raw, "worker-a", "results.research", {"after": True}, "after")
    await drain(router)
    (_, refused), = await admin.xrange(K.refused)
    assert refused["reason"] == "too_large" and int(refused["size"]) > 4_000_000
    assert sum(len(v) for v in refused.values()) < 1000
    assert [m["message_id"] for m in await inbox(admin, "planner")] == ["after"]


async def test_open_and_half_open_breakers_refuse_with_the_state_as_reason_and_keep_the_payload(
    raw: aioredis.Redis, router: Router, admin: aioredis.Redis
) -> None:
    await admin.hset(K.breaker("planner"), mapping={"state": "open"})
    await publish(raw, "planner", "tasks.research", {"n": 1}, "while-open")
    await drain(router)
    await admin.hset(K.breaker("planner"), mapping={"state": "half_open"})
    await publish(raw, "planner", "tasks.research", {"n": 2}, "while-half-open")
    await drain(router)
    await admin.hset(K.breaker("planner"), mapping={"state": "closed"})
    await publish(raw, "planner", "tasks.research", {"n": 3}, "closed")
    await drain(router)
    assert [(r["message_id"], r["status"], r.get("reason")) for r in await receipts(admin, "planner")] == [
        ("while-open", "refused", "breaker_open"), ("while-half-open", "refused", "breaker_half_open"),
        ("closed", "routed", None)]
    assert [m["message_id"] for m in await inbox(admin, "worker-a")] == ["closed"]
    kept = [f["payload"] for _, f in await admin.xrange(K.refused)]
    assert kept == ['{"n": 1}', '{"n": 2}']  # a valid entry refused by the breaker can be replayed
    await admin.delete(K.breaker("planner"))
    await admin.set(K.breaker("planner"), "garbage")  # unreadable: refused as open, never let through
    await publish(raw, "planner", "tasks.research", {"n": 4}, "unreadable")
    await drain(router)
    assert (await receipts(admin, "planner"))[-1]["reason"] == "breaker_open"


async def test_a_wrong_typed_inbox_refuses_the_entry_instead_of_half_routing_it(
    raw: aioredis.Redis, router: Router, admin: aioredis.Redis
) -> None:
    await admin.delete(K.inbox("worker-b"))
    await admin.set(K.inbox("worker-b"), "not a stream")
    await publish(raw, "planner", "tasks.research", {}, "unlucky")
    await drain(router)
    assert [r.get("reason") for r in await receipts(admin, "planner")] == ["route_failed"]
    assert await admin.xlen(K.topic("tasks.research")) == 0 and await inbox(admin, "worker-a") == []
    assert not await admin.exists(K.dedup("tasks.research", "planner", "unlucky"))  # no mark without an entry


async def test_duplicates_are_never_delivered_twice_and_get_the_original_entry_id(
    raw: aioredis.Redis, router: Router, admin: aioredis.Redis
) -> None:
    for _ in range(3):
        await publish(raw, "planner", "tasks.summarize", {"x": 1}, "same")
    await drain(router)
    await publish(raw, "planner", "tasks.summarize", {"x": 1}, "same")  # a later batch too
    await drain(router)
    rs = await receipts(admin, "planner")
    assert [r["status"] for r in rs] == ["routed", "duplicate", "duplicate", "duplicate"]
    assert len({r["entry_id"] for r in rs}) == 1
    for agent in SUBSCRIBERS["tasks.summarize"]:
        assert [m["message_id"] for m in await inbox(admin, agent)] == ["same"]
    assert router.stats.duplicates == 3


async def test_dedup_marks_are_per_sender_so_no_agent_can_burn_another_agents_ids(
    redis_server: RedisServer, admin: aioredis.Redis
) -> None:
    doc = {**SWARM_DOC, "agents": [
        {**a, "publishes": ["results.research"]} if a["id"] == "worker-b" else a for a in SWARM_DOC["agents"]]}
    desired = make_desired(doc)
    await apply_bus(admin, desired.bus, desired.acl)
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        async with Router(redis_url=redis_server.url, swarm="lab", block_ms=20) as router:
            await publish(raw, "worker-b", "results.research", {"by": "b"}, "r-1")  # b goes first with a's id
            await publish(raw, "worker-a", "results.research", {"by": "a"}, "r-1")
            await drain(router)
        assert sorted((m["sender"], m["message_id"]) for m in await inbox(admin, "planner")) == [
            ("worker-a", "r-1"), ("worker-b", "r-1")]  # two outboxes: no order between them
    finally:
        await raw.aclose()


async def test_entries_a_dead_replica_read_are_reclaimed_and_routed_once(
    raw: aioredis.Redis, router: Router, admin: aioredis.Redis
) -> None:
    ids = [await publish(raw, "planner", "tasks.research", {"n": i}, f"p-{i}") for i in range(5)]
    # a replica reads them and dies before its script runs
    read = await admin.xreadgroup("router", "dead-replica", {K.outbox("planner"): ">"}, count=10)
    assert [eid for eid, _ in read[0][1]] == ids
    assert await drain(router) == 0  # not idle long enough yet: nothing stolen from a live replica
    await asyncio.sleep(0.25)
    router._next_reclaim = 0
    assert await drain(router) == 5 and router.stats.reclaimed == 5
    assert [m["message_id"] for m in await inbox(admin, "worker-a")] == [f"p-{i}" for i in range(5)]
    assert (await admin.xpending(K.outbox("planner"), "router"))["pending"] == 0


async def test_a_large_dead_backlog_is_reclaimed_a_page_at_a_time_following_the_cursor(
    redis_server: RedisServer, raw: aioredis.Redis, admin: aioredis.Redis
) -> None:
    mids = [f"b-{i}" for i in range(7)]
    for mid in mids:
        await publish(raw, "planner", "tasks.research", {}, mid)
    await admin.xreadgroup("router", "dead-replica", {K.outbox("planner"): ">"})
    await asyncio.sleep(0.01)
    async with Router(redis_url=redis_server.url, swarm="lab", block_ms=20, reclaim_idle_ms=1, read_count=2) as small:
        await small.route_batch()
        assert small.stats.reclaimed == 2  # one page per call, not the whole backlog at once
        await drain(small)
        assert small.stats.reclaimed == 7
    assert [m["message_id"] for m in await inbox(admin, "worker-a")] == mids


async def test_an_entry_routed_by_another_replica_after_a_reclaim_is_not_routed_again(
    raw: aioredis.Redis, router: Router, admin: aioredis.Redis, redis_server: RedisServer
) -> None:
    """The script's XACK is the fence: a slow replica finishing late finds the entry gone."""
    await publish(raw, "planner", "tasks.research", {"n": 1}, "raced")
    read = await raw.xreadgroup("router", router.consumer, {K.outbox("planner"): ">"})
    (oid, fields), = read[0][1]
    async with Router(redis_url=redis_server.url, swarm="lab", block_ms=20, reclaim_idle_ms=1) as other:
        await asyncio.sleep(0.01)
        assert await drain(other) == 1 and other.stats.routed == 1
    assert await router.route([("planner", oid.decode(), fields)]) == 1
    assert router.stats.gone == 1 and router.stats.routed == 0
    assert len(await inbox(admin, "worker-a")) == 1 and len(await receipts(admin, "planner")) == 1


async def test_dead_replicas_consumers_are_forgotten_unless_they_hold_entries(
    raw: aioredis.Redis, router: Router, admin: aioredis.Redis
) -> None:
    await admin.xreadgroup("router", "dead-idle", {K.outbox("planner"): ">"})  # a consumer with nothing pending
    await publish(raw, "planner", "tasks.research", {}, "held")
    await admin.xreadgroup("router", "dead-holding", {K.outbox("planner"): ">"})
    router.dead_consumer_ms = 0
    await router.housekeeping()
    names = {c["name"] for c in await admin.xinfo_consumers(K.outbox("planner"), "router")}
    assert "dead-idle" not in names and "dead-holding" in names  # its entry is still to be reclaimed


async def test_a_deleted_outbox_gets_its_group_back(raw: aioredis.Redis, router: Router, admin: aioredis.Redis) -> None:
    await admin.delete(K.outbox("planner"))
    await publish(raw, "planner", "tasks.research", {}, "after-delete")  # recreated without the group
    await drain(router, idle_rounds=3)
    assert [m["message_id"] for m in await inbox(admin, "worker-a")] == ["after-delete"]


async def test_the_router_follows_a_new_plan(raw: aioredis.Redis, router: Router, admin: aioredis.Redis) -> None:
    await publish(raw, "worker-a", "results.summary", {}, "before")  # worker-a did not declare it
    await drain(router)
    doc = {**SWARM_DOC, "agents": [
        {**a, "publishes": ["results.research", "results.summary"]} if a["id"] == "worker-a" else a
        for a in SWARM_DOC["agents"]]}
    bigger = make_desired(doc)  # the router notices a new plan by its spec digest
    await apply_bus(admin, bigger.bus.model_copy(update={"spec_digest": "sha256:bigger"}),
                    bigger.acl.model_copy(update={"spec_digest": "sha256:bigger"}))
    await asyncio.sleep(0.06)
    await publish(raw, "worker-a", "results.summary", {}, "after")
    await drain(router)
    assert [(r["message_id"], r["status"]) for r in await receipts(admin, "worker-a")] == [
        ("before", "refused"), ("after", "routed")]


async def test_a_flooded_outbox_is_trimmed_and_raises_the_alarm(
    raw: aioredis.Redis, router: Router, admin: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    plan = router.plan
    assert plan is not None
    small = plan.model_copy(update={"settings": plan.settings.model_copy(update={"outbox_max_len": 100})})
    router._install(small)
    async with raw.pipeline(transaction=False) as pipe:
        for i in range(1000):
            pipe.xadd(K.outbox("worker-a"), {"topic": "results.research", "payload": str(i)})
        await pipe.execute()
    with caplog.at_level(logging.WARNING, logger="swarm.bus.router"):
        await router.housekeeping()
    assert 100 <= await admin.xlen(K.outbox("worker-a")) < 1000
    assert router.stats.per_agent["worker-a"]["trimmed"] == 1000 - await admin.xlen(K.outbox("worker-a"))
    assert any("ALARM: outbox of worker-a" in r.message for r in caplog.records)
    assert router.stats.backlog["worker-a"] == await admin.xlen(K.outbox("worker-a"))
    await drain(router)
    with caplog.at_level(logging.INFO, logger="swarm.bus.router"):
        await router.housekeeping()
    assert any("outbox of worker-a is back to 0" in r.message for r in caplog.records)
    assert await admin.xlen(K.topic("results.research")) == 1000 - router.stats.per_agent["worker-a"]["trimmed"]


async def test_housekeeping_caps_each_agents_own_dead_letters(router: Router, admin: aioredis.Redis) -> None:
    """An agent may XADD its own dead letters and Redis has no per-user quota: the router caps them."""
    plan = router.plan
    assert plan is not None
    router._install(plan.model_copy(update={"settings": plan.settings.model_copy(update={"refused_max_len": 100})}))
    async with admin.pipeline(transaction=False) as pipe:
        for i in range(1000):
            pipe.xadd(K.agent_dead_letter("worker-a"), {"reason": "flood", "n": str(i)})
        for i in range(3):
            pipe.xadd(K.agent_dead_letter("worker-b"), {"reason": "real", "n": str(i)})
        await pipe.execute()
    await router.housekeeping()
    assert 100 <= await admin.xlen(K.agent_dead_letter("worker-a")) < 1000
    assert [f["n"] for _, f in await admin.xrange(K.agent_dead_letter("worker-a"), count=1)] != ["0"]  # oldest went
    assert await admin.xlen(K.agent_dead_letter("worker-b")) == 3  # nobody else's


async def test_a_dead_letter_key_of_another_type_is_left_alone_and_the_others_are_still_capped(
    router: Router, admin: aioredis.Redis
) -> None:
    """The trims run in one script call for many keys: a key that is not a stream (put there by
    hand) fails only itself, in its place; the keys after it in the same call are trimmed."""
    plan = router.plan
    assert plan is not None
    router._install(plan.model_copy(update={"settings": plan.settings.model_copy(update={"refused_max_len": 100})}))
    await admin.set(K.agent_dead_letter("planner"), "not a stream")  # the first key of the call
    async with admin.pipeline(transaction=False) as pipe:
        for i in range(1000):
            pipe.xadd(K.agent_dead_letter("worker-b"), {"reason": "flood", "n": str(i)})  # the last key
        await pipe.execute()
    await router.housekeeping()
    assert await admin.get(K.agent_dead_letter("planner")) == "not a stream"
    assert 100 <= await admin.xlen(K.agent_dead_letter("worker-b")) < 1000
    replies = await router._trimmed([K.agent_dead_letter(a).encode() for a in ("planner", "worker-b")], 100,
                                    lengths=True)
    assert isinstance(replies[0], ResponseError) and "WRONGTYPE" in str(replies[0]) and replies[1] is replies[0]
    assert replies[2] == 0 and 100 <= replies[3] < 1000  # already capped: nothing more to trim


async def test_housekeeping_measures_every_inbox_and_raises_the_inbox_alarm_at_half_the_cap(
    raw: aioredis.Redis, router: Router, admin: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    plan = router.plan
    assert plan is not None
    router._install(plan.model_copy(update={"settings": plan.settings.model_copy(update={"inbox_max_len": 8})}))
    await _flood(raw, 5, "m")
    await drain(router)
    with caplog.at_level(logging.WARNING, logger="swarm.bus.router"):
        await router.housekeeping()
    assert router.stats.inbox_length == {"planner": 0, "worker-a": 5, "worker-b": 5, "watcher": 5}
    assert sum("ALARM: inbox of" in r.message for r in caplog.records) == 3  # over 4 = half of 8
    for eid, _ in await admin.xrange(K.inbox("worker-a")):  # what an agent's ack does
        await admin.xack(K.inbox("worker-a"), "worker-a", eid)
        await admin.xdel(K.inbox("worker-a"), eid)
    with caplog.at_level(logging.INFO, logger="swarm.bus.router"):
        await router.housekeeping()
    assert router.stats.inbox_length["worker-a"] == 0
    assert any("inbox of worker-a is back to 0" in r.message for r in caplog.records)
    assert router.stats.inbox_full == Counter()  # under the cap: nothing was skipped


async def test_upkeep_in_one_agent_pipelines_keeps_each_reply_with_its_agent(
    raw: aioredis.Redis, router: Router, admin: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-outbox upkeep runs in pipelines of PIPELINE_AGENTS agents (the loop is free in
    between): with one agent a pipeline, every length, trim and reclaim still lands on its own agent."""
    import swarm.bus.router as router_module

    monkeypatch.setattr(router_module, "PIPELINE_AGENTS", 1)
    await _flood(raw, 3, "m")
    await publish(raw, "worker-b", "results.summary", {}, "w-b")  # to planner's and watcher's inboxes
    await drain(router)
    ids = [await publish(raw, "planner", "tasks.research", {"n": i}, f"p-{i}") for i in range(2)]
    await admin.xreadgroup("router", "dead-replica", {K.outbox("planner"): ">"}, count=10)  # read, then died
    await router.housekeeping()
    assert router.stats.inbox_length == {"planner": 1, "worker-a": 3, "worker-b": 3, "watcher": 4}
    assert router.stats.backlog == {"planner": 2, "watcher": 0, "worker-a": 0, "worker-b": 0}  # the unrouted two
    await asyncio.sleep(0.25)
    router._next_reclaim = 0
    assert await drain(router) == 2 and router.stats.reclaimed == 2
    assert [m["message_id"] for m in await inbox(admin, "worker-a")][-2:] == ["p-0", "p-1"] and len(ids) == 2


async def test_upkeep_that_only_watches_goes_a_slice_a_round_and_never_misses_what_moved(
    raw: aioredis.Redis, router: Router, admin: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reclaiming and measuring inboxes cover UPKEEP_SLICE agents a round (round-robin), plus the
    inboxes the senders routed since the last round may have grown; trims still cover all."""
    import swarm.bus.router as router_module

    monkeypatch.setattr(router_module, "PIPELINE_AGENTS", 1)
    monkeypatch.setattr(router_module, "UPKEEP_SLICE", 1)
    assert router.plan is not None and list(router.plan.agents) == ["planner", "watcher", "worker-a", "worker-b"]
    await _flood(raw, 3, "m")  # planner -> tasks.research: the inboxes of watcher, worker-a, worker-b
    await drain(router)
    router._upkeep_at = {"inboxes": 0}
    await router.housekeeping()  # the slice is planner's; the three inboxes it routed to are measured too
    assert router.stats.inbox_length == {"planner": 0, "watcher": 3, "worker-a": 3, "worker-b": 3}
    for eid, _ in await admin.xrange(K.inbox("worker-a")):  # worker-a acks: no routing, nothing hot
        await admin.xack(K.inbox("worker-a"), "worker-a", eid)
        await admin.xdel(K.inbox("worker-a"), eid)
    await router.housekeeping()  # watcher's turn
    assert router.stats.inbox_length["worker-a"] == 3
    await router.housekeeping()  # worker-a's
    assert router.stats.inbox_length["worker-a"] == 0

    # a dead replica's entries wait for their outbox's turn in the sweep, and are then reclaimed
    await publish(raw, "worker-b", "results.summary", {}, "w-b")
    await admin.xreadgroup("router", "dead-replica", {K.outbox("worker-b"): ">"}, count=10)  # read, then died
    await asyncio.sleep(0.25)
    router._upkeep_at["reclaim"] = 0
    assert [len(await router.reclaim()) for _ in range(4)] == [0, 0, 0, 1]  # planner, watcher, worker-a, worker-b
    # and a flooded outbox is still trimmed in the very next round, whatever the slice
    cap = router.plan.settings.outbox_max_len
    await admin.xgroup_destroy(K.outbox("watcher"), "router")  # not routed away meanwhile: only the trim acts
    async with admin.pipeline(transaction=False) as pipe:
        for i in range(cap + 500):
            pipe.xadd(K.outbox("watcher"), {"topic": "results.summary", "payload": "{}", "message_id": f"f-{i}"})
        await pipe.execute()
    await router.housekeeping()
    assert await admin.xlen(K.outbox("watcher")) < cap + 500


async def test_paging_a_dead_backlog_never_puts_off_the_due_sweep(
    router: Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a cursor is unfinished the next batches page it (only those outboxes); the sweep of
    every outbox still runs when due, not after the backlog is done."""
    calls: list[bool] = []

    async def reclaim(*, sweep: bool = True) -> list[Any]:
        calls.append(sweep)
        return []

    monkeypatch.setattr(router, "reclaim", reclaim)
    loop_now = asyncio.get_running_loop().time()
    router._reclaim_more, router._next_reclaim = True, loop_now + 3600
    await router._read_and_route(loop_now)
    assert calls == [False] and router._next_reclaim == loop_now + 3600  # a page, the sweep not moved
    router._next_reclaim = loop_now - 1
    await router._read_and_route(loop_now)
    assert calls == [False, True] and router._next_reclaim > loop_now  # due: the sweep, more or not


async def test_run_obeys_its_stop_event_and_survives_a_redis_restart(redis_server: RedisServer, applied: aioredis.Redis) -> None:
    router = Router(redis_url=redis_server.url, swarm="lab", block_ms=50, reclaim_idle_ms=200)
    stop = asyncio.Event()
    task = asyncio.create_task(router.run(stop))
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        await publish(raw, "planner", "tasks.research", {}, "one")
        await await_until(lambda: router.stats.routed == 1, timeout=10, every=0.02)
        await asyncio.to_thread(redis_server.restart)  # append-only: the streams survive, the groups too
        await raw.aclose()
        raw = aioredis.Redis.from_url(redis_server.url)
        await publish(raw, "planner", "tasks.research", {}, "two")
        await await_until(lambda: router.stats.routed == 2, timeout=15, every=0.02)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await raw.aclose()
    admin = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        assert [m["message_id"] for m in await inbox(admin, "worker-a")] == ["one", "two"]
    finally:
        await admin.aclose()


# -- real router processes ----------------------------------------------------------------


async def _wait_routed(admin: aioredis.Redis, agent: str, count: int, timeout: float = 30.0) -> list[dict[str, str]]:
    deadline = time.monotonic() + timeout
    while True:
        got = await inbox(admin, agent)
        if len(got) >= count or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.05)


async def _flood(raw: aioredis.Redis, n: int, prefix: str) -> list[str]:
    mids = [f"{prefix}-{i}" for i in range(n)]
    async with raw.pipeline(transaction=False) as pipe:
        for mid in mids:
            pipe.xadd(K.outbox("planner"), {"topic": "tasks.research", "payload": json.dumps({"m": mid}), "message_id": mid})
        await pipe.execute()
    return mids


async def test_two_router_processes_share_the_group_and_deliver_each_id_once(
    redis_server: RedisServer, raw: aioredis.Redis, admin: aioredis.Redis, router_factory: RouterFactory  # noqa: F811
) -> None:
    from tests.support.services import free_port

    port = free_port()
    a = router_factory(redis_url=redis_server.url, swarm="lab", extra_args=["--batch-size", "10", "--metrics-port", str(port)])
    b = router_factory(redis_url=redis_server.url, swarm="lab", extra_args=["--batch-size", "10"])
    mids = []
    for round_ in range(6):  # 900 in all
        mids += await _flood(raw, 150, f"r{round_}")
    for agent in SUBSCRIBERS["tasks.research"]:
        got = [m["message_id"] for m in await _wait_routed(admin, agent, len(mids))]
        assert sorted(got) == sorted(mids) and len(got) == len(set(got))
    consumers = {c["name"] for c in await admin.xinfo_consumers(K.outbox("planner"), "router")}
    assert {a.consumer, b.consumer} <= consumers
    import httpx

    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'swarm_router_entries_total{agent="planner",outcome="routed"}' in metrics
    assert 'swarm_router_outbox_backlog{agent="planner"}' in metrics
    assert a.stop() == 0 and b.stop() == 0  # SIGTERM: clean exit
    consumers = {c["name"] for c in await admin.xinfo_consumers(K.outbox("planner"), "router")}
    assert not {a.consumer, b.consumer} & consumers  # a clean stop leaves the group


async def test_an_inbox_at_inbox_max_len_is_skipped_and_keeps_every_unread_entry_while_the_others_get_it(
    redis_server: RedisServer, raw: aioredis.Redis, admin: aioredis.Redis, desired: DesiredState,
    router_factory: RouterFactory,  # noqa: F811
) -> None:
    """A subscriber that does not ack stops receiving at inbox_max_len; nothing it has not
    read is evicted, the topic log and the other subscribers still get the entry, and the
    skip is in `refused`, in the sender's receipt, in the metrics and in an ALARM line."""
    from swarm.bus import EventBus
    from tests.support.services import free_port

    cap = 5
    small = desired.bus.model_copy(update={
        "settings": desired.bus.settings.model_copy(update={"inbox_max_len": cap}), "spec_digest": "sha256:small"})
    await apply_bus(admin, small, desired.acl.model_copy(update={"spec_digest": "sha256:small"}))
    port = free_port()
    proc = router_factory(redis_url=redis_server.url, swarm="lab", extra_args=["--metrics-port", str(port)])
    mids = await _flood(raw, cap, "before")
    for agent in SUBSCRIBERS["tasks.research"]:
        assert len(await _wait_routed(admin, agent, cap)) == cap
    full_before = await admin.xrange(K.inbox("worker-a"))  # worker-a never reads: its inbox is full
    for agent in ("watcher", "worker-b"):  # the others ack what they got (ack deletes)
        async with EventBus(redis_url=redis_server.url, swarm="lab", agent_id=agent) as bus:
            for eid, _ in await admin.xrange(K.inbox(agent)):
                await bus.ack(eid)
        assert await admin.xlen(K.inbox(agent)) == 0
    async with EventBus(redis_url=redis_server.url, swarm="lab", agent_id="planner") as planner:
        result = await planner.publish("tasks.research", {"n": "over"}, message_id="over", wait=True, timeout=20)
    assert result.status == "routed" and result.undelivered == ("worker-a",)
    assert await admin.xrange(K.inbox("worker-a")) == full_before  # every unread entry, untouched
    for agent in ("watcher", "worker-b"):
        assert [m["message_id"] for m in await inbox(admin, agent)] == ["over"]
    log = await admin.xrange(K.topic("tasks.research"))
    assert [f["message_id"] for _, f in log] == mids + ["over"] and log[-1][0] == result.entry_id
    (receipt,) = [r for r in await receipts(admin, "planner") if r["message_id"] == "over"]
    assert receipt["status"] == "routed" and receipt["undelivered"] == "worker-a"
    refused = [f for _, f in await admin.xrange(K.refused)]
    assert [(f["reason"], f["subscriber"], f["sender"], f["message_id"], f["topic_entry_id"]) for f in refused] == [
        ("inbox_full", "worker-a", "planner", "over", result.entry_id)]
    import httpx

    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'swarm_router_inbox_full_total{agent="worker-a"} 1.0' in metrics
    assert "ALARM: inbox of worker-a is full" in proc.log_text()
    # once worker-a finishes one entry (ack deletes it), it receives again
    async with EventBus(redis_url=redis_server.url, swarm="lab", agent_id="worker-a") as worker:
        await worker.ack(full_before[0][0])
    await _flood(raw, 1, "after")
    got = await _wait_routed(admin, "worker-a", cap)
    assert [m["message_id"] for m in got] == mids[1:] + ["after-0"]
    assert len(await admin.xrange(K.refused)) == 1


@pytest.mark.slow  # moved out of the quick suite (CI time budget)
@pytest.mark.parametrize("point", ["before-script", "mid-batch", "after-script"])
async def test_a_router_sigkilled_mid_batch_and_restarted_loses_nothing_and_duplicates_nothing(
    point: str, redis_server: RedisServer, raw: aioredis.Redis, admin: aioredis.Redis,
    router_factory: RouterFactory,  # noqa: F811
) -> None:
    mids = await _flood(raw, 50, point)
    doomed = router_factory(redis_url=redis_server.url, swarm="lab", env={"SWARM_FAULT_ROUTER": point},
                            extra_args=["--batch-size", "5"], wait_ready=False)
    assert doomed.wait() == -signal.SIGKILL
    delivered_before = len(await inbox(admin, "worker-a"))
    assert delivered_before == {"before-script": 0, "mid-batch": 5, "after-script": 50}[point]
    router_factory(redis_url=redis_server.url, swarm="lab")
    for agent in SUBSCRIBERS["tasks.research"]:
        got = [m["message_id"] for m in await _wait_routed(admin, agent, len(mids))]
        await asyncio.sleep(0.3)  # a second copy would arrive now
        got = [m["message_id"] for m in await inbox(admin, agent)]
        assert sorted(got) == sorted(mids) and len(got) == len(mids), point
    statuses = Counter(r["status"] for r in await receipts(admin, "planner"))
    assert statuses == Counter({"routed": 50})
    assert (await admin.xpending(K.outbox("planner"), "router"))["pending"] == 0


@pytest.mark.slow  # moved out of the quick suite (CI time budget)
async def test_kill_9_under_load_then_restart_loses_nothing_and_duplicates_nothing(
    redis_server: RedisServer, raw: aioredis.Redis, admin: aioredis.Redis, router_factory: RouterFactory  # noqa: F811
) -> None:
    first = router_factory(redis_url=redis_server.url, swarm="lab", extra_args=["--batch-size", "7"])
    mids: list[str] = []
    for round_ in range(18):  # 900 in all: under the inbox cap
        mids += await _flood(raw, 50, f"k{round_}")
        await asyncio.sleep(0.01)
        if round_ == 5:
            first.kill()
            router_factory(redis_url=redis_server.url, swarm="lab", extra_args=["--batch-size", "7"])
    for agent in SUBSCRIBERS["tasks.research"]:
        await _wait_routed(admin, agent, len(mids))
        got = [m["message_id"] for m in await inbox(admin, agent)]
        assert sorted(got) == sorted(mids) and len(got) == len(set(got))


async def test_an_undeclared_swarm_bus_waits_and_routes_once_installed(
    redis_server: RedisServer, admin: aioredis.Redis, desired: DesiredState, router_factory: RouterFactory  # noqa: F811
) -> None:
    waiting = router_factory(redis_url=redis_server.url, swarm="lab", wait_ready=False)
    await await_until(lambda: "not installed" in waiting.log_text(), timeout=20, every=0.02)
    await apply_bus(admin, desired.bus, desired.acl, secret=SECRET)
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        await publish(raw, "planner", "tasks.research", {}, "late")
        assert [m["message_id"] for m in await _wait_routed(admin, "worker-a", 1)] == ["late"]
    finally:
        await raw.aclose()
    assert waiting.stop(signal.SIGINT) == 0


async def test_the_registry_runs_a_router_in_its_lifespan_unless_no_route(
    redis_server: RedisServer, raw: aioredis.Redis, admin: aioredis.Redis, tmp_path: Any
) -> None:
    from tests.support.services import ProcessServer, free_port, python_cmd

    def serve(*flags: str) -> ProcessServer:
        port = free_port()
        return ProcessServer(python_cmd("-m", "swarm", "registry", "serve", "--insecure", "--swarm", "lab",
                                        "--redis-url", redis_server.url, "--port", str(port), "--no-probe", *flags),
                             port=port, log=tmp_path / f"registry-{port}.log").start()

    quiet = serve("--no-route")
    try:
        await publish(raw, "planner", "tasks.research", {}, "waits")
        await asyncio.sleep(0.5)
        assert await inbox(admin, "worker-a") == []  # nobody routes
        assert await admin.xinfo_consumers(K.outbox("planner"), "router") == []
    finally:
        quiet.stop()
    registry = serve()
    try:
        got = await _wait_routed(admin, "worker-a", 1)
        assert [m["message_id"] for m in got] == ["waits"]
        import httpx

        metrics = httpx.get(registry.url + "/metrics").text  # the router's series on the registry's /metrics
        assert 'swarm_router_entries_total{agent="planner",outcome="routed"} 1.0' in metrics
    finally:
        registry.stop()
    assert registry.log is not None and "stopped: 1 routed" in registry.log.read_text()  # the lifespan ended it


async def test_a_broken_receipts_key_stalls_only_its_sender_until_fixed(
    raw: aioredis.Redis, router: Router, admin: aioredis.Redis
) -> None:
    """The script refuses a run whose fixed keys are of the wrong type before any write; the
    entries stay pending, other senders go on, and a fixed key lets them through on reclaim."""
    await admin.set(K.receipts("planner"), "not a stream")
    await publish(raw, "planner", "tasks.research", {}, "stalled")
    await publish(raw, "worker-a", "results.research", {}, "flows")
    await drain(router)
    assert [m["message_id"] for m in await inbox(admin, "planner")] == ["flows"]
    assert await inbox(admin, "worker-a") == [] and router.stats.per_agent["planner"]["errors"] >= 1
    assert (await admin.xpending(K.outbox("planner"), "router"))["pending"] == 1
    await admin.delete(K.receipts("planner"))
    await asyncio.sleep(0.25)
    router._next_reclaim = 0
    await drain(router)
    assert [m["message_id"] for m in await inbox(admin, "worker-a")] == ["stalled"]


def test_swarm_bus_route_reads_the_spec_and_stops_cleanly_on_sigterm(redis_server: RedisServer, tmp_path: Any) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    log = tmp_path / "route.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "swarm", "bus", "route", "--spec", str(REPO / "specs"),
                                 "--redis-url", redis_server.url, "--block-ms", "100"], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 20
        while "not installed" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
        assert "is not installed in Redis" in log.read_text()  # it names the swarm of the spec and waits
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_an_outbox_key_that_is_not_a_stream_is_set_aside_and_the_others_flow(
    raw: aioredis.Redis, router: Router, admin: aioredis.Redis
) -> None:
    await admin.delete(K.outbox("worker-b"))
    await admin.set(K.outbox("worker-b"), "not a stream")  # would fail every XREADGROUP over all outboxes
    await publish(raw, "planner", "tasks.research", {}, "still")
    await drain(router, idle_rounds=3)
    assert [m["message_id"] for m in await inbox(admin, "worker-a")] == ["still"]
    await admin.delete(K.outbox("worker-b"))
    await router.housekeeping()  # checks set-aside outboxes again
    await publish(raw, "worker-b", "results.summary", {}, "back")
    await drain(router)
    assert [m["message_id"] for m in await inbox(admin, "planner")] == ["back"]


# -- property: any mix of good, duplicate and poison entries, any batch size ------------------

ENTRY = st.one_of(
    st.tuples(st.just("good"), st.sampled_from(["a", "b", "c", "d"])),
    st.tuples(st.just("poison"), st.integers(0, len(_poisons()) - 1)),
)


@pytest.fixture(scope="module")
def property_redis(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = RedisServer(tmp_path_factory.mktemp("router-property"), appendonly=False).start()
    yield server
    server.stop()


async def _route_mix(url: str, entries: list[tuple[str, Any]], batch: int) -> None:
    admin = aioredis.Redis.from_url(url, decode_responses=True)
    raw = aioredis.Redis.from_url(url)
    await admin.flushdb()
    desired = make_desired()
    await apply_bus(admin, desired.bus, desired.acl)
    expected_inbox: list[str] = []
    expected_receipts: list[str] = []
    seen: set[str] = set()
    try:
        for kind, value in entries:
            if kind == "good":
                await publish(raw, "planner", "tasks.research", {"m": value}, value)
                expected_receipts.append("duplicate" if value in seen else "routed")
                if value not in seen:
                    expected_inbox.append(value)
                seen.add(value)
            else:
                reason, fields = _poisons()[value]
                await raw.xadd(K.outbox("planner"), fields)  # type: ignore[arg-type]
                expected_receipts.append(reason)
        async with Router(redis_url=url, swarm="lab", block_ms=10, max_batch=batch) as router:
            await drain(router)
        for agent in SUBSCRIBERS["tasks.research"]:
            assert [m["message_id"] for m in await inbox(admin, agent)] == expected_inbox
        assert [r.get("reason") or r["status"] for r in await receipts(admin, "planner")] == expected_receipts
        assert await admin.xlen(K.outbox("planner")) == 0
    finally:
        await raw.aclose()
        await admin.aclose()


@settings(max_examples=15)
@given(entries=st.lists(ENTRY, max_size=25), batch=st.integers(1, 7))
def test_any_mix_of_entries_routes_each_good_id_once_in_order_and_refuses_each_poison(
    property_redis: RedisServer, entries: list[tuple[str, Any]], batch: int
) -> None:
    asyncio.run(_route_mix(property_redis.url, entries, batch))
