"""EventBus, the agent's side of the mediated bus, on a real redis-server.

Publishing: every refusal is raised in process, distinct and saying why, before
anything reaches Redis; an accepted publish is ONE plain XADD to the agent's own
outbox (fields per the keys.py entry formats, no script). Consuming: the inbox with
the agent's consumer group, redelivery, reclaim one page at a time, dead letters to
``dlq:@<id>``, unreadable entries dead-lettered at once. Inbox entries here are
written the way the router writes them (tests of the whole path, through a real
router process, are in test_routed.py); the ACL property runs through the router too.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis.asyncio as aioredis

from swarm.bus import EventBus, Message
from swarm.bus.apply import agent_redis_url
from swarm.bus.breaker_store import BreakerStore, policy_from_settings
from swarm.desired import DesiredState, desired_from_spec
from swarm.errors import (
    AclDeniedError,
    BreakerOpenError,
    BusError,
    InvalidRequestError,
    NotDeclaredError,
    PayloadTooLargeError,
    RouterUnavailableError,
    TransientError,
    UndeclaredTopicError,
)
from tests.bus.conftest import SECRET, BusFactory
from tests.support.services import RedisServer

OUTBOX = "swarm:{lab}:outbox:planner"
INBOX = "swarm:{lab}:inbox:worker-a"
DLQ = "swarm:{lab}:dlq:@worker-a"


async def take(bus: EventBus, n: int, *, ack: bool = True, timeout: float = 5.0) -> list[Message]:
    got: list[Message] = []

    async def run() -> None:
        async for m in bus.subscribe():
            got.append(m)
            if ack:
                await m.ack()
            if len(got) >= n:
                return

    await asyncio.wait_for(run(), timeout)
    return got


async def deliver(admin: aioredis.Redis, inbox: str, n: int, topic: str = "tasks.research") -> list[str]:
    """Append ``n`` entries to an inbox in the router's inbox format."""
    ids = []
    for i in range(n):
        ids.append(await admin.xadd(inbox, {"topic": topic, "message_id": f"m-{i}", "sender": "planner",
                                            "payload": json.dumps({"i": i}), "content_type": "application/json",
                                            "topic_entry_id": f"{i + 1}-0"}))
    return ids


async def calls(admin: aioredis.Redis) -> dict[str, int]:
    stats = await admin.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


# -- publish: refusals in process ------------------------------------------------------------


async def test_refusals_are_distinct_say_why_and_send_nothing(make_bus: BusFactory, applied: aioredis.Redis) -> None:
    planner = await make_bus("planner")
    with pytest.raises(UndeclaredTopicError, match="tasks.nope"):
        await planner.publish("tasks.nope", {})
    with pytest.raises(AclDeniedError, match=r"deny.publish: tasks.admin.>"):
        await planner.publish("tasks.admin.reset", {})
    with pytest.raises(AclDeniedError, match="default deny"):
        await planner.publish("results.research", {})
    # the worker role allows results.* but worker-a declares only results.research: least privilege
    worker = await make_bus("worker-a")
    with pytest.raises(AclDeniedError, match=r"does not declare it in its publishes.*role alone would allow it"):
        await worker.publish("results.summary", {})
    assert await applied.xlen("swarm:{lab}:outbox:worker-a") == 0
    with pytest.raises(PayloadTooLargeError, match="4096"):
        await planner.publish("tasks.research", {"x": "y" * 5000})
    with pytest.raises(PayloadTooLargeError):  # bytes, not characters: 1500 x 3 bytes
        await planner.publish("tasks.research", {"x": "€" * 1500})
    with pytest.raises(InvalidRequestError, match="JSON"):
        await planner.publish("tasks.research", {"x": object()})
    with pytest.raises(InvalidRequestError, match="UTF-8"):
        await planner.publish("tasks.research", {"x": "\ud800"})  # a lone surrogate
    with pytest.raises(InvalidRequestError, match="JSON"):
        await planner.publish("tasks.research", {"x": float("nan")})
    for bad in ("has space", "", "x" * 201, "tab\there"):
        with pytest.raises(InvalidRequestError, match="message id"):
            await planner.publish("tasks.research", {}, message_id=bad)
    with pytest.raises(AclDeniedError, match="subscribe"):
        async for _ in planner.subscribe(["tasks.research"]):
            pass
    for bad_topics in ([], "results.research"):
        with pytest.raises(InvalidRequestError, match="subscribe"):
            async for _ in planner.subscribe(bad_topics):  # type: ignore[arg-type]
                pass
    with pytest.raises(AclDeniedError):  # every item is checked before anything is sent
        await planner.publish_many([("tasks.research", {}), ("tasks.admin.reset", {})])
    assert await applied.xlen(OUTBOX) == 0
    assert planner.can_publish("planner", "tasks.research") and not planner.can_subscribe("planner", "tasks.research")
    assert planner.decide("publish", "tasks.admin.reset").rule == "deny.publish: tasks.admin.>"
    assert planner.role == "planner" and planner.rights.publish == ["tasks.research", "tasks.summarize"]


