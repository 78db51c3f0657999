"""A pruned agent's streams stay gone, whatever plan the router still holds (real redis-server).

The reconciler (or ``swarm bus apply --prune``) writes the new bus settings, then deletes a
removed agent's outbox, inbox and receipts. A router reloads the settings only every
``refresh_seconds`` (or when a read fails with NOGROUP), so for a while it routes with the
old plan, which still lists the removed agent: entries it had already read and checked
(its prefetch) name the agent's inbox as a subscriber's, and its group check runs over the
old agents. Neither may bring a deleted stream back: the router never creates an outbox
(XGROUP CREATE without MKSTREAM; a missing one is left alone until it exists), and the
route script never creates an inbox or a topic log (a missing one is skipped and recorded,
reason ``inbox_missing`` / ``topic_missing``). The other agents' routing goes on.

Played by hand against an in-process :class:`~swarm.bus.router.Router` holding a stale
plan (each step is what its loop does at that moment), then with a real ``swarm bus route``
process under a steady load while the agent is pruned.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import AsyncIterator

import pytest
import redis.asyncio as aioredis

from swarm.bus.apply import apply_bus
from swarm.bus.router import Router
from swarm.desired import DesiredState
from swarm.keys import SwarmKeys
from tests.bus.conftest import SECRET, SWARM_DOC, make_desired
from tests.support.router import RouterFactory
from tests.support.services import RedisServer

from tests.bus.test_router import drain, raw  # noqa: E402,F401  (raw: a fixture, a bytes client on the applied bus)

K = SwarmKeys("lab")
GONE = "worker-b"


def _without(agent: str, digest: str) -> DesiredState:
    """The test swarm without ``agent``, under its own spec digest (the router notices a new plan by it)."""
    doc = {**SWARM_DOC, "agents": [a for a in SWARM_DOC["agents"] if a["id"] != agent]}
    d = make_desired(doc)
    return DesiredState(bus=d.bus.model_copy(update={"spec_digest": digest}),
                        acl=d.acl.model_copy(update={"spec_digest": digest}), registry=d.registry)


async def _prune(admin: aioredis.Redis, agent: str, digest: str = "sha256:pruned") -> None:
    """What a pruning pass does: new settings first, then the removed agent's streams and user deleted."""
    smaller = _without(agent, digest)
    report = await apply_bus(admin, smaller.bus, smaller.acl, prune=True, secret=SECRET)
    assert K.outbox(agent) in report.pruned_streams and K.inbox(agent) in report.pruned_streams


async def _keys_of(admin: aioredis.Redis, agent: str) -> list[str]:
    """Which of the agent's mailbox streams exist."""
    names = [K.outbox(agent), K.inbox(agent), K.receipts(agent)]
    return [n for n in names if await admin.exists(n)]


async def publish(raw: aioredis.Redis, agent: str, topic: str, message_id: str) -> None:
    await raw.xadd(K.outbox(agent), {"topic": topic, "payload": json.dumps({"m": message_id}), "message_id": message_id})


async def inbox_ids(admin: aioredis.Redis, agent: str) -> list[str]:
    return [f["message_id"] for _, f in await admin.xrange(K.inbox(agent))]


@pytest.fixture
async def stale(redis_server: RedisServer, applied: aioredis.Redis) -> AsyncIterator[Router]:
    """A router that loaded the plan with every agent and does not reload it by itself."""
    r = Router(redis_url=redis_server.url, swarm="lab", block_ms=20, reclaim_idle_ms=200, refresh_seconds=3600,
               housekeeping_seconds=3600)
    await r.connect()
    assert GONE in r.plan.agents if r.plan else False
    yield r
    await r.close()


async def test_entries_checked_with_the_old_plan_do_not_bring_back_a_pruned_subscribers_inbox(
    raw: aioredis.Redis, stale: Router, admin: aioredis.Redis
) -> None:
    """The prefetch: a batch read and checked before the prune is routed after it."""
    for mid in ("m1", "m2"):
        await publish(raw, "planner", "tasks.research", mid)  # worker-b subscribes to it in the old plan
    calls = await stale._read_prepared()
    assert calls  # read and checked: the old plan's subscribers (worker-b among them) are in the calls
    await _prune(admin, GONE)
    assert await stale._send(calls) == 2
    assert await _keys_of(admin, GONE) == []
    for agent in ("watcher", "worker-a"):
        assert await inbox_ids(admin, agent) == ["m1", "m2"]
    refused = [f for _, f in await admin.xrange(K.refused)]
    assert [(f["reason"], f["subscriber"], f["message_id"]) for f in refused] == [
        ("inbox_missing", GONE, "m1"), ("inbox_missing", GONE, "m2")]
    assert stale.stats.inbox_missing == {GONE: 2} and stale.stats.routed == 2
    receipts = [f for _, f in await admin.xrange(K.receipts("planner"))]
    assert [(r["status"], r.get("undelivered")) for r in receipts] == [("routed", GONE), ("routed", GONE)]


