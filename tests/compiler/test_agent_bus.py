"""A generated agent on the real mediated bus: uvicorn subprocess, its own redis-server, its
own Redis ACL user (outbox and inbox only), and a real router process (`swarm bus route`).

The agent waits (not ready, not crashed) until the bus is applied, then consumes its
inbox: the spec's handler (a user module, async or sync) gets each message and the
bus's publish function; a message it handles is acked after its publishes are in the
outbox, one it raises on (or whose publish fails) is delivered again and, after
max_deliveries, dead-lettered to the agent's ``dlq:@<id>``. An agent without a handler
logs one line per message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import httpx
import redis.asyncio as aioredis

from swarm.bus import EventBus, apply_bus
from swarm.bus.apply import agent_redis_url
from swarm.compiler import compile_loaded, write_output
from swarm.desired import AclDocument, BusPlan
from swarm.keys import SwarmKeys
from swarm.spec.loader import LoadedSpec
from tests.support.router import RouterFactory, router_factory  # noqa: F401  (fixture)
from tests.support.services import RedisServer, free_port
from tests.support.wait import await_until, wait_until

from .conftest import agent_doc, start_agent

SECRET = "agent-bus-secret"
KEYS = SwarmKeys("demo")
ROLES = {"worker": {"publish": ["results.*"], "subscribe": ["tasks.>"]}, "boss": {"publish": ["tasks.*"]}}
#: a short visibility timeout and two deliveries, so a failing message is dead-lettered soon
BUS = {"redis_url": "redis://127.0.0.1:6379/0", "visibility_timeout_seconds": 0.5, "max_deliveries": 2}

HANDLER_MODULE = '''
import json, os

async def handle(message, publish):
    with open(os.environ["HANDLER_LOG"], "a") as fh:
        fh.write(json.dumps({"topic": message.topic, "payload": message.payload, "sender": message.sender,
                             "message_id": message.message_id}) + "\\n")
    if message.payload.get("fail"):
        raise RuntimeError("handler refuses this one")
    await publish("results.work", {"done": message.payload["n"]})
'''

SYNC_HANDLER_MODULE = '''
def handle(message, publish):
    # a sync handler: publish() starts the publish; the server awaits it before acking
    if message.payload.get("unserialisable"):
        publish("results.work", {"bad": {1, 2}})  # the publish fails: the message must not be acked
        return
    publish("results.work", {"done": message.payload["n"]})
'''


def ready_status(url: str) -> int:
    return httpx.get(url + "/health/ready", timeout=5).status_code


def compile_demo(tmp_path: Path, make_spec: Callable[..., LoadedSpec], port: int, **consumer: Any) -> dict[str, bytes]:
    loaded = make_spec(
        [
            agent_doc("consumer", port, role="worker", registry=False, subscribes=["tasks.work"],
                      publishes=["results.work"], **consumer),
            agent_doc("boss", port + 1, role="boss", registry=False, publishes=["tasks.work"]),
        ],
        roles=ROLES,
        bus=BUS,
    )
    files = compile_loaded(loaded)
    write_output(files, tmp_path / "out", "demo")
    return files


async def apply(redis: aioredis.Redis, files: dict[str, bytes]) -> None:
    await apply_bus(redis, BusPlan.model_validate_json(files["demo/bus.json"]),
                    AclDocument.model_validate_json(files["demo/acl.json"]), secret=SECRET)


async def dead_letters(redis: aioredis.Redis) -> list[dict[str, str]]:
    return [fields for _, fields in await redis.xrange(KEYS.agent_dead_letter("consumer"))]


async def test_generated_agent_consumes_acks_publishes_and_dead_letters(
    tmp_path: Path, make_spec: Callable[..., LoadedSpec], redis_server: RedisServer, router_factory: RouterFactory  # noqa: F811
) -> None:
    port = free_port()
    files = compile_demo(tmp_path, make_spec, port, handler="agent_handlers:handle")
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "agent_handlers.py").write_text(HANDLER_MODULE)
    handler_log = tmp_path / "handled.jsonl"
    agent_log = tmp_path / "agent.log"

    agent = start_agent(
        tmp_path / "out", "consumer", port,
        {"REDIS_URL": agent_redis_url(redis_server.url, "demo", "consumer", SECRET), "HANDLER_LOG": str(handler_log)},
        agent_log, path=(tmp_path / "user",),
    )
    redis = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        # the bus is not applied yet (no Redis user either): alive, not ready, still running
        assert ready_status(agent.url) == 503
        assert httpx.get(agent.url + "/health/ready", timeout=5).json()["waiting_for"] == ["bus"]

        await apply(redis, files)
        router_factory(redis_url=redis_server.url, swarm="demo")
        wait_until(lambda: ready_status(agent.url) == 200, timeout=30)

        async with EventBus(redis_url=redis_server.url, swarm="demo", agent_id="boss") as boss:
            ok = await boss.publish("tasks.work", {"n": 1}, wait=True)
            bad = await boss.publish("tasks.work", {"n": 2, "fail": True}, wait=True)

        # the failing one is handled max_deliveries (2) times, then dead-lettered; the good one once
        dead = await await_until(lambda: dead_letters(redis), timeout=30)
        assert [(d["message_id"], d["topic_entry_id"]) for d in dead] == [(bad.message_id, bad.entry_id)]
        assert "not acked after 2 deliveries" in dead[0]["reason"]
        seen = [json.loads(line) for line in handler_log.read_text().splitlines()]
        assert sorted(s["message_id"] for s in seen) == sorted([ok.message_id, bad.message_id, bad.message_id])
        assert all(s["topic"] == "tasks.work" and s["sender"] == "boss" for s in seen)
        assert (await redis.xpending(KEYS.inbox("consumer"), "consumer"))["pending"] == 0

        async def results() -> list[Any]:
            return await redis.xrange(KEYS.topic("results.work"))

        routed = await await_until(results, timeout=30)
        assert len(routed) == 1  # only the handled message led to a publish, routed as the consumer's
        assert routed[0][1]["sender"] == "consumer" and json.loads(routed[0][1]["payload"]) == {"done": 1}
    finally:
        await redis.aclose()
        code = agent.stop()
    assert code in (0, -15)
    log_text = agent_log.read_text()
    assert "handler failed on" in log_text and "Application shutdown complete" in log_text


async def routed_consumer(
    tmp_path: Path, redis_server: RedisServer, router_factory: RouterFactory, files: dict[str, bytes], port: int,  # noqa: F811
    agent_log: Path, **kwargs: Any,
) -> tuple[aioredis.Redis, Any]:
    """Apply the demo bus, start a router and the generated ``consumer`` agent (with its own Redis user)."""
    redis = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    await apply(redis, files)
    router_factory(redis_url=redis_server.url, swarm="demo")
    agent = start_agent(
        tmp_path / "out", "consumer", port, {"REDIS_URL": agent_redis_url(redis_server.url, "demo", "consumer", SECRET)},
        agent_log, **kwargs,
    )
    return redis, agent


async def test_sync_handler_publish_is_awaited_before_ack(
    tmp_path: Path, make_spec: Callable[..., LoadedSpec], redis_server: RedisServer, router_factory: RouterFactory  # noqa: F811
) -> None:
    port = free_port()
    files = compile_demo(tmp_path, make_spec, port, handler="sync_handlers:handle")
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "sync_handlers.py").write_text(SYNC_HANDLER_MODULE)
    agent_log = tmp_path / "agent.log"
    redis, agent = await routed_consumer(tmp_path, redis_server, router_factory, files, port, agent_log,
                                         path=(tmp_path / "user",))
    try:
        wait_until(lambda: ready_status(agent.url) == 200, timeout=30)
        async with EventBus(redis_url=redis_server.url, swarm="demo", agent_id="boss") as boss:
            await boss.publish("tasks.work", {"n": 7}, wait=True)
            bad = await boss.publish("tasks.work", {"n": 8, "unserialisable": True}, wait=True)

        # the one whose publish failed is never acked: delivered twice, then dead-lettered
        dead = await await_until(lambda: dead_letters(redis), timeout=30)
        assert [d["topic_entry_id"] for d in dead] == [bad.entry_id]
        results = await redis.xrange(KEYS.topic("results.work"))
        assert len(results) == 1
        assert results[0][1]["sender"] == "consumer" and json.loads(results[0][1]["payload"]) == {"done": 7}
    finally:
        await redis.aclose()
        code = agent.stop()
    assert code in (0, -15)
    log_text = agent_log.read_text()
    assert "never awaited" not in log_text and "not JSON-serialisable" in log_text


async def test_an_agent_without_handler_logs_one_line_per_message(
    tmp_path: Path, make_spec: Callable[..., LoadedSpec], redis_server: RedisServer, router_factory: RouterFactory  # noqa: F811
) -> None:
    port = free_port()
    files = compile_demo(tmp_path, make_spec, port)
    agent_log = tmp_path / "agent.log"
    redis, agent = await routed_consumer(tmp_path, redis_server, router_factory, files, port, agent_log)
    try:
        wait_until(lambda: ready_status(agent.url) == 200, timeout=30)
        async with EventBus(redis_url=redis_server.url, swarm="demo", agent_id="boss") as boss:
            for i in range(3):
                await boss.publish("tasks.work", {"n": i, "text": "line one\nline two"}, message_id=f"job-{i}\x1b[2J")

        def received() -> list[str]:
            return [line for line in agent_log.read_text().splitlines() if " received " in line]

        lines = wait_until(lambda: len(received()) >= 3 and received(), timeout=30)
        assert len(lines) == 3
        for i, line in enumerate(lines):
            # message id (escaped: a control character in it cannot forge a log line), topic, sender
            assert f"received 'job-{i}\\x1b[2J' on tasks.work from boss" in line and "\x1b" not in line
        assert (await redis.xpending(KEYS.inbox("consumer"), "consumer"))["pending"] == 0
    finally:
        await redis.aclose()
        agent.stop()
