"""Dedup: the reference model with an injected clock, and the real route script (run by the
router on a real redis-server, with short windows), compared entry by entry."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.bus.apply import apply_bus
from swarm.bus.dedup import DedupMark, DedupModel, Outcome, decide, window_ms
from swarm.bus.router import Router
from swarm.desired import DesiredState
from swarm.keys import SwarmKeys
from tests.bus.conftest import make_desired
from tests.support.services import RedisServer

IDS = st.sampled_from(["m1", "m2", "m3"])
TOPICS = st.sampled_from(["tasks.research", "tasks.summarize"])
SENDERS = st.sampled_from(["a", "b"])
K = SwarmKeys("lab")


def test_decide_is_px_semantics() -> None:
    assert decide(None, 5) is Outcome.ACCEPT
    assert decide(DedupMark("1-0", 10), 9) is Outcome.DUPLICATE
    assert decide(DedupMark("1-0", 10), 10) is Outcome.ACCEPT
    assert window_ms(0.0001) == 1 and window_ms(0.25) == 250


@given(
    window=st.integers(1, 50),
    steps=st.lists(st.tuples(st.integers(0, 30), TOPICS, SENDERS, IDS), max_size=40),
)
def test_model_against_first_principles(window: int, steps: list[tuple[int, str, str, str]]) -> None:
    """A publish is a duplicate iff the last *accepted* publish of the same topic+sender+id
    is younger than the window; a duplicate returns that publish's entry id."""
    model = DedupModel()
    now = 0
    accepted: dict[tuple[str, str, str], tuple[int, str]] = {}
    count: dict[str, int] = {}
    for gap, topic, sender, mid in steps:
        now += gap
        entry, dup = model.publish(topic, mid, now_ms=now, window_ms=window, sender=sender)
        last = accepted.get((topic, sender, mid))
        if last is not None and now - last[0] < window:
            assert dup and entry == last[1]
        else:
            assert not dup
            accepted[(topic, sender, mid)] = (now, entry)
            count[topic] = count.get(topic, 0) + 1
    for topic in ("tasks.research", "tasks.summarize"):
        assert model.entry_count(topic) == count.get(topic, 0)


# -- the real script ----------------------------------------------------------------------

WINDOW = 0.25  # seconds
MARGIN_MS = 40  # outcomes this close to a window's end may go either way on a real clock


@pytest.fixture(scope="module")
def dedup_redis(tmp_path_factory: pytest.TempPathFactory) -> RedisServer:
    server = RedisServer(tmp_path_factory.mktemp("dedup-redis"), appendonly=False).start()
    yield server  # type: ignore[misc]
    server.stop()


async def _server_ms(redis: aioredis.Redis) -> int:
    s, us = await redis.time()
    return int(s) * 1000 + int(us) // 1000


async def _route(router: Router, admin: aioredis.Redis, topic: str, mid: str, payload: Any = None) -> dict[str, str]:
    """One raw XADD to the planner's outbox, routed; its receipt."""
    await admin.xadd(K.outbox("planner"), {"topic": topic, "payload": json.dumps(payload or {"id": mid}), "message_id": mid})
    while not await router.route_batch():
        pass
    (_, receipt), = await admin.xrevrange(K.receipts("planner"), count=1)
    return receipt


async def _run_against_redis(url: str, desired: DesiredState, steps: list[tuple[int, str, str]]) -> None:
    admin = aioredis.Redis.from_url(url, decode_responses=True)
    await admin.flushdb()
    await apply_bus(admin, desired.bus, desired.acl)
    router = Router(redis_url=url, swarm="lab", block_ms=10, dedup_window_seconds=WINDOW)
    await router.connect()
    try:
        marks: dict[tuple[str, str], DedupMark] = {}
        accepted: dict[str, int] = {}
        for sleep_ms, topic, mid in steps:
            if sleep_ms:
                await asyncio.sleep(sleep_ms / 1000)
            before = await _server_ms(admin)
            receipt = await _route(router, admin, topic, mid)
            after = await _server_ms(admin)
            duplicate = receipt["status"] == "duplicate"
            assert receipt["status"] in ("routed", "duplicate")
            mark = marks.get((topic, mid))
            ambiguous = mark is not None and abs(mark.expires_at_ms - before) <= MARGIN_MS + (after - before)
            if not ambiguous:
                expect_dup = mark is not None and decide(mark, before) is Outcome.DUPLICATE
                assert duplicate == expect_dup, (topic, mid, mark, before)
            if duplicate:
                assert mark is not None and receipt["entry_id"] == mark.entry_id
            else:
                marks[(topic, mid)] = DedupMark(receipt["entry_id"], before + window_ms(WINDOW))
                accepted[topic] = accepted.get(topic, 0) + 1
        for topic in ("tasks.research", "tasks.summarize"):
            assert await admin.xlen(K.topic(topic)) == accepted.get(topic, 0)
            # every subscriber's inbox got exactly the accepted entries of its topics
        assert await admin.xlen(K.inbox("worker-a")) == accepted.get("tasks.research", 0)
        assert await admin.xlen(K.inbox("worker-b")) == sum(accepted.values())
    finally:
        await router.close()
        await admin.aclose()


