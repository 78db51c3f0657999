"""The agent side through a real router (``swarm bus route`` as its own process, or the
same Router in process for the property test): receipts, one copy per (sender, id),
least privilege enforced twice (in process and by the router), refusals raised as the
matching errors, and the ACL property end to end."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.acl import matches
from swarm.bus import EventBus, Message
from swarm.bus.apply import agent_redis_url, apply_bus
from swarm.bus.breaker_store import BreakerStore, policy_from_settings
from swarm.bus.router import Router
from swarm.desired import DesiredState
from swarm.errors import AclDeniedError, BreakerOpenError
from tests.bus.conftest import SECRET, BusFactory, make_desired
from tests.support.router import RouterFactory
from tests.support.services import RedisServer

TOPIC_LOG = "swarm:{lab}:topic:tasks.research"


@pytest.fixture
def router(redis_server: RedisServer, applied: aioredis.Redis, router_factory: RouterFactory) -> Any:
    return router_factory(redis_url=redis_server.url, swarm="lab")


async def drain(bus: EventBus, *, idle: float = 0.6, limit: float = 10.0) -> list[Message]:
    """Every message the bus's inbox yields until none came for ``idle`` seconds (acking each)."""
    got: list[Message] = []

    async def run() -> None:
        async for m in bus.subscribe():
            got.append(m)
            await m.ack()

    task = asyncio.create_task(run())
    loop = asyncio.get_running_loop()
    start, seen, last = loop.time(), -1, loop.time()
    while loop.time() - start < limit:
        await asyncio.sleep(0.05)
        if len(got) != seen:
            seen, last = len(got), loop.time()
        elif got and loop.time() - last >= idle:
            break
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return got


async def test_wait_returns_the_topic_entry_and_a_retry_is_a_duplicate_delivered_once(
    make_bus: BusFactory, applied: aioredis.Redis, router: Any
) -> None:
    planner = await make_bus("planner")
    first = await planner.publish("tasks.research", {"n": 1}, message_id="job-1", wait=True)
    again = await planner.publish("tasks.research", {"n": 1}, message_id="job-1", wait=True)
    plain = await planner.publish("tasks.research", {"n": 2}, wait=True)
    assert (first.status, again.status, plain.status) == ("routed", "duplicate", "routed")
    assert again.entry_id == first.entry_id and again.outbox_id != first.outbox_id
    log = await applied.xrange(TOPIC_LOG)
    assert [e[0] for e in log] == [first.entry_id, plain.entry_id]
    assert log[0][1] == {"message_id": "job-1", "sender": "planner", "payload": '{"n":1}',
                         "content_type": "application/json"}
    assert plain.message_id == f"planner:{plain.outbox_id}" == log[1][1]["message_id"]
    # every subscriber of the topic gets each message exactly once, with the topic entry id
    for agent in ("worker-a", "worker-b", "watcher"):
        got = await drain(await make_bus(agent))
        assert [(m.message_id, m.topic_entry_id, m.payload, m.sender, m.deliveries) for m in got] == [
            ("job-1", first.entry_id, {"n": 1}, "planner", 1),
            (plain.message_id, plain.entry_id, {"n": 2}, "planner", 1),
        ]
    assert await applied.xlen("swarm:{lab}:outbox:planner") == 0  # routed entries are deleted


async def test_a_receiver_gets_one_copy_of_retries_published_without_waiting(
    make_bus: BusFactory, router: Any
) -> None:
    planner = await make_bus("planner")
    accepted = [await planner.publish("tasks.research", {"try": i}, message_id="same") for i in range(3)]
    accepted += await planner.publish_many([("tasks.research", {"try": 9}, "same"), ("tasks.research", {"other": 1})])
    assert {r.status for r in accepted} == {"accepted"}
    got = await drain(await make_bus("worker-a"))
    assert [m.payload for m in got] == [{"try": 0}, {"other": 1}]


async def test_publish_many_with_wait_returns_each_receipt_in_order(
    make_bus: BusFactory, applied: aioredis.Redis, router: Any
) -> None:
    planner = await make_bus("planner")
    results = await planner.publish_many(
        [("tasks.research", {"i": 0}, "b-0"), ("tasks.summarize", {"i": 1}, "b-1"), ("tasks.research", {"i": 0}, "b-0")],
        wait=True, timeout=10,
    )
    assert [(r.message_id, r.status) for r in results] == [("b-0", "routed"), ("b-1", "routed"), ("b-0", "duplicate")]
    assert results[2].entry_id == results[0].entry_id
    assert [e[0] for e in await applied.xrange(TOPIC_LOG)] == [results[0].entry_id]
    assert [e[0] for e in await applied.xrange("swarm:{lab}:topic:tasks.summarize")] == [results[1].entry_id]