async def test_connect_before_apply_is_transient(redis_server: RedisServer) -> None:
    bus = EventBus(redis_url=redis_server.url, swarm="lab", agent_id="planner")
    with pytest.raises(TransientError, match="swarm bus apply"):
        await bus.connect()
    await bus.close()


async def test_an_undeclared_agent_cannot_connect(redis_server: RedisServer, applied: aioredis.Redis) -> None:
    bus = EventBus(redis_url=redis_server.url, swarm="lab", agent_id="ghost")
    with pytest.raises(NotDeclaredError, match="'ghost' is not declared"):
        await bus.connect()


async def test_corrupt_settings_in_redis_are_a_clear_bus_error(redis_server: RedisServer, applied: aioredis.Redis) -> None:
    await applied.set("swarm:{lab}:bus", '{"swarm": "lab"}')
    bus = EventBus(redis_url=redis_server.url, swarm="lab", agent_id="planner")
    with pytest.raises(BusError, match=r"swarm:\{lab\}:bus.*not valid"):
        await bus.connect()


# -- publish: one plain XADD --------------------------------------------------------------------


async def test_publish_is_one_plain_xadd_to_the_agents_own_outbox(make_bus: BusFactory, applied: aioredis.Redis) -> None:
    planner = await make_bus("planner", breaker_refresh_seconds=3600, refresh_seconds=3600)
    await planner.publish("tasks.research", {"warm": 1})
    before = await calls(applied)
    plain = await planner.publish("tasks.research", {"q": "bees", "ü": 1})
    named = await planner.publish("tasks.summarize", [1, 2], message_id="m-ü-1")
    after = await calls(applied)
    spent = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert spent == {"xadd": 2, "info": 1}  # nothing else: no script, no breaker read on the hot path
    entries = await applied.xrange(OUTBOX)
    assert [e[0] for e in entries[1:]] == [plain.entry_id, named.entry_id]
    assert entries[1][1] == {"topic": "tasks.research", "payload": '{"q":"bees","ü":1}'}
    assert entries[2][1] == {"topic": "tasks.summarize", "payload": "[1,2]", "message_id": "m-ü-1"}
    assert (plain.status, plain.outbox_id, plain.duplicate) == ("accepted", plain.entry_id, False)
    assert plain.message_id == f"planner:{plain.entry_id}"  # the router's default id
    assert named.message_id == "m-ü-1"
    assert await applied.xlen("swarm:{lab}:topic:tasks.research") == 0  # only the router writes logs


async def test_publish_many_pipelines_xadds_in_order(make_bus: BusFactory, applied: aioredis.Redis) -> None:
    planner = await make_bus("planner")
    items: list[tuple[Any, ...]] = [("tasks.research", {"i": i}, f"c-{i}") for i in range(250)]
    items.append(("tasks.summarize", {"i": 250}))
    results = await planner.publish_many(items)
    entries = await applied.xrange(OUTBOX)
    assert [e[0] for e in entries] == [r.entry_id for r in results]
    assert [e[1].get("message_id") for e in entries] == [f"c-{i}" for i in range(250)] + [None]
    assert [json.loads(e[1]["payload"])["i"] for e in entries] == list(range(251))
    assert {r.status for r in results} == {"accepted"}
    assert await planner.publish_many([]) == []