async def test_the_group_check_with_the_old_plan_does_not_re_create_a_pruned_outbox(
    raw: aioredis.Redis, stale: Router, admin: aioredis.Redis
) -> None:
    """ensure_groups runs over the plan it has: after a refresh that read the settings just before
    the reconciler wrote new ones, and at housekeeping while any outbox is set aside."""
    await _prune(admin, GONE)
    await stale.ensure_groups()
    assert await _keys_of(admin, GONE) == []
    await admin.delete(K.outbox("watcher"))
    await admin.set(K.outbox("watcher"), "not a stream")  # set aside: housekeeping checks the groups again
    await stale.ensure_groups()
    await stale.housekeeping()
    assert await _keys_of(admin, GONE) == []
    await admin.delete(K.outbox("watcher"))
    await stale.housekeeping()
    assert await _keys_of(admin, GONE) == [] and not await admin.exists(K.outbox("watcher"))  # gone by hand: left so
    # the old plan still routes the agents that are left
    await publish(raw, "worker-a", "results.research", "r1")
    assert await drain(stale) == 1
    assert await inbox_ids(admin, "planner") == ["r1"] and await _keys_of(admin, GONE) == []


async def test_a_read_that_finds_the_outbox_gone_reloads_the_plan_and_leaves_it_gone(
    raw: aioredis.Redis, stale: Router, admin: aioredis.Redis
) -> None:
    await _prune(admin, GONE)
    await publish(raw, "planner", "tasks.research", "after")
    await drain(stale)  # the first read names worker-b's outbox: NOGROUP, then the new plan
    assert stale.plan is not None and GONE not in stale.plan.agents
    assert await _keys_of(admin, GONE) == []
    assert await inbox_ids(admin, "worker-a") == ["after"] and await inbox_ids(admin, "watcher") == ["after"]
    assert await admin.xlen(K.refused) == 0  # the new plan has no worker-b to deliver to


async def test_an_outbox_that_is_missing_is_routed_once_its_agent_writes_to_it(
    raw: aioredis.Redis, admin: aioredis.Redis, redis_server: RedisServer
) -> None:
    """A declared agent's outbox deleted by hand is not re-created by the router, but the
    agent's next XADD creates it and the router takes it up again (its group at id 0)."""
    router = Router(redis_url=redis_server.url, swarm="lab", block_ms=20, refresh_seconds=0.05)
    await router.connect()
    try:
        await admin.delete(K.outbox("planner"))
        await router.ensure_groups()
        await drain(router)
        assert not await admin.exists(K.outbox("planner"))
        await publish(raw, "planner", "tasks.research", "back")
        await asyncio.sleep(0.06)  # the next refresh tick checks the missing outboxes again
        await drain(router)
        assert await inbox_ids(admin, "worker-a") == ["back"]
    finally:
        await router.close()


async def test_a_topic_removed_under_a_stale_plan_is_not_re_created(
    raw: aioredis.Redis, stale: Router, admin: aioredis.Redis
) -> None:
    await publish(raw, "planner", "tasks.summarize", "late")
    calls = await stale._read_prepared()
    await admin.delete(K.topic("tasks.summarize"))  # the topic's prune, before the router reloaded
    await stale._send(calls)
    assert not await admin.exists(K.topic("tasks.summarize"))
    assert await inbox_ids(admin, GONE) == [] and await inbox_ids(admin, "watcher") == []
    receipts = [f for _, f in await admin.xrange(K.receipts("planner"))]
    assert [(r["status"], r["reason"]) for r in receipts] == [("refused", "topic_missing")]
    (refused,) = [f for _, f in await admin.xrange(K.refused)]
    assert refused["message_id"] == "late" and json.loads(refused["payload"]) == {"m": "late"}  # replayable


# -- a real router process -------------------------------------------------------------------


async def test_a_real_router_under_load_leaves_a_pruned_agent_gone_and_routes_the_others(
    raw: aioredis.Redis, admin: aioredis.Redis, redis_server: RedisServer, router_factory: RouterFactory
) -> None:
    router_factory(redis_url=redis_server.url, swarm="lab", block_ms=50)
    sent: list[str] = []
    stop = asyncio.Event()

    async def load() -> None:  # planner publishes to a topic worker-b subscribed to, all along
        i = 0
        while not stop.is_set():
            async with raw.pipeline(transaction=False) as pipe:
                for _ in range(20):
                    mid = f"m{i}"
                    pipe.xadd(K.outbox("planner"), {"topic": "tasks.research", "payload": "{}", "message_id": mid})
                    sent.append(mid)
                    i += 1
                await pipe.execute()
            await asyncio.sleep(0.002)

    task = asyncio.create_task(load())
    try:
        await _until_inbox(admin, "worker-a", 200)
        await _prune(admin, GONE)
        pruned_at = len(sent)
        await _until_inbox(admin, "worker-a", pruned_at + 400)  # routed on well past the prune
    finally:
        stop.set()
        await task
    await _until_inbox(admin, "worker-a", len(sent))
    assert await _keys_of(admin, GONE) == []
    for agent in ("worker-a", "watcher"):
        assert await inbox_ids(admin, agent) == sent  # every id once, in order
    assert (await admin.xpending(K.outbox("planner"), "router"))["pending"] == 0


async def _until_inbox(admin: aioredis.Redis, agent: str, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while await admin.xlen(K.inbox(agent)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{agent}'s inbox holds {await admin.xlen(K.inbox(agent))} of {count} entries")
        await asyncio.sleep(0.02)
