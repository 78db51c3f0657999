"""EventBus on a real redis-server: refusals, publish_many, delivery, redelivery, dead letters,
and the ACL property (a subscriber of a pattern gets every matching topic and no other)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.acl import matches
from swarm.bus import EventBus, Message
from swarm.bus.apply import apply_bus
from swarm.bus.breaker_store import BreakerStore, policy_from_settings
from swarm.desired import DesiredState, desired_from_spec
from swarm.errors import (
    AclDeniedError,
    BreakerOpenError,
    BusError,
    InvalidRequestError,
    PayloadTooLargeError,
    TransientError,
    UndeclaredTopicError,
)
from tests.bus.conftest import BusFactory, make_desired
from tests.support.services import RedisServer


async def take(bus: EventBus, topics: list[str], n: int, *, ack: bool = True, timeout: float = 5.0) -> list[Message]:
    got: list[Message] = []

    async def run() -> None:
        async for m in bus.subscribe(topics):
            got.append(m)
            if ack:
                await m.ack()
            if len(got) >= n:
                return

    await asyncio.wait_for(run(), timeout)
    return got


async def test_refusals_are_distinct_and_say_why(make_bus: BusFactory) -> None:
    planner = await make_bus("planner")
    with pytest.raises(UndeclaredTopicError, match="tasks.nope"):
        await planner.publish("tasks.nope", {})
    with pytest.raises(AclDeniedError, match=r"deny.publish: tasks.admin.>"):
        await planner.publish("tasks.admin.reset", {})
    with pytest.raises(AclDeniedError, match="default deny"):
        await planner.publish("results.research", {})
    with pytest.raises(PayloadTooLargeError, match="4096"):
        await planner.publish("tasks.research", {"x": "y" * 5000})
    with pytest.raises(InvalidRequestError, match="JSON"):
        await planner.publish("tasks.research", {"x": object()})
    with pytest.raises(InvalidRequestError, match="message id"):
        await planner.publish("tasks.research", {}, message_id="has space")
    with pytest.raises(AclDeniedError, match="subscribe"):
        async for _ in planner.subscribe(["tasks.research"]):
            pass
    for bad in ([], "results.research"):
        with pytest.raises(InvalidRequestError, match="subscribe"):
            async for _ in planner.subscribe(bad):  # type: ignore[arg-type]
                pass
    assert planner.can_publish("planner", "tasks.research") and not planner.can_subscribe("planner", "tasks.research")
    assert planner.can_subscribe("observer", "tasks.research") and not planner.can_publish("observer", "tasks.research")
    assert planner.decide("publish", "tasks.admin.reset").rule == "deny.publish: tasks.admin.>"
    assert planner.role == "planner"  # taken from the plan in Redis


async def test_connect_before_apply_is_transient(redis_server: RedisServer) -> None:
    bus = EventBus(redis_url=redis_server.url, swarm="lab", agent_id="planner")
    with pytest.raises(TransientError, match="swarm bus apply"):
        await bus.connect()
    await bus.close()


async def test_corrupt_settings_in_redis_are_a_clear_bus_error(redis_server: RedisServer, applied: aioredis.Redis) -> None:
    await applied.set("swarm:{lab}:bus", '{"swarm": "lab"}')
    bus = EventBus(redis_url=redis_server.url, swarm="lab", agent_id="planner")
    with pytest.raises(BusError, match=r"swarm:\{lab\}:bus.*not valid"):
        await bus.connect()


async def test_open_breaker_blocks_publishing_with_when_to_retry(make_bus: BusFactory, applied: aioredis.Redis, desired: DesiredState) -> None:
    planner = await make_bus("planner")
    store = BreakerStore(applied, "lab", policy_from_settings(desired.bus.settings.breaker))
    for _ in range(4):
        await store.record_failure("planner", await store.acquire("planner") or 0)
    with pytest.raises(BreakerOpenError, match=r"breaker is open.*health probe is allowed after"):
        await planner.publish("tasks.research", {"n": 1})
    with pytest.raises(BreakerOpenError):
        await planner.publish_many([("tasks.research", {"n": 2})])
    assert await applied.xlen("swarm:{lab}:topic:tasks.research") == 0
    await store.reset("planner")
    assert not (await planner.publish("tasks.research", {"n": 3})).duplicate


async def test_publish_many_keeps_order_and_dedups(make_bus: BusFactory, applied: aioredis.Redis) -> None:
    planner = await make_bus("planner")
    items: list[tuple[Any, ...]] = [("tasks.research", {"i": i}, f"id-{i % 3}") for i in range(6)]
    items.append(("tasks.summarize", {"i": 6}))
    results = await planner.publish_many(items)
    assert [r.duplicate for r in results] == [False, False, False, True, True, True, False]
    assert [r.entry_id for r in results[3:6]] == [r.entry_id for r in results[:3]]
    assert await applied.xlen("swarm:{lab}:topic:tasks.research") == 3
    assert await planner.publish_many([]) == []
    many = await planner.publish_many([("tasks.summarize", {"i": i}, f"c-{i}") for i in range(250)])  # 3 script calls
    assert [r.message_id for r in many] == [f"c-{i}" for i in range(250)] and not any(r.duplicate for r in many)
    entries = await applied.xrange("swarm:{lab}:topic:tasks.summarize")
    assert [e[0] for e in entries[1:]] == [r.entry_id for r in many]
    with pytest.raises(AclDeniedError):  # checked before anything is sent
        await planner.publish_many([("tasks.research", {}), ("tasks.admin.reset", {})])
    assert await applied.xlen("swarm:{lab}:topic:tasks.research") == 3


async def test_every_group_gets_each_message_once_with_its_fields(make_bus: BusFactory) -> None:
    planner = await make_bus("planner")
    sent = [await planner.publish("tasks.research", {"n": i}) for i in range(3)]
    for agent in ("worker-a", "worker-b", "watcher"):
        got = await take(await make_bus(agent), ["tasks.research"], 3)
        assert [m.entry_id for m in got] == [r.entry_id for r in sent]
        assert [m.payload for m in got] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert {m.sender for m in got} == {"planner"} and {m.deliveries for m in got} == {1}
        assert [m.message_id for m in got] == [r.message_id for r in sent]


async def test_unacked_entries_are_redelivered_then_dead_lettered(make_bus: BusFactory, applied: aioredis.Redis) -> None:
    planner = await make_bus("planner")
    kept = await planner.publish("tasks.research", {"n": "poison"})
    worker = await make_bus("worker-a", visibility_timeout=0.15)
    got = await take(worker, ["tasks.research"], 2, ack=False)  # max_deliveries 2 in the test plan
    assert [m.deliveries for m in got] == [1, 2]
    assert {m.entry_id for m in got} == {kept.entry_id}
    await asyncio.sleep(0.2)
    assert await worker.reclaim(["tasks.research"]) == []  # third time: dead letter, not delivery
    dead = await applied.xrange("swarm:{lab}:dlq:tasks.research")
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields["original_entry_id"] == kept.entry_id and fields["message_id"] == kept.message_id
    assert fields["group"] == "worker-a" and "not acked" in fields["reason"]
    assert await applied.xpending("swarm:{lab}:topic:tasks.research", "worker-a") == {
        "pending": 0, "min": None, "max": None, "consumers": []
    }
    assert worker.stats.dead_lettered == 1


STREAM = "swarm:{lab}:topic:tasks.research"


async def test_reclaim_claims_one_page_a_call_and_keeps_the_cursor(make_bus: BusFactory, applied: aioredis.Redis) -> None:
    """One XAUTOCLAIM page (read_count entries) a call; the next call goes on from the cursor,
    not from the start, and after the end it starts over: all entries come back, in order."""
    planner = await make_bus("planner")
    sent = [r.entry_id for r in await planner.publish_many([("tasks.research", {"i": i}) for i in range(230)])]
    await applied.xreadgroup("worker-a", "crashed", {STREAM: ">"}, count=1000)  # read, never acked
    worker = await make_bus("worker-a", visibility_timeout=0.1, read_count=100, max_deliveries=5)
    pages: list[list[Message]] = []
    for _ in range(3):
        await asyncio.sleep(0.15)  # every entry idle again, those of earlier pages too
        pages.append(await worker.reclaim(["tasks.research"]))
    assert [len(p) for p in pages] == [100, 100, 30]
    assert [m.entry_id for p in pages for m in p] == sent
    assert {m.deliveries for p in pages for m in p} == {2} and worker.stats.redelivered == 230
    await asyncio.sleep(0.15)
    wrapped = await worker.reclaim(["tasks.research"])  # the cursor reached 0-0: from the start again
    assert [m.entry_id for m in wrapped] == sent[:100] and {m.deliveries for m in wrapped} == {3}


async def test_a_backlog_is_reclaimed_a_batch_at_a_time_so_no_handled_entry_is_dead_lettered(
    make_bus: BusFactory, applied: aioredis.Redis
) -> None:
    """A crashed consumer left 60 entries pending. Two consumers take them over; a batch of 8
    handled well within the visibility timeout must not be claimed again by the other
    consumer (claiming all 60 at once did: their idle clocks ran out while they waited)."""
    planner = await make_bus("planner")
    sent = {r.entry_id for r in await planner.publish_many([("tasks.research", {"i": i}) for i in range(60)])}
    await applied.xreadgroup("worker-a", "crashed", {STREAM: ">"}, count=1000)
    await asyncio.sleep(0.55)
    handled: dict[str, int] = {}
    done = asyncio.Event()

    async def consume(name: str) -> None:
        bus = await make_bus("worker-a", consumer_name=name, visibility_timeout=0.5, read_count=8, max_deliveries=2)
        async for m in bus.subscribe(["tasks.research"]):
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
    assert await applied.xrange("swarm:{lab}:dlq:tasks.research") == []
    assert (await applied.xpending(STREAM, "worker-a"))["pending"] == 0


async def test_reclaim_ends_with_a_client_without_decode_responses(
    redis_server: RedisServer, applied: aioredis.Redis, make_bus: BusFactory
) -> None:
    """Such a client answers the cursor as b"0-0": reclaim must still see the end."""
    planner = await make_bus("planner")
    await planner.publish_many([("tasks.research", {"i": i}) for i in range(5)])
    await applied.xreadgroup("worker-a", "crashed", {STREAM: ">"}, count=1000)
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        worker = await make_bus("worker-a", redis_url=None, redis=raw, visibility_timeout=0.1, read_count=2)
        await asyncio.sleep(0.15)
        for _ in range(4):  # pages of 2, 2, 1, then the end seen, from the start again
            await asyncio.wait_for(worker.reclaim(["tasks.research"]), 5)
        assert worker.stats.redelivered == 5
    finally:
        await raw.aclose()


async def test_trimmed_pending_entries_are_counted_and_recorded_as_dead_letters(make_bus: BusFactory, applied: aioredis.Redis) -> None:
    planner = await make_bus("planner")
    await planner.publish("tasks.research", {"n": 1})
    worker = await make_bus("worker-a", visibility_timeout=0.1)
    got = await take(worker, ["tasks.research"], 1, ack=False)
    await applied.xtrim("swarm:{lab}:topic:tasks.research", maxlen=0)
    await asyncio.sleep(0.15)
    assert await worker.reclaim(["tasks.research"]) == []
    assert worker.stats.trimmed_while_pending == 1
    dead = await applied.xrange("swarm:{lab}:dlq:tasks.research")
    assert [(f["original_entry_id"], f["group"]) for _, f in dead] == [(got[0].entry_id, "worker-a")]
    assert "trimmed" in dead[0][1]["reason"]


# -- ACL property, end to end ---------------------------------------------------------------

TOPIC_SET = ["a.x", "a.y", "a.x.deep", "b.x", "b.y.z"]
PATTERNS = st.sampled_from(["a.*", "a.>", "*.x", ">", "b.>", "a.x", "*.y.*"])


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> RedisServer:
    server = RedisServer(tmp_path_factory.mktemp("acl-redis"), appendonly=False).start()
    yield server  # type: ignore[misc]
    server.stop()


@settings(max_examples=12)
@given(allow=st.lists(PATTERNS, min_size=1, max_size=2, unique=True), deny=st.lists(PATTERNS, max_size=1))
def test_subscriber_of_patterns_gets_every_matching_topic_and_no_other(acl_redis: RedisServer, allow: list[str], deny: list[str]) -> None:
    asyncio.run(_acl_roundtrip(acl_redis.url, allow, deny))


async def _acl_roundtrip(url: str, allow: list[str], deny: list[str]) -> None:
    doc = {
        "apiVersion": "swarm/v1", "kind": "Swarm", "metadata": {"name": "aclp"},
        "topics": [{"name": t} for t in TOPIC_SET],
        "roles": {"pub": {"publish": [">"]}, "sub": {"subscribe": allow, "deny": {"subscribe": deny}}},
        "agents": [
            {"id": "p", "role": "pub", "port": 1, "publishes": TOPIC_SET},
            {"id": "s", "role": "sub", "port": 2, "subscribes": TOPIC_SET},
        ],
    }
    desired = make_desired(doc)
    admin = aioredis.Redis.from_url(url, decode_responses=True)
    await admin.flushdb()
    await apply_bus(admin, desired.bus, desired.acl)
    expected = sorted(t for t in TOPIC_SET if any(matches(p, t) for p in allow) and not any(matches(d, t) for d in deny))
    try:
        async with EventBus(redis_url=url, swarm="aclp", agent_id="p") as pub, \
                EventBus(redis_url=url, swarm="aclp", agent_id="s", block_ms=50) as sub:
            for t in TOPIC_SET:
                await pub.publish(t, {"t": t})
            allowed = [t for t in TOPIC_SET if sub.can_subscribe("sub", t)]
            assert sorted(allowed) == expected
            for t in TOPIC_SET:
                if t not in allowed:
                    with pytest.raises(AclDeniedError):
                        async for _ in sub.subscribe([t]):
                            pass
            if allowed:
                got = await take(sub, allowed, len(allowed))
                assert sorted(m.topic for m in got) == expected
                assert all(m.payload == {"t": m.topic} for m in got)
    finally:
        await admin.aclose()


async def test_a_block_longer_than_redis_py_default_socket_timeout_does_not_trip(
    make_bus: BusFactory, applied: aioredis.Redis
) -> None:
    """redis-py 8 times sockets out after 5 s; a 5.6 s BLOCK must wait quietly (DESIGN §9).

    redis-py's retry would hide a timeout by reconnecting and reading again, so the
    test counts connections Redis accepted while the read was blocked: none."""
    worker = await make_bus("worker-a", block_ms=5600, visibility_timeout=60)
    planner = await make_bus("planner")
    await planner.publish("tasks.summarize", {"warm": True})  # the publisher's connection exists now

    async def late_publish() -> int:
        await asyncio.sleep(0.5)  # the reader is connected and blocked by now
        before = (await applied.info("stats"))["total_connections_received"]
        await asyncio.sleep(4.8)
        await planner.publish("tasks.research", {"late": True})
        return int(before)

    task = asyncio.create_task(late_publish())
    got = await take(worker, ["tasks.research"], 1, timeout=15)
    before = await task
    after = (await applied.info("stats"))["total_connections_received"]
    assert got[0].payload == {"late": True}
    assert after - before == 0


# -- a running bus follows a new revision of the settings and ACL table -------------------------


async def test_a_running_bus_follows_a_new_acl_table_and_keeps_the_last_good_one(
    redis_server: RedisServer, applied: aioredis.Redis
) -> None:
    from copy import deepcopy

    from swarm.bus.apply import agent_redis_url
    from swarm.errors import UndeclaredTopicError
    from swarm.spec.models import Spec, SwarmDocument
    from tests.bus.conftest import SECRET, SWARM_DOC

    doc = deepcopy(SWARM_DOC)
    doc["topics"].append({"name": "tasks.extra"})
    doc["roles"]["planner"]["deny"]["publish"].append("tasks.summarize")
    doc["agents"][0]["publishes"] = ["tasks.research", "tasks.extra"]
    swarm_doc = SwarmDocument.model_validate(doc, strict=False)
    newer = desired_from_spec(Spec(swarm=swarm_doc, agents=list(swarm_doc.agents)), "sha256:test-2")

    async def calls(command: str) -> int:
        return int((await applied.info("commandstats")).get(f"cmdstat_{command}", {}).get("calls", 0))

    url = agent_redis_url(redis_server.url, "lab", "planner", SECRET)  # its own Redis user: GETRANGE granted
    async with EventBus(redis_url=url, swarm="lab", agent_id="planner", refresh_seconds=0.05) as bus:
        await bus.publish("tasks.summarize", {})
        with pytest.raises(UndeclaredTopicError):
            await bus.publish("tasks.extra", {})
        mgets = await calls("mget")
        for _ in range(3):  # nothing changed: only the ~200-byte head of bus.json is read
            await asyncio.sleep(0.06)
            await bus.publish("tasks.research", {})
        assert await calls("mget") == mgets and await calls("getrange") >= 3

        await apply_bus(applied, newer.bus, newer.acl, secret=SECRET)
        await asyncio.sleep(0.06)
        with pytest.raises(AclDeniedError, match="deny.publish: tasks.summarize"):
            await bus.publish("tasks.summarize", {})
        assert not (await bus.publish("tasks.extra", {"new": True})).duplicate
        assert bus.plan is not None and bus.plan.spec_digest == "sha256:test-2"

        await applied.set("swarm:{lab}:bus", '{"swarm": "lab", "broken": true}')
        await asyncio.sleep(0.06)
        assert not (await bus.publish("tasks.extra", {})).duplicate  # the last good revision stays
        assert bus.plan.spec_digest == "sha256:test-2"