async def test_the_agents_own_redis_user_may_publish_and_nothing_else(
    redis_server: RedisServer, applied: aioredis.Redis
) -> None:
    url = agent_redis_url(redis_server.url, "lab", "planner", SECRET)
    async with EventBus(redis_url=url, swarm="lab", agent_id="planner") as bus:
        result = await bus.publish("tasks.research", {"n": 1})
        assert [e[0] for e in await applied.xrange(OUTBOX)] == [result.entry_id]
        from redis.exceptions import NoPermissionError

        for command in (("XADD", "swarm:{lab}:topic:tasks.research", "*", "a", "b"),
                        ("XADD", "swarm:{lab}:outbox:worker-a", "*", "topic", "x", "payload", "{}"),
                        ("EVAL", "return 1", "0")):
            with pytest.raises(NoPermissionError):
                await bus.redis.execute_command(*command)  # type: ignore[no-untyped-call]


# -- the breaker, from a cached read ----------------------------------------------------------


async def test_open_breaker_refuses_from_the_cached_read_with_when_to_retry(
    make_bus: BusFactory, applied: aioredis.Redis, desired: DesiredState
) -> None:
    store = BreakerStore(applied, "lab", policy_from_settings(desired.bus.settings.breaker))
    for _ in range(4):
        await store.record_failure("planner", await store.acquire("planner") or 0)
    planner = await make_bus("planner", breaker_refresh_seconds=3600)  # connect reads the breaker
    with pytest.raises(BreakerOpenError, match=r"breaker is open.*health probe is allowed after.*--reset"):
        await planner.publish("tasks.research", {"n": 1})
    with pytest.raises(BreakerOpenError):
        await planner.publish_many([("tasks.research", {"n": 2})])
    assert await applied.xlen(OUTBOX) == 0
    await store.reset("planner")
    # the cache is read at most every breaker_refresh_seconds: the router is the authority meanwhile
    with pytest.raises(BreakerOpenError):
        await planner.publish("tasks.research", {"n": 3})
    fresh = await make_bus("planner", breaker_refresh_seconds=0)  # 0: read before every publish
    assert (await fresh.publish("tasks.research", {"n": 3})).status == "accepted"
    for _ in range(4):
        await store.record_failure("planner", await store.acquire("planner") or 0)
    with pytest.raises(BreakerOpenError):
        await fresh.publish("tasks.research", {"n": 4})
    assert await applied.xlen(OUTBOX) == 1


async def test_wait_without_a_router_says_to_run_one_and_keeps_the_entry(
    make_bus: BusFactory, applied: aioredis.Redis
) -> None:
    planner = await make_bus("planner")
    with pytest.raises(RouterUnavailableError, match=r"swarm bus route.*stay in the outbox") as caught:
        await planner.publish("tasks.research", {"n": 1}, message_id="w-1", wait=True, timeout=0.3)
    assert isinstance(caught.value, TransientError)
    entries = await applied.xrange(OUTBOX)
    assert [e[1]["message_id"] for e in entries] == ["w-1"]


# -- subscribe: the inbox ---------------------------------------------------------------------


async def test_subscribe_hands_over_inbox_entries_with_their_fields_and_acks(
    make_bus: BusFactory, applied: aioredis.Redis
) -> None:
    ids = await deliver(applied, INBOX, 3)
    worker = await make_bus("worker-a")
    got = await take(worker, 3)
    assert [m.entry_id for m in got] == ids
    assert [(m.topic, m.message_id, m.sender, m.payload, m.deliveries) for m in got] == [
        ("tasks.research", f"m-{i}", "planner", {"i": i}, 1) for i in range(3)
    ]
    assert [m.topic_entry_id for m in got] == ["1-0", "2-0", "3-0"]
    assert (await applied.xpending(INBOX, "worker-a"))["pending"] == 0


