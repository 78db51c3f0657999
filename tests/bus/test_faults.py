"""Faults with real processes on the agent side: a consumer SIGKILLed before acking, Redis
restarted under a live publisher, subscriber and router (append-only on), and a publish
while Redis is down. The router's own faults (killed mid-batch) are in test_router.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from typing import Any

import pytest
import redis.asyncio as aioredis

from swarm.bus import Message
from swarm.errors import RedisUnavailableError
from tests.bus.conftest import BusFactory
from tests.support.router import RouterFactory
from tests.support.services import RedisServer, wait_for_port

# fault tests (SIGKILL, Redis restarts and outages): moved out of the quick suite (CI time budget)
pytestmark = pytest.mark.slow

INBOX = "swarm:{lab}:inbox:worker-a"
TOPIC_LOG = "swarm:{lab}:topic:tasks.research"

CONSUMER = textwrap.dedent(
    """
    import asyncio, sys
    from swarm.bus import EventBus

    async def main():
        async with EventBus(redis_url=sys.argv[1], swarm="lab", agent_id="worker-a", consumer_name="doomed") as bus:
            async for m in bus.subscribe():
                print(m.message_id, m.entry_id, flush=True)   # read, never acked: the test kills us now
                await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


@pytest.fixture
def router(redis_server: RedisServer, applied: aioredis.Redis, router_factory: RouterFactory) -> Any:
    return router_factory(redis_url=redis_server.url, swarm="lab")


async def test_a_consumer_sigkilled_before_ack_gets_the_entry_again(
    redis_server: RedisServer, make_bus: BusFactory, applied: aioredis.Redis, router: Any
) -> None:
    planner = await make_bus("planner")
    sent = await planner.publish("tasks.research", {"job": 1}, message_id="job-1", wait=True)
    proc = subprocess.Popen([sys.executable, "-c", CONSUMER, redis_server.url], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
        message_id, inbox_id = line.split()
        assert message_id == "job-1"
    finally:
        proc.kill()  # SIGKILL: no cleanup, no ack
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    pending = await applied.xpending(INBOX, "worker-a")
    assert pending["pending"] == 1 and pending["consumers"][0]["name"] == "doomed"
    assert await applied.xlen(INBOX) == 1  # not acked: still in the inbox
    survivor = await make_bus("worker-a", consumer_name="survivor", visibility_timeout=0.2)
    got: list[Message] = []

    async def run() -> None:
        async for m in survivor.subscribe():
            got.append(m)
            await m.ack()
            return

    await asyncio.wait_for(run(), 10)
    assert [(m.entry_id, m.topic_entry_id, m.payload, m.deliveries) for m in got] == [
        (inbox_id, sent.entry_id, {"job": 1}, 2)
    ]
    assert (await applied.xpending(INBOX, "worker-a"))["pending"] == 0
    assert await applied.xlen(INBOX) == 0  # acked: deleted from the inbox


async def test_redis_restart_loses_no_acked_message_and_keeps_dedup(
    redis_server: RedisServer, make_bus: BusFactory, router: Any
) -> None:
    planner = await make_bus("planner")
    worker = await make_bus("worker-a", block_ms=100)
    before = await planner.publish("tasks.research", {"n": 0}, message_id="before-restart", wait=True)
    got: list[Message] = []
    new_message = asyncio.Event()

    async def consume() -> None:
        async for m in worker.subscribe():
            got.append(m)
            await m.ack()
            if len(got) >= 2:
                new_message.set()
                return

    task = asyncio.create_task(consume())
    try:
        for _ in range(200):
            if got:
                break
            await asyncio.sleep(0.02)
        assert [m.message_id for m in got] == ["before-restart"]

        redis_server.restart()  # SIGTERM, same port and data directory, append-only
        wait_for_port(redis_server.port)

        # Same client objects and the same router process: nobody reconnects by hand.
        dup = await planner.publish("tasks.research", {"n": 0}, message_id="before-restart", wait=True, timeout=15)
        assert dup.duplicate and dup.entry_id == before.entry_id
        after = await planner.publish("tasks.research", {"n": 1}, message_id="after-restart", wait=True, timeout=15)
        assert after.status == "routed"
        await asyncio.wait_for(new_message.wait(), 15)
        assert [m.topic_entry_id for m in got] == [before.entry_id, after.entry_id]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    check = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        assert [e[0] for e in await check.xrange(TOPIC_LOG)] == [before.entry_id, after.entry_id]
        assert (await check.xpending(INBOX, "worker-a"))["pending"] == 0
    finally:
        await check.aclose()


async def test_publish_while_redis_is_down_is_transient_then_resumes(
    redis_server: RedisServer, make_bus: BusFactory, router: Any
) -> None:
    planner = await make_bus("planner")
    await planner.publish("tasks.research", {"n": 0}, wait=True)
    redis_server.stop()
    try:
        with pytest.raises(RedisUnavailableError, match="unreachable") as caught:
            await planner.publish("tasks.research", {"n": 1}, message_id="while-down")
        assert caught.value.delay > 0
    finally:
        redis_server.start()
    result = await planner.publish("tasks.research", {"n": 1}, message_id="while-down", wait=True, timeout=15)
    assert result.status == "routed"  # never reached the outbox while down, so not a duplicate now
    # the entry from before the outage survived (append-only) and the retry was appended once
    entries = await planner.redis.xrange(TOPIC_LOG)
    assert [e[1][b"payload"] for e in entries] == [b'{"n":0}', b'{"n":1}']
    assert entries[-1][0].decode() == result.entry_id
