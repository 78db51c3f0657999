"""A generated agent on the real bus: uvicorn subprocess, its own redis-server.

The agent waits (not ready, not crashed) until the bus is applied, then consumes
its topic: the spec's handler (an async function in a user module) gets each
message and the bus's publish function; a message it handles is acked, one it
raises on stays pending for redelivery.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import redis.asyncio as aioredis

from swarm.bus import EventBus, apply_bus
from swarm.compiler import compile_loaded, write_output
from swarm.desired import AclDocument, BusPlan
from swarm.keys import SwarmKeys
from swarm.spec.loader import LoadedSpec
from tests.support.services import RedisServer, free_port

from .conftest import agent_doc, start_agent

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


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s")


def ready_status(url: str) -> int:
    return httpx.get(url + "/health/ready", timeout=5).status_code


async def test_generated_agent_consumes_acks_and_publishes(
    tmp_path: Path, make_spec: Callable[..., LoadedSpec], redis_server: RedisServer
) -> None:
    port = free_port()
    roles = {"worker": {"publish": ["results.*"], "subscribe": ["tasks.>"]}, "boss": {"publish": ["tasks.*"]}}
    loaded = make_spec(
        [
            agent_doc("consumer", port, role="worker", registry=False, subscribes=["tasks.work"],
                      publishes=["results.work"], handler="agent_handlers:handle"),
            agent_doc("boss", port + 1, role="boss", registry=False, publishes=["tasks.work"]),
        ],
        roles=roles,
    )
    files = compile_loaded(loaded)
    write_output(files, tmp_path / "out", "demo")
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "agent_handlers.py").write_text(HANDLER_MODULE)
    handler_log = tmp_path / "handled.jsonl"
    agent_log = tmp_path / "agent.log"

    agent = start_agent(
        tmp_path / "out",
        "consumer",
        port,
        {"REDIS_URL": redis_server.url, "HANDLER_LOG": str(handler_log)},
        agent_log,
        path=(tmp_path / "user",),
    )
    redis = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        # the bus is not applied yet: alive, not ready, still running
        assert ready_status(agent.url) == 503
        assert httpx.get(agent.url + "/health/ready", timeout=5).json()["waiting_for"] == ["bus"]

        plan = BusPlan.model_validate_json(files["demo/bus.json"])
        acl = AclDocument.model_validate_json(files["demo/acl.json"])
        await apply_bus(redis, plan, acl)
        wait_until(lambda: ready_status(agent.url) == 200)

        async with EventBus(redis_url=redis_server.url, swarm="demo", agent_id="boss", role="boss") as boss:
            ok = await boss.publish("tasks.work", {"n": 1})
            bad = await boss.publish("tasks.work", {"n": 2, "fail": True})

        lines = wait_until(lambda: handler_log.exists() and len(handler_log.read_text().splitlines()) >= 2 and
                           handler_log.read_text().splitlines())
        seen = [json.loads(line) for line in lines]
        assert {s["message_id"] for s in seen} == {ok.message_id, bad.message_id}
        assert all(s["topic"] == "tasks.work" and s["sender"] == "boss" for s in seen)

        keys = SwarmKeys("demo")

        async def pending_ids() -> list[str]:
            rows = await redis.xpending_range(keys.topic("tasks.work"), "consumer", min="-", max="+", count=10)
            return [row["message_id"] for row in rows]

        deadline = time.monotonic() + 30
        while await pending_ids() != [bad.entry_id] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert await pending_ids() == [bad.entry_id]  # handled one acked, failed one left for redelivery

        results = await redis.xrange(keys.topic("results.work"))
        assert len(results) == 1  # only the handled message led to a publish
        assert results[0][1]["sender"] == "consumer" and json.loads(results[0][1]["payload"]) == {"done": 1}
    finally:
        await redis.aclose()
        code = agent.stop()
    assert code in (0, -15)
    log_text = agent_log.read_text()
    assert "handler failed on" in log_text and "Application shutdown complete" in log_text


SYNC_HANDLER_MODULE = '''
def handle(message, publish):
    # a sync handler: publish() starts the publish; the server awaits it before acking
    if message.payload.get("unserialisable"):
        publish("results.work", {"bad": {1, 2}})  # the publish fails: the message must stay unacked
        return
    publish("results.work", {"done": message.payload["n"]})
'''


async def test_sync_handler_publish_is_awaited_before_ack(
    tmp_path: Path, make_spec: Callable[..., LoadedSpec], redis_server: RedisServer
) -> None:
    port = free_port()
    roles = {"worker": {"publish": ["results.*"], "subscribe": ["tasks.>"]}, "boss": {"publish": ["tasks.*"]}}
    loaded = make_spec(
        [
            agent_doc("consumer", port, role="worker", registry=False, subscribes=["tasks.work"],
                      publishes=["results.work"], handler="sync_handlers:handle"),
            agent_doc("boss", port + 1, role="boss", registry=False, publishes=["tasks.work"]),
        ],
        roles=roles,
    )
    files = compile_loaded(loaded)
    write_output(files, tmp_path / "out", "demo")
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "sync_handlers.py").write_text(SYNC_HANDLER_MODULE)
    agent_log = tmp_path / "agent.log"
    redis = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    await apply_bus(
        redis, BusPlan.model_validate_json(files["demo/bus.json"]), AclDocument.model_validate_json(files["demo/acl.json"])
    )
    agent = start_agent(
        tmp_path / "out", "consumer", port, {"REDIS_URL": redis_server.url}, agent_log, path=(tmp_path / "user",)
    )
    keys = SwarmKeys("demo")
    try:
        wait_until(lambda: ready_status(agent.url) == 200)
        async with EventBus(redis_url=redis_server.url, swarm="demo", agent_id="boss", role="boss") as boss:
            await boss.publish("tasks.work", {"n": 7})
            bad = await boss.publish("tasks.work", {"n": 8, "unserialisable": True})

        deadline = time.monotonic() + 30
        while not await redis.xrange(keys.topic("results.work")) and time.monotonic() < deadline:
            time.sleep(0.05)
        results = await redis.xrange(keys.topic("results.work"))
        assert len(results) == 1
        assert results[0][1]["sender"] == "consumer" and json.loads(results[0][1]["payload"]) == {"done": 7}

        async def pending_ids() -> list[str]:
            rows = await redis.xpending_range(keys.topic("tasks.work"), "consumer", min="-", max="+", count=10)
            return [row["message_id"] for row in rows]

        deadline = time.monotonic() + 30
        while (await pending_ids() != [bad.entry_id] or "handler failed on" not in agent_log.read_text()) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        # the published one is acked; the one whose publish failed stays pending for redelivery
        assert await pending_ids() == [bad.entry_id]
    finally:
        await redis.aclose()
        code = agent.stop()
    assert code in (0, -15)
    log_text = agent_log.read_text()
    assert "never awaited" not in log_text and "not JSON-serialisable" in log_text