async def test_an_ack_deletes_the_entry_from_the_inbox_with_the_agents_own_user_and_unacked_ones_stay(
    redis_server: RedisServer, make_bus: BusFactory, applied: aioredis.Redis
) -> None:
    """The router never trims an inbox, so the agent removes what it finished (XACK + XDEL):
    acked entries leave the inbox, the others stay there and pending until acked."""
    ids = await deliver(applied, INBOX, 4)
    own = agent_redis_url(redis_server.url, "lab", "worker-a", SECRET)  # its own user: +xdel on its inbox only
    worker = await make_bus("worker-a", redis_url=own, visibility_timeout=0.2)
    got = await take(worker, 4, ack=False)
    assert [m.entry_id for m in got] == ids
    await got[0].ack()
    await got[2].ack()
    assert await applied.xlen(INBOX) == 2
    assert [eid for eid, _ in await applied.xrange(INBOX)] == [ids[1], ids[3]]
    assert (await applied.xpending(INBOX, "worker-a"))["pending"] == 2
    again = await take(worker, 2, ack=True)  # redelivered after the visibility timeout, then acked
    assert sorted(m.entry_id for m in again) == [ids[1], ids[3]] and {m.deliveries for m in again} == {2}
    assert await applied.xlen(INBOX) == 0
    assert (await applied.xpending(INBOX, "worker-a"))["pending"] == 0
    await got[0].ack()  # acking again is harmless
    assert await applied.xlen(INBOX) == 0


async def test_unacked_entries_are_redelivered_then_dead_lettered(make_bus: BusFactory, applied: aioredis.Redis) -> None:
    (kept,) = await deliver(applied, INBOX, 1)
    worker = await make_bus("worker-a", visibility_timeout=0.15)
    got = await take(worker, 2, ack=False)  # max_deliveries 2 in the test plan
    assert [m.deliveries for m in got] == [1, 2] and {m.entry_id for m in got} == {kept}
    await asyncio.sleep(0.2)
    assert await worker.reclaim() == []  # third time: dead letter, not delivery
    dead = await applied.xrange(DLQ)
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields["original_entry_id"] == kept and fields["message_id"] == "m-0" and fields["topic"] == "tasks.research"
    assert fields["group"] == "worker-a" and "not acked after 2 deliveries" in fields["reason"]
    assert (await applied.xpending(INBOX, "worker-a"))["pending"] == 0
    assert await applied.xlen(INBOX) == 0  # moved, not copied: a dead letter leaves the inbox
    assert worker.stats.dead_lettered == 1


async def test_unreadable_entries_are_dead_lettered_at_once_and_the_next_one_arrives(
    redis_server: RedisServer, make_bus: BusFactory, applied: aioredis.Redis
) -> None:
    raw = aioredis.Redis.from_url(redis_server.url)  # bytes in, bytes out
    try:
        bad_utf8 = await raw.xadd(INBOX, {b"topic": b"tasks.research", b"message_id": b"\xff\xfe", b"sender": b"x",
                                          b"payload": b"{}"})
        not_json = await raw.xadd(INBOX, {b"topic": b"tasks.research", b"message_id": b"j", b"sender": b"x",
                                          b"payload": b"{nope"})
        missing = await raw.xadd(INBOX, {b"payload": b"{}"})
        (good,) = await deliver(applied, INBOX, 1)
        worker = await make_bus("worker-a")
        got = await take(worker, 1)
        assert [m.entry_id for m in got] == [good]
        assert worker.stats.unreadable == 3 and worker.stats.dead_lettered == 3
        dead = await raw.xrange(DLQ)
        assert [f[b"original_entry_id"] for _, f in dead] == [bad_utf8, not_json, missing]
        assert dead[0][1][b"message_id"] == b"\xff\xfe"  # kept as it was, byte for byte
        reasons = [f[b"reason"].decode() for _, f in dead]
        assert "not valid UTF-8" in reasons[0] and "not JSON" in reasons[1] and "missing field" in reasons[2]
        assert (await applied.xpending(INBOX, "worker-a"))["pending"] == 0
    finally:
        await raw.aclose()


