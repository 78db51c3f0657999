"""A compiled node agent end to end, no containers: real ``node`` running what ``npm run build``
made of the compiled folder, a real registry (``swarm registry serve`` with its health
prober), a real redis-server, the real router (``swarm bus route``), and a Python agent
on the other side (EventBus).

The agent registers and turns ready; a message the Python agent publishes twice with
the same message id reaches the node handler once; what the node handler publishes
reaches the Python agent; when the node process stops answering (SIGSTOP) the
registry's prober opens its breaker, and it closes again once it answers; SIGTERM
deregisters it (onModuleDestroy) and the process exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
import redis.asyncio as aioredis

from swarm.bus import EventBus, apply_bus
from swarm.bus.apply import agent_redis_url
from swarm.compiler import compile_loaded, write_output
from swarm.desired import AclDocument, BusPlan, RegistryCatalog
from swarm.keys import SwarmKeys
from swarm.spec.loader import LoadedSpec, load_spec_full
from tests.compiler.conftest import agent_doc, swarm_doc, write_spec
from tests.registry.conftest import RegistryFactory, registry_factory  # noqa: F401  (fixture)
from tests.support.router import RouterFactory, router_factory  # noqa: F401  (fixture)
from tests.support.services import ProcessServer, RedisServer, free_port
from tests.support.wait import await_until, wait_until

from .support import link_modules, run

pytestmark = pytest.mark.slow

SECRET = "node-e2e-bus-secret"
KEYS = SwarmKeys("demo")
ROLES = {"planner": {"publish": ["tasks.*"], "subscribe": ["results.*"]},
         "worker": {"publish": ["results.*"], "subscribe": ["tasks.>"]}}
#: a breaker that opens on the second failed probe and retries after half a second
BUS = {"redis_url": "redis://127.0.0.1:6379/0", "visibility_timeout_seconds": 2, "max_deliveries": 3,
       "breaker": {"failure_threshold": 1, "cooldown_seconds": 0.5, "probe_interval_seconds": 0.2}}
HANDLER = """\
import { logReceived, type Handler } from "@swarm-gitops/agent-runtime";

