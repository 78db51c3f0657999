"""Dedup: the reference model with an injected clock, and the real publish script on a real
redis-server with short windows, compared publish by publish."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.bus.bus import EventBus
from swarm.bus.dedup import DedupMark, DedupModel, Outcome, decide, window_ms
from swarm.desired import DesiredState
from tests.bus.conftest import make_desired
from tests.support.services import RedisServer

IDS = st.sampled_from(["m1", "m2", "m3"])
TOPICS = st.sampled_from(["tasks.research", "tasks.summarize"])


def test_decide_is_px_semantics() -> None:
    assert decide(None, 5) is Outcome.ACCEPT
    assert decide(DedupMark("1-0", 10), 9) is Outcome.DUPLICATE
    assert decide(DedupMark("1-0", 10), 10) is Outcome.ACCEPT
    assert window_ms(0.0001) == 1 and window_ms(0.25) == 250


@given(
    window=st.integers(1, 50),
    steps=st.lists(st.tuples(st.integers(0, 30), TOPICS, IDS), max_size=40),
)
def test_model_against_first_principles(window: int, steps: list[tuple[int, str, str]]) -> None:
    """A publish is a duplicate iff the last *accepted* publish of the same topic+id is
    younger than the window; a duplicate returns that publish's entry id."""
    model = DedupModel()
    now = 0
    accepted: dict[tuple[str, str], tuple[int, str]] = {}
    count: dict[str, int] = {}
    for gap, topic, mid in steps:
        now += gap
        entry, dup = model.publish(topic, mid, now_ms=now, window_ms=window)
        last = accepted.get((topic, mid))
        if last is not None and now - last[0] < window:
            assert dup and entry == last[1]
        else:
            assert not dup
            accepted[(topic, mid)] = (now, entry)
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


async def _run_against_redis(url: str, desired: DesiredState, steps: list[tuple[int, str, str]]) -> None:
    admin = aioredis.Redis.from_url(url, decode_responses=True)
    await admin.flushdb()
    bus = EventBus(
        redis_url=url, swarm="lab", agent_id="planner", role="planner",
        plan=desired.bus, acl=desired.acl, dedup_window_seconds=WINDOW,
    )
    await bus.connect()
    try:
        marks: dict[tuple[str, str], DedupMark] = {}
        accepted: dict[str, int] = {}
        for sleep_ms, topic, mid in steps:
            if sleep_ms:
                await asyncio.sleep(sleep_ms / 1000)
            before = await _server_ms(admin)
            result = await bus.publish(topic, {"id": mid}, message_id=mid)
            after = await _server_ms(admin)
            mark = marks.get((topic, mid))
            ambiguous = mark is not None and abs(mark.expires_at_ms - before) <= MARGIN_MS + (after - before)
            if not ambiguous:
                expect_dup = mark is not None and decide(mark, before) is Outcome.DUPLICATE
                assert result.duplicate == expect_dup, (topic, mid, mark, before)
            if result.duplicate:
                assert mark is not None and result.entry_id == mark.entry_id
            else:
                marks[(topic, mid)] = DedupMark(result.entry_id, before + window_ms(WINDOW))
                accepted[topic] = accepted.get(topic, 0) + 1
        for topic in ("tasks.research", "tasks.summarize"):
            assert await admin.xlen(f"swarm:{{lab}}:topic:{topic}") == accepted.get(topic, 0)
    finally:
        await bus.close()
        await admin.aclose()


@settings(max_examples=10)
@given(steps=st.lists(st.tuples(st.sampled_from([0, 0, 0, 90, 260]), TOPICS, IDS), min_size=1, max_size=8))
def test_lua_script_matches_the_model(dedup_redis: RedisServer, steps: list[tuple[int, str, str]]) -> None:
    asyncio.run(_run_against_redis(dedup_redis.url, make_desired(), steps))


async def test_duplicates_do_not_extend_the_window(dedup_redis: RedisServer, desired: DesiredState) -> None:
    bus = EventBus(
        redis_url=dedup_redis.url, swarm="lab", agent_id="planner", role="planner",
        plan=desired.bus, acl=desired.acl, dedup_window_seconds=0.3,
    )
    await bus.connect()
    try:
        await bus.redis.flushdb()
        start = time.monotonic()
        first = await bus.publish("tasks.research", {"n": 1}, message_id="keep")
        await asyncio.sleep(0.2)
        dup = await bus.publish("tasks.research", {"n": 2}, message_id="keep")
        assert dup.duplicate and dup.entry_id == first.entry_id
        # Past the first window but inside a window restarted by the duplicate: accepted.
        await asyncio.sleep(max(0.0, 0.36 - (time.monotonic() - start)))
        again = await bus.publish("tasks.research", {"n": 3}, message_id="keep")
        assert not again.duplicate and again.entry_id != first.entry_id
        ttl = await bus.redis.pttl("swarm:{lab}:dedup:tasks.research:keep")
        assert 0 < ttl <= 300
    finally:
        await bus.close()


async def test_same_id_on_two_topics_and_two_subscribers_both_get_it(make_bus) -> None:  # type: ignore[no-untyped-def]
    planner = await make_bus("planner")
    a = await planner.publish("tasks.research", {"x": 1}, message_id="same")
    b = await planner.publish("tasks.summarize", {"x": 1}, message_id="same")
    assert not a.duplicate and not b.duplicate
    for agent in ("worker-a", "worker-b"):  # two groups on tasks.research: the mark is per topic, not per consumer
        bus = await make_bus(agent)
        got = []
        async for m in bus.subscribe(["tasks.research"]):
            got.append(m.message_id)
            await m.ack()
            break
        assert got == ["same"]


async def test_a_failing_append_leaves_no_mark(make_bus, applied: aioredis.Redis) -> None:  # type: ignore[no-untyped-def]
    """Lua has no rollback: the script appends before it marks, so an XADD error marks nothing."""
    from swarm.errors import BusError

    planner = await make_bus("planner")
    stream = "swarm:{lab}:topic:tasks.research"
    await applied.delete(stream)
    await applied.set(stream, "not a stream")
    with pytest.raises(BusError, match="WRONGTYPE"):
        await planner.publish("tasks.research", {"n": 1}, message_id="unlucky")
    assert await applied.exists("swarm:{lab}:dedup:tasks.research:unlucky") == 0
    await applied.delete(stream)
    result = await planner.publish("tasks.research", {"n": 1}, message_id="unlucky")
    assert not result.duplicate and await applied.xlen(stream) == 1


async def test_each_topic_uses_its_own_window_from_the_plan(redis_server: RedisServer) -> None:
    """The window is the topic's dedup_window_seconds when set, else the bus default (PX on Redis' clock)."""
    from swarm.bus.apply import apply_bus
    from tests.bus.conftest import SWARM_DOC

    doc = {**SWARM_DOC, "topics": [{**t, "dedup_window_seconds": 900} if t["name"] == "tasks.summarize" else t
                                   for t in SWARM_DOC["topics"]]}
    desired = make_desired(doc)
    admin = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        await apply_bus(admin, desired.bus, desired.acl)
        async with EventBus(redis_url=redis_server.url, swarm="lab", agent_id="planner") as bus:
            await bus.publish_many([("tasks.research", {}, "w"), ("tasks.summarize", {}, "w")])
        default_ttl = await admin.pttl("swarm:{lab}:dedup:tasks.research:w")
        topic_ttl = await admin.pttl("swarm:{lab}:dedup:tasks.summarize:w")
        assert 59_000 < default_ttl <= 60_000 and 899_000 < topic_ttl <= 900_000
    finally:
        await admin.aclose()