async def test_reclaim_claims_one_page_a_call_and_keeps_the_cursor(make_bus: BusFactory, applied: aioredis.Redis) -> None:
    """One XAUTOCLAIM page (read_count entries) a call; the next call goes on from the cursor,
    not from the start, and after the end it starts over: all entries come back, in order."""
    sent = await deliver(applied, INBOX, 230)
    await applied.xreadgroup("worker-a", "crashed", {INBOX: ">"}, count=1000)  # read, never acked
    worker = await make_bus("worker-a", visibility_timeout=0.1, read_count=100, max_deliveries=5)
    pages: list[list[Message]] = []
    for _ in range(3):
        await asyncio.sleep(0.15)  # every entry idle again, those of earlier pages too
        pages.append(await worker.reclaim())
    assert [len(p) for p in pages] == [100, 100, 30]
    assert [m.entry_id for p in pages for m in p] == sent
    assert {m.deliveries for p in pages for m in p} == {2} and worker.stats.redelivered == 230
    await asyncio.sleep(0.15)
    wrapped = await worker.reclaim()  # the cursor reached 0-0: from the start again
    assert [m.entry_id for m in wrapped] == sent[:100] and {m.deliveries for m in wrapped} == {3}


async def test_a_backlog_is_reclaimed_a_batch_at_a_time_so_no_handled_entry_is_dead_lettered(
    make_bus: BusFactory, applied: aioredis.Redis
) -> None:
    """A crashed consumer left 60 entries pending. Two consumers take them over; a batch of 8
    handled well within the visibility timeout must not be claimed again by the other
    consumer (claiming all 60 at once did: their idle clocks ran out while they waited)."""
    sent = set(await deliver(applied, INBOX, 60))
    await applied.xreadgroup("worker-a", "crashed", {INBOX: ">"}, count=1000)
    await asyncio.sleep(0.55)
    handled: dict[str, int] = {}
    done = asyncio.Event()

    async def consume(name: str) -> None:
        bus = await make_bus("worker-a", consumer_name=name, visibility_timeout=0.5, read_count=8, max_deliveries=2)
        async for m in bus.subscribe():
            await asyncio.sleep(0.01)  # a handler that always succeeds
            handled[m.entry_id] = handled.get(m.entry_id, 0) + 1
            await m.ack()
            if set(handled) >= sent:
                done.set()

    tasks = {asyncio.create_task(consume(name)) for name in ("A", "B")}
    try:
        await asyncio.wait_for(done.wait(), 10)
    finally:
        # Cancel until they end: Python 3.11's asyncio.wait_for (redis-py sends every command
        # through it) drops a cancellation that arrives as the awaited send completes.
        while tasks:
            for task in tasks:
                task.cancel()
            _, tasks = await asyncio.wait(tasks, timeout=1)
    assert set(handled) == sent
    assert await applied.xrange(DLQ) == []
    assert (await applied.xpending(INBOX, "worker-a"))["pending"] == 0


async def test_trimmed_pending_entries_are_counted_and_recorded_as_dead_letters(
    make_bus: BusFactory, applied: aioredis.Redis
) -> None:
    (eid,) = await deliver(applied, INBOX, 1)
    worker = await make_bus("worker-a", visibility_timeout=0.1)
    await take(worker, 1, ack=False)
    await applied.xtrim(INBOX, maxlen=0)
    await asyncio.sleep(0.15)
    assert await worker.reclaim() == []
    assert worker.stats.trimmed_while_pending == 1
    dead = await applied.xrange(DLQ)
    assert [(f["original_entry_id"], f["group"]) for _, f in dead] == [(eid, "worker-a")]
    assert "trimmed" in dead[0][1]["reason"]