async def test_a_topic_the_role_allows_but_the_agent_did_not_declare_is_refused_twice(
    redis_server: RedisServer, make_bus: BusFactory, applied: aioredis.Redis, router: Any
) -> None:
    """worker-a's role (worker) allows results.*, worker-a declares only results.research.
    In process: AclDeniedError. A raw XADD with the agent's own Redis user that skips the
    client: refused by the router (receipt, refused stream), nothing delivered."""
    worker = await make_bus("worker-a")
    with pytest.raises(AclDeniedError, match="does not declare it"):
        await worker.publish("results.summary", {"sneaky": True})
    raw = aioredis.Redis.from_url(agent_redis_url(redis_server.url, "lab", "worker-a", SECRET))
    try:
        last = await raw.xrevrange("swarm:{lab}:receipts:worker-a", count=1)
        oid = (await raw.xadd("swarm:{lab}:outbox:worker-a", {"topic": "results.summary", "payload": "{}"})).decode()
        receipts = await worker.wait_for_receipts([oid], after=last[0][0].decode() if last else "0-0", timeout=10)
    finally:
        await raw.aclose()
    assert receipts[oid]["status"] == "refused" and receipts[oid]["reason"] == "acl_denied"
    refused = await applied.xrange("swarm:{lab}:refused")
    assert [(f["sender"], f["outbox_id"], f["reason"]) for _, f in refused] == [("worker-a", oid, "acl_denied")]
    assert await applied.xlen("swarm:{lab}:topic:results.summary") == 0
    for agent in ("planner", "watcher"):  # the topic's subscribers
        assert await applied.xlen(f"swarm:{{lab}}:inbox:{agent}") == 0
    # the same agent's declared topic still goes through
    assert (await worker.publish("results.research", {"fine": True}, wait=True)).status == "routed"


async def test_a_router_refusal_is_raised_as_the_matching_error(
    make_bus: BusFactory, applied: aioredis.Redis, desired: DesiredState, router: Any
) -> None:
    """The breaker opened after the agent's cached read: the client lets the publish through,
    the router refuses it, wait=True raises BreakerOpenError, and the next publish is refused
    in process (a breaker refusal makes the client read its breaker again)."""
    planner = await make_bus("planner", breaker_refresh_seconds=3600)
    store = BreakerStore(applied, "lab", policy_from_settings(desired.bus.settings.breaker))
    for _ in range(4):
        await store.record_failure("planner", await store.acquire("planner") or 0)
    with pytest.raises(BreakerOpenError, match="breaker_open"):
        await planner.publish("tasks.research", {"n": 1}, wait=True, timeout=10)
    with pytest.raises(BreakerOpenError, match="health probe is allowed after"):
        await planner.publish("tasks.research", {"n": 2})
    assert await applied.xlen(TOPIC_LOG) == 0


# -- ACL property, end to end through the router -----------------------------------------------

TOPIC_SET = ["a.x", "a.y", "a.x.deep", "b.x", "b.y.z"]
PATTERNS = st.sampled_from(["a.*", "a.>", "*.x", ">", "b.>", "a.x", "*.y.*"])


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = RedisServer(tmp_path_factory.mktemp("acl-redis"), appendonly=False).start()
    yield server
    server.stop()


@settings(max_examples=12)
@given(allow=st.lists(PATTERNS, min_size=1, max_size=2, unique=True), deny=st.lists(PATTERNS, max_size=1))
def test_a_subscriber_gets_every_permitted_topic_it_declares_and_no_other(
    acl_redis: RedisServer, allow: list[str], deny: list[str]
) -> None:
    asyncio.run(_acl_roundtrip(acl_redis.url, allow, deny))


async def _acl_roundtrip(url: str, allow: list[str], deny: list[str]) -> None:
    doc = {
        "apiVersion": "swarm/v1", "kind": "Swarm", "metadata": {"name": "aclp"},
        "topics": [{"name": t} for t in TOPIC_SET],
        "roles": {"pub": {"publish": [">"]}, "sub": {"subscribe": allow, "deny": {"subscribe": deny}}},
        "agents": [
            {"id": "p", "role": "pub", "port": 1, "publishes": TOPIC_SET},
            # declares every topic; the compiler keeps those its role permits (declared ∩ role)
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
                EventBus(redis_url=url, swarm="aclp", agent_id="s", block_ms=50) as sub, \
                Router(redis_url=url, swarm="aclp", block_ms=50) as router:
            assert sorted(sub.rights.subscribe) == expected
            await pub.publish_many([(t, {"t": t}) for t in TOPIC_SET])
            while await router.route_batch():
                pass
            got: list[Message] = []
            if expected:
                async for m in sub.subscribe():
                    got.append(m)
                    await m.ack()
                    if len(got) == len(expected):
                        break
            inbox = await admin.xinfo_stream("swarm:{aclp}:inbox:s")
            assert inbox["entries-added"] == len(expected)  # delivered once each ...
            assert inbox["length"] == 0  # ... and deleted by the acks
            assert sorted(m.topic for m in got) == expected
            assert all(m.payload == {"t": m.topic} for m in got)
    finally:
        await admin.aclose()

