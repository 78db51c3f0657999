"""Faults with real processes: a consumer killed before acking, and Redis restarted under
a live publisher and subscriber (append-only on). The third fault of the issue, Redis
refusing an agent's raw XADD outside its topics, is in test_apply.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import redis.asyncio as aioredis

from swarm.bus import Message
from tests.bus.conftest import BusFactory
from tests.support.services import RedisServer, wait_for_port

CONSUMER = textwrap.dedent(
    """
    import asyncio, sys
    from swarm.bus import EventBus

    async def main():
        async with EventBus(redis_url=sys.argv[1], swarm="lab", agent_id="worker-a", consumer_name="doomed") as bus:
            async for m in bus.subscribe(["tasks.research"]):
                print(m.entry_id, flush=True)   # read, never acked: the test kills us now
                await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_consumer_killed_before_ack_loses_nothing(redis_server: RedisServer, make_bus: BusFactory, applied: aioredis.Redis) -> None:
    planner = await make_bus("planner")
    sent = await planner.publish("tasks.research", {"job": 1})
    proc = subprocess.Popen([sys.executable, "-c", CONSUMER, redis_server.url], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
        assert line.strip() == sent.entry_id
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    pending = await applied.xpending("swarm:{lab}:topic:tasks.research", "worker-a")
    assert pending["pending"] == 1 and pending["consumers"][0]["name"] == "doomed"
    survivor = await make_bus("worker-a", consumer_name="survivor", visibility_timeout=0.2)
    got: list[Message] = []

    async def run() -> None:
        async for m in survivor.subscribe(["tasks.research"]):
            got.append(m)
            await m.ack()
            return

    await asyncio.wait_for(run(), 10)
    assert [(m.entry_id, m.payload, m.deliveries) for m in got] == [(sent.entry_id, {"job": 1}, 2)]
    assert (await applied.xpending("swarm:{lab}:topic:tasks.research", "worker-a"))["pending"] == 0


async def test_redis_restart_loses_no_acked_message_and_keeps_dedup(redis_server: RedisServer, make_bus: BusFactory) -> None:
    planner = await make_bus("planner")
    worker = await make_bus("worker-a", block_ms=100)
    before = await planner.publish("tasks.research", {"n": 0}, message_id="before-restart")
    got: list[Message] = []
    new_message = asyncio.Event()

    async def consume() -> None:
        async for m in worker.subscribe(["tasks.research"]):
            got.append(m)
            await m.ack()
            if len(got) >= 2:
                new_message.set()
                return

    task = asyncio.create_task(consume())
    try:
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.02)
        assert [m.entry_id for m in got] == [before.entry_id]

        redis_server.restart()  # SIGTERM, same port and data directory, append-only
        wait_for_port(redis_server.port)

        # Same client objects: no reconnect by hand.
        dup = await planner.publish("tasks.research", {"n": 0}, message_id="before-restart")
        assert dup.duplicate and dup.entry_id == before.entry_id
        after = await planner.publish("tasks.research", {"n": 1}, message_id="after-restart")
        assert not after.duplicate
        await asyncio.wait_for(new_message.wait(), 15)
        assert [m.entry_id for m in got] == [before.entry_id, after.entry_id]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    check = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        entries = await check.xrange("swarm:{lab}:topic:tasks.research")
        assert [e[0] for e in entries] == [before.entry_id, after.entry_id]
        assert (await check.xpending("swarm:{lab}:topic:tasks.research", "worker-a"))["pending"] == 0
    finally:
        await check.aclose()


async def test_publish_while_redis_is_down_is_transient_then_resumes(redis_server: RedisServer, make_bus: BusFactory) -> None:
    from swarm.errors import RedisUnavailableError

    planner = await make_bus("planner")
    await planner.publish("tasks.research", {"n": 0})
    redis_server.stop()
    try:
        try:
            await planner.publish("tasks.research", {"n": 1}, message_id="while-down")
            raise AssertionError("publish succeeded with Redis down")
        except RedisUnavailableError as exc:
            assert "unreachable" in str(exc) and exc.delay > 0
    finally:
        redis_server.start()
    result = await planner.publish("tasks.research", {"n": 1}, message_id="while-down")
    assert not result.duplicate  # never appended while down, so not a duplicate now
    # the entry from before the outage survived (append-only) and the retry was appended once
    entries = await planner.redis.xrange("swarm:{lab}:topic:tasks.research")
    assert [e[1]["payload"] for e in entries] == ['{"n":0}', '{"n":1}']
    assert entries[-1][0] == result.entry_id