async def test_a_missing_inbox_group_says_to_apply_the_bus(make_bus: BusFactory, applied: aioredis.Redis) -> None:
    worker = await make_bus("worker-a")
    await applied.xgroup_destroy(INBOX, "worker-a")
    with pytest.raises(NotDeclaredError, match="swarm bus apply"):
        await take(worker, 1)


@pytest.mark.slow  # moved out of the quick suite (CI time budget)
async def test_a_block_longer_than_redis_py_default_socket_timeout_does_not_trip(
    make_bus: BusFactory, applied: aioredis.Redis
) -> None:
    """redis-py 8 times sockets out after 5 s; a 5.6 s BLOCK must wait quietly.

    redis-py's retry would hide a timeout by reconnecting and reading again, so the
    test counts connections Redis accepted while the read was blocked: none."""
    worker = await make_bus("worker-a", block_ms=5600, visibility_timeout=60, refresh_seconds=3600,
                            breaker_refresh_seconds=3600)

    async def late_delivery() -> int:
        await asyncio.sleep(0.5)  # the reader is connected and blocked by now
        before = (await applied.info("stats"))["total_connections_received"]
        await asyncio.sleep(4.8)
        await applied.xadd(INBOX, {"topic": "tasks.research", "message_id": "late", "sender": "planner",
                                   "payload": '{"late": true}'})
        return int(before)

    task = asyncio.create_task(late_delivery())
    got = await take(worker, 1, timeout=15)
    before = await task
    after = (await applied.info("stats"))["total_connections_received"]
    assert got[0].payload == {"late": True}
    assert after - before == 0


# -- a running bus follows a new revision of the settings and ACL table -------------------------


async def test_a_running_bus_follows_a_new_plan_and_keeps_the_last_good_one(
    redis_server: RedisServer, applied: aioredis.Redis
) -> None:
    from copy import deepcopy

    from swarm.bus.apply import apply_bus
    from swarm.spec.models import Spec, SwarmDocument
    from tests.bus.conftest import SWARM_DOC

    doc = deepcopy(SWARM_DOC)
    doc["topics"].append({"name": "tasks.extra"})
    doc["roles"]["planner"]["deny"]["publish"].append("tasks.summarize")
    doc["agents"][0]["publishes"] = ["tasks.research", "tasks.extra"]
    swarm_doc = SwarmDocument.model_validate(doc, strict=False)
    newer = desired_from_spec(Spec(swarm=swarm_doc, agents=list(swarm_doc.agents)), "sha256:test-2")

    url = agent_redis_url(redis_server.url, "lab", "planner", SECRET)  # its own Redis user: GETRANGE granted
    async with EventBus(redis_url=url, swarm="lab", agent_id="planner", refresh_seconds=0.05) as bus:
        await bus.publish("tasks.summarize", {})
        with pytest.raises(UndeclaredTopicError):
            await bus.publish("tasks.extra", {})
        mgets = (await calls(applied)).get("mget", 0)
        for _ in range(3):  # nothing changed: only the ~200-byte head of bus.json is read
            await asyncio.sleep(0.06)
            await bus.publish("tasks.research", {})
        assert (await calls(applied)).get("mget", 0) == mgets and (await calls(applied))["getrange"] >= 3

        await apply_bus(applied, newer.bus, newer.acl, secret=SECRET)
        await asyncio.sleep(0.06)
        with pytest.raises(AclDeniedError, match="deny.publish: tasks.summarize"):
            await bus.publish("tasks.summarize", {})
        assert (await bus.publish("tasks.extra", {"new": True})).status == "accepted"
        assert bus.plan is not None and bus.plan.spec_digest == "sha256:test-2"

        await applied.set("swarm:{lab}:bus", '{"swarm": "lab", "broken": true}')
        await asyncio.sleep(0.06)
        assert (await bus.publish("tasks.extra", {})).status == "accepted"  # the last good revision stays
        assert bus.plan.spec_digest == "sha256:test-2"