export const handle: Handler = async (message, ctx) => {
  logReceived(ctx.log, message);
  await ctx.publish("tasks.work", { reply_to: message.messageId, got: message.payload });
};
"""


def node_swarm(repo: Path, port: int) -> LoadedSpec:
    (repo / "handlers").mkdir(parents=True)
    (repo / "handlers" / "architect.ts").write_text(HANDLER)
    agents = [
        agent_doc("architect", port, runtime="node", role="planner", subscribes=["results.work"],
                  publishes=["tasks.work"], handler="handlers/architect.ts:handle", version="1.0.0"),
        agent_doc("worker", port + 1, role="worker", registry=False, subscribes=["tasks.work"],
                  publishes=["results.work"]),
    ]
    registry = {"url": "http://127.0.0.1:8700", "ttl_seconds": 30, "heartbeat_interval": 1}
    return load_spec_full(write_spec(repo / "specs", swarm_doc(roles=ROLES, bus=BUS, registry=registry), agents))


def status(url: str, path: str) -> int:
    try:
        return httpx.get(url + path, timeout=2).status_code
    except httpx.HTTPError:
        return 0


async def test_node_agent_registers_dedups_publishes_trips_its_breaker_and_deregisters(
    tmp_path: Path, node_modules: Path, redis_server: RedisServer,
    registry_factory: RegistryFactory, router_factory: RouterFactory,  # noqa: F811
) -> None:
    repo = tmp_path / "repo"
    port = free_port()
    files = compile_loaded(node_swarm(repo, port))
    write_output(files, repo / "compiled", "demo")
    agent_dir = repo / "compiled" / "demo" / "agents" / "architect"
    link_modules(agent_dir, node_modules)
    run(["npm", "run", "build"], agent_dir)  # prebuild copies the handler from the repo, then tsc

    admin = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    await apply_bus(admin, BusPlan.model_validate_json(files["demo/bus.json"]),
                    AclDocument.model_validate_json(files["demo/acl.json"]), secret=SECRET)
    registry = registry_factory(redis_server, swarm="demo", extra_args=["--no-route", "--probe-interval", "0.2"])
    registry.push(RegistryCatalog.model_validate_json(files["demo/registry.json"]))
    router_factory(redis_url=redis_server.url, swarm="demo")

    log = tmp_path / "architect.log"
    agent = ProcessServer(
        ["node", "dist/main.js"], port=port, cwd=agent_dir, log=log,
        env={"AGENT_HOST": "127.0.0.1", "AGENT_PORT": str(port), "SWARM_LISTEN_HOST": "127.0.0.1",
             "REDIS_URL": agent_redis_url(redis_server.url, "demo", "architect", SECRET),
             "REGISTRY_URL": registry.url, "SWARM_AGENT_TOKEN": registry.agent_token("architect")},
    ).start()
    pid = agent.proc.pid if agent.proc else 0
    try:
        # registers (with its health URL) and turns ready
        wait_until(lambda: status(agent.url, "/health/ready") == 200, what="node agent ready", timeout=30)
        record = registry.get("/agents/architect").json()
        assert record["health_url"] == f"http://127.0.0.1:{port}/health/live"
        assert (record["version"], record["role"], record["metadata"]["runtime"]) == ("1.0.0", "planner", "node")
        assert record["topics"] == {"publish": ["tasks.work"], "subscribe": ["results.work"]}

        async with EventBus(redis_url=redis_server.url, swarm="demo", agent_id="worker") as worker:
            # the same message id twice: the router delivers one copy
            first = await worker.publish("results.work", {"n": 1}, message_id="job-1", wait=True)
            again = await worker.publish("results.work", {"n": 1}, message_id="job-1", wait=True)
            assert (first.status, again.status) == ("routed", "duplicate")

            # the node handler's publish reaches the Python agent, sent as the architect
            async def reply() -> Any:
                async for message in worker.subscribe():
                    await message.ack()
                    return message
                return None

            message = await reply()
            assert message.sender == "architect" and message.topic == "tasks.work"
            assert message.payload == {"reply_to": "job-1", "got": {"n": 1}}

        def stats() -> dict[str, Any]:
            return dict(httpx.get(agent.url + "/health", timeout=2).json()["bus"])

        wait_until(lambda: stats()["acked"] == 1, what="message acked", timeout=30)
        time.sleep(0.5)  # a second copy would have arrived by now (the router routed both long ago)
        assert stats()["delivered"] == 1
        received = [line for line in log.read_text().splitlines() if "received " in line]
        assert len(received) == 1 and '"job-1" on results.work from worker (delivery 1)' in received[0]
        assert (await admin.xpending(KEYS.inbox("architect"), "architect"))["pending"] == 0
        assert await admin.xlen(KEYS.inbox("architect")) == 0  # acked entries are deleted

        # it stops answering: the registry's prober opens its breaker; answering again closes it
        assert await admin.hget(KEYS.breaker("architect"), "state") in (None, "closed")
        os.kill(pid, signal.SIGSTOP)
        try:
            async def opened() -> bool:
                return await admin.hget(KEYS.breaker("architect"), "state") == "open"

            await await_until(opened, what="breaker open", timeout=30)
        finally:
            os.kill(pid, signal.SIGCONT)

        async def closed() -> bool:
            return await admin.hget(KEYS.breaker("architect"), "state") == "closed"

        await await_until(closed, what="breaker closed again", timeout=30)
        assert registry.get("/agents/architect").status_code == 200

        # SIGTERM: onModuleDestroy deregisters, the process exits cleanly
        code = agent.stop()
        assert code == 0, (code, log.read_text()[-3000:])
        assert registry.get("/agents/architect").status_code == 404
        assert "deregistered architect" in log.read_text()
    finally:
        agent.stop()
        await admin.aclose()


async def test_default_handler_logs_one_line_per_message_and_acks(
    tmp_path: Path, node_modules: Path, redis_server: RedisServer, router_factory: RouterFactory,  # noqa: F811
    make_spec: Callable[..., LoadedSpec],
) -> None:
    """No handler and no registry: the agent is ready once the bus is connected; the default
    handler logs each message's id (quoted: a control character cannot forge a line)."""
    port = free_port()
    loaded = make_spec([
        agent_doc("listener", port, runtime="node", role="worker", registry=False, subscribes=["tasks.work"]),
        agent_doc("boss", port + 1, role="planner", registry=False, publishes=["tasks.work"]),
    ], roles=ROLES, bus=BUS)
    files = compile_loaded(loaded)
    write_output(files, tmp_path / "out", "demo")
    agent_dir = tmp_path / "out" / "demo" / "agents" / "listener"
    link_modules(agent_dir, node_modules)
    run(["npm", "run", "build"], agent_dir)
    log = tmp_path / "listener.log"
    agent = ProcessServer(
        ["node", "dist/main.js"], port=port, cwd=agent_dir, log=log,
        env={"AGENT_PORT": str(port), "SWARM_LISTEN_HOST": "127.0.0.1",
             "REDIS_URL": agent_redis_url(redis_server.url, "demo", "listener", SECRET)},
    ).start()
    admin = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        # the bus is not applied yet: alive, not ready, still running
        ready = httpx.get(agent.url + "/health/ready", timeout=2)
        assert ready.status_code == 503 and ready.json()["waiting_for"] == ["bus"]
        await apply_bus(admin, BusPlan.model_validate_json(files["demo/bus.json"]),
                        AclDocument.model_validate_json(files["demo/acl.json"]), secret=SECRET)
        router_factory(redis_url=redis_server.url, swarm="demo")
        wait_until(lambda: status(agent.url, "/health/ready") == 200, what="ready", timeout=30)
        async with EventBus(redis_url=redis_server.url, swarm="demo", agent_id="boss") as boss:
            sent = [await boss.publish("tasks.work", {"n": n}, wait=True) for n in range(3)]
            forged = await boss.publish("tasks.work", {"n": 9}, message_id="x\x1bFAKE", wait=True)

        def lines() -> list[str]:
            return [line for line in log.read_text().splitlines() if "received " in line]

        wait_until(lambda: len(lines()) == 4, what="four log lines", timeout=30)
        for result, line in zip(sent, lines()):
            assert json.dumps(result.message_id) in line
        assert '"x\\u001bFAKE"' in lines()[3]
        assert wait_until(lambda: httpx.get(agent.url + "/health", timeout=2).json()["bus"]["acked"] == 4, timeout=30)
        assert forged.status == "routed"
    finally:
        assert agent.stop() == 0
        await admin.aclose()