@settings(max_examples=10)
@given(steps=st.lists(st.tuples(st.sampled_from([0, 0, 0, 90, 260]), TOPICS, IDS), min_size=1, max_size=8))
def test_route_script_matches_the_model(dedup_redis: RedisServer, steps: list[tuple[int, str, str]]) -> None:
    asyncio.run(_run_against_redis(dedup_redis.url, make_desired(), steps))


@pytest.fixture
async def routed(redis_server: RedisServer, applied: aioredis.Redis) -> Any:
    async with Router(redis_url=redis_server.url, swarm="lab", block_ms=10, dedup_window_seconds=0.3) as router:
        yield router


async def test_duplicates_do_not_extend_the_window(routed: Router, admin: aioredis.Redis) -> None:
    start = time.monotonic()
    first = await _route(routed, admin, "tasks.research", "keep", {"n": 1})
    await asyncio.sleep(0.2)
    dup = await _route(routed, admin, "tasks.research", "keep", {"n": 2})
    assert dup["status"] == "duplicate" and dup["entry_id"] == first["entry_id"]
    # Past the first window but inside a window restarted by the duplicate: accepted.
    await asyncio.sleep(max(0.0, 0.36 - (time.monotonic() - start)))
    again = await _route(routed, admin, "tasks.research", "keep", {"n": 3})
    assert again["status"] == "routed" and again["entry_id"] != first["entry_id"]
    ttl = await admin.pttl(K.dedup("tasks.research", "planner", "keep"))
    assert 0 < ttl <= 300
    assert [json.loads(f["payload"])["n"] for _, f in await admin.xrange(K.inbox("worker-a"))] == [1, 3]


async def test_same_id_on_two_topics_and_every_subscriber_gets_each(routed: Router, admin: aioredis.Redis) -> None:
    a = await _route(routed, admin, "tasks.research", "same")
    b = await _route(routed, admin, "tasks.summarize", "same")
    assert a["status"] == b["status"] == "routed"
    # the mark is per topic and sender, not per consumer: every subscriber gets its copy
    for agent, topics in (("worker-a", ["tasks.research"]), ("worker-b", ["tasks.research", "tasks.summarize"]),
                          ("watcher", ["tasks.research", "tasks.summarize"])):
        got = [(f["topic"], f["message_id"]) for _, f in await admin.xrange(K.inbox(agent))]
        assert got == [(t, "same") for t in topics]


async def test_a_failing_append_leaves_no_mark(routed: Router, admin: aioredis.Redis) -> None:
    """Lua has no rollback: the script checks every key first, so a wrong-typed topic log marks nothing."""
    stream = K.topic("tasks.research")
    await admin.delete(stream)
    await admin.set(stream, "not a stream")
    refused = await _route(routed, admin, "tasks.research", "unlucky")
    assert (refused["status"], refused["reason"]) == ("refused", "route_failed")
    assert await admin.exists(K.dedup("tasks.research", "planner", "unlucky")) == 0
    assert await admin.xlen(K.inbox("worker-a")) == 0
    await admin.delete(stream)
    missing = await _route(routed, admin, "tasks.research", "unlucky")  # the router never creates a topic log
    assert (missing["status"], missing["reason"]) == ("refused", "topic_missing") and not await admin.exists(stream)
    assert await admin.exists(K.dedup("tasks.research", "planner", "unlucky")) == 0
    desired = make_desired()
    await apply_bus(admin, desired.bus, desired.acl)  # the bus apply makes it again
    result = await _route(routed, admin, "tasks.research", "unlucky")
    assert result["status"] == "routed" and await admin.xlen(stream) == 1


async def test_each_topic_uses_its_own_window_from_the_plan(redis_server: RedisServer) -> None:
    """The window is the topic's dedup_window_seconds when set, else the bus default (PX on Redis' clock)."""
    from tests.bus.conftest import SWARM_DOC

    doc = {**SWARM_DOC, "topics": [{**t, "dedup_window_seconds": 900} if t["name"] == "tasks.summarize" else t
                                   for t in SWARM_DOC["topics"]]}
    desired = make_desired(doc)
    admin = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        await apply_bus(admin, desired.bus, desired.acl)
        async with Router(redis_url=redis_server.url, swarm="lab", block_ms=10) as router:
            await _route(router, admin, "tasks.research", "w")
            await _route(router, admin, "tasks.summarize", "w")
        default_ttl = await admin.pttl(K.dedup("tasks.research", "planner", "w"))
        topic_ttl = await admin.pttl(K.dedup("tasks.summarize", "planner", "w"))
        assert 59_000 < default_ttl <= 60_000 and 899_000 < topic_ttl <= 900_000
    finally:
        await admin.aclose()