FAILING_HANDLER = """\
export default async function (message, ctx) {
  if (message.payload.fail) throw new Error("handler refuses this one");
  ctx.log.info(`handled ${JSON.stringify(message.messageId)}`);
}
"""


async def test_unacked_messages_are_redelivered_then_dead_lettered_and_unreadable_ones_at_once(
    tmp_path: Path, node_modules: Path, redis_server: RedisServer, router_factory: RouterFactory,  # noqa: F811
) -> None:
    """The handler throws: the entry stays pending, XAUTOCLAIM redelivers it after the visibility
    timeout, and after max_deliveries it moves to dlq:@<id> (acked and deleted in one MULTI).
    An entry without the inbox fields is dead-lettered at its first delivery, never handled."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "failing.js").write_text(FAILING_HANDLER)
    port = free_port()
    bus = {**BUS, "visibility_timeout_seconds": 0.5, "max_deliveries": 2}
    agents = [
        agent_doc("listener", port, runtime="node", role="worker", registry=False, subscribes=["tasks.work"],
                  handler="failing.js:default"),
        agent_doc("boss", port + 1, role="planner", registry=False, publishes=["tasks.work"]),
    ]
    files = compile_loaded(load_spec_full(write_spec(repo / "specs", swarm_doc(roles=ROLES, bus=bus), agents)))
    write_output(files, repo / "compiled", "demo")
    agent_dir = repo / "compiled" / "demo" / "agents" / "listener"
    link_modules(agent_dir, node_modules)
    run(["npm", "run", "build"], agent_dir)
    admin = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    await apply_bus(admin, BusPlan.model_validate_json(files["demo/bus.json"]),
                    AclDocument.model_validate_json(files["demo/acl.json"]), secret=SECRET)
    router_factory(redis_url=redis_server.url, swarm="demo")
    log = tmp_path / "listener.log"
    agent = ProcessServer(
        ["node", "dist/main.js"], port=port, cwd=agent_dir, log=log,
        env={"AGENT_PORT": str(port), "SWARM_LISTEN_HOST": "127.0.0.1",
             "REDIS_URL": agent_redis_url(redis_server.url, "demo", "listener", SECRET)},
    ).start()
    try:
        wait_until(lambda: status(agent.url, "/health/ready") == 200, what="ready", timeout=30)
        async with EventBus(redis_url=redis_server.url, swarm="demo", agent_id="boss") as boss:
            ok = await boss.publish("tasks.work", {"n": 1}, wait=True)
            bad = await boss.publish("tasks.work", {"n": 2, "fail": True}, wait=True)
        broken = await admin.xadd(KEYS.inbox("listener"), {"topic": "tasks.work", "payload": "{}"})

        async def dead() -> list[dict[str, str]]:
            entries = [fields for _, fields in await admin.xrange(KEYS.agent_dead_letter("listener"))]
            return entries if len(entries) == 2 else []

        letters = await await_until(dead, what="two dead letters", timeout=30)
        by_id = {d["original_entry_id"]: d for d in letters}
        assert by_id[broken]["reason"] == "unreadable entry: missing field(s) message_id, sender"
        assert by_id[broken]["deliveries"] == "1"
        failed = next(d for d in letters if d["original_entry_id"] != broken)
        assert (failed["message_id"], failed["topic_entry_id"]) == (bad.message_id, bad.entry_id)
        assert failed["reason"] == "not acked after 2 deliveries (max_deliveries 2)"
        assert failed["group"] == "listener" and failed["inbox"] == KEYS.inbox("listener")
        assert (await admin.xpending(KEYS.inbox("listener"), "listener"))["pending"] == 0
        assert await admin.xlen(KEYS.inbox("listener")) == 0
        text = log.read_text()
        assert text.count(f"handled {json.dumps(ok.message_id)}") == 1
        assert text.count(f"handler failed on {json.dumps(bad.message_id)}") == 2
        stats = httpx.get(agent.url + "/health", timeout=2).json()["bus"]
        assert (stats["acked"], stats["failed"], stats["deadLettered"], stats["redelivered"]) == (1, 2, 2, 1)
    finally:
        assert agent.stop() == 0
        await admin.aclose()
