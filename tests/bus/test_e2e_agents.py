"""End to end: two generated agents under uvicorn, a real registry (with its health prober),
a real router process (`swarm bus route`) and a real redis-server with the bus applied,
each agent connecting as its own Redis ACL user (outbox and inbox only).

The sender's handler publishes a task and then retries it with the same message id,
waiting for the router's receipts: the first is routed, the retry a duplicate of it, and
the receiver's handler sees exactly one copy. Meanwhile the registry probes both agents'
health_url: healthy agents keep closed breakers, so the sender may publish at all; when
the receiver dies, its breaker opens and the registry lists it as critical.
"""

from __future__ import annotations

import pytest
import json
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import redis.asyncio as aioredis
import yaml

from swarm.bus import EventBus, apply_bus
from swarm.bus.apply import agent_redis_url
from swarm.compiler import compile_loaded, write_output
from swarm.desired import AclDocument, BusPlan, RegistryCatalog
from swarm.spec.loader import load_spec_full
from tests.registry.conftest import SSEReader, registry_factory  # noqa: F401  (fixture)
from tests.support.router import RouterFactory
from tests.support.services import ProcessServer, RedisServer, free_port, python_cmd
from tests.support.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
SECRET = "e2e-bus-secret"

HANDLERS = '''
import json, os

async def send_twice(message, publish):
    task_id = "task-%s" % message.payload["n"]
    first = await publish("tasks.work", {"n": message.payload["n"]}, message_id=task_id, wait=True)
    retry = await publish("tasks.work", {"n": message.payload["n"]}, message_id=task_id, wait=True)  # a retry
    with open(os.environ["SENT_LOG"], "a") as fh:
        fh.write(json.dumps([first.entry_id, first.duplicate, retry.entry_id, retry.duplicate]) + "\\n")

def record(message, publish):
    with open(os.environ["RECEIVED_LOG"], "a") as fh:
        fh.write(json.dumps({"message_id": message.message_id, "entry_id": message.topic_entry_id,
                             "sender": message.sender, "payload": message.payload}) + "\\n")
'''


def spec_docs(sender_port: int, receiver_port: int) -> list[dict[str, Any]]:
    swarm = {
        "apiVersion": "swarm/v1", "kind": "Swarm", "metadata": {"name": "duo"},
        "registry": {"url": "http://127.0.0.1:8700", "ttl_seconds": 30, "heartbeat_interval": 10},
        "bus": {"redis_url": "redis://127.0.0.1:6379/0", "breaker": {"failure_threshold": 1, "cooldown_seconds": 60}},
        "topics": [{"name": "kick.start"}, {"name": "tasks.work"}],
        "roles": {
            "starter": {"publish": ["tasks.*"], "subscribe": ["kick.*"]},
            "worker": {"subscribe": ["tasks.*"]},
            "tester": {"publish": ["kick.*"]},
        },
    }
    agents = [
        {"apiVersion": "swarm/v1", "kind": "Agent", "id": "sender", "role": "starter", "port": sender_port,
         "publishes": ["tasks.work"], "subscribes": ["kick.start"], "handler": "e2e_handlers:send_twice"},
        {"apiVersion": "swarm/v1", "kind": "Agent", "id": "receiver", "role": "worker", "port": receiver_port,
         "subscribes": ["tasks.work"], "handler": "e2e_handlers:record"},
        {"apiVersion": "swarm/v1", "kind": "Agent", "id": "kicker", "role": "tester", "port": free_port(),
         "publishes": ["kick.start"], "registry": False},
    ]
    return [swarm, *agents]


def lines(path: Path) -> list[Any]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow  # moved out of the quick suite (CI time budget)
async def test_two_generated_agents_exactly_one_copy_despite_a_retry(
    tmp_path: Path, redis_server: RedisServer, registry_factory: Callable[..., Any],  # noqa: F811
    router_factory: RouterFactory,
) -> None:
    sender_port, receiver_port = free_port(), free_port()
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    (spec_dir / "swarm.yaml").write_text(yaml.safe_dump_all(spec_docs(sender_port, receiver_port), sort_keys=False))
    files = compile_loaded(load_spec_full(spec_dir))
    write_output(files, tmp_path / "out", "duo")
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "e2e_handlers.py").write_text(HANDLERS)
    sent_log, received_log = tmp_path / "sent.jsonl", tmp_path / "received.jsonl"

    registry = registry_factory(redis_server, swarm="duo", extra_args=["--probe-interval", "0.3"])
    registry.push(RegistryCatalog.model_validate_json(files["duo/registry.json"]))
    admin = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    report = await apply_bus(admin, BusPlan.model_validate_json(files["duo/bus.json"]),
                             AclDocument.model_validate_json(files["duo/acl.json"]), secret=SECRET)
    assert report.created_users == ["swarm.duo.kicker", "swarm.duo.receiver", "swarm.duo.sender"]
    router_factory(redis_url=redis_server.url, swarm="duo")

    agents = []
    try:
        for agent_id, port in (("receiver", receiver_port), ("sender", sender_port)):
            agents.append(ProcessServer(
                python_cmd("-m", "uvicorn", "server:app", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"),
                port=port,
                cwd=tmp_path / "out" / "duo" / "agents" / agent_id,
                env={
                    "AGENT_PORT": str(port),
                    "REDIS_URL": agent_redis_url(redis_server.url, "duo", agent_id, SECRET),
                    "REGISTRY_URL": registry.url,
                    "SWARM_AGENT_TOKEN": registry.agent_token(agent_id),
                    "SENT_LOG": str(sent_log),
                    "RECEIVED_LOG": str(received_log),
                    "PYTHONPATH": f"{tmp_path / 'user'}:{REPO}",
                },
                log=tmp_path / f"{agent_id}.log",
            ).start())
        for agent in agents:
            wait_until(lambda: httpx.get(agent.url + "/health/ready", timeout=5).status_code == 200)

        async with EventBus(redis_url=redis_server.url, swarm="duo", agent_id="kicker") as kicker:
            assert (await kicker.publish("kick.start", {"n": 7}, wait=True)).status == "routed"

        sent = wait_until(lambda: lines(sent_log))
        received = wait_until(lambda: lines(received_log))
        assert len(sent) == 1
        first_id, first_dup, retry_id, retry_dup = sent[0]
        assert (first_dup, retry_dup) == (False, True) and retry_id == first_id
        time.sleep(0.5)  # a second copy, if there were one, would arrive by now
        received = lines(received_log)
        assert received == [{"message_id": "task-7", "entry_id": first_id, "sender": "sender", "payload": {"n": 7}}]
        assert await admin.xlen("swarm:{duo}:topic:tasks.work") == 1
        inbox = await admin.xinfo_stream("swarm:{duo}:inbox:receiver")
        assert inbox["entries-added"] == 1  # one copy delivered ...
        assert inbox["length"] == 0  # ... and deleted from the inbox when the receiver acked it
        receipts = [f["status"] for _, f in await admin.xrange("swarm:{duo}:receipts:sender")]
        assert receipts == ["routed", "duplicate"]

        # The registry's prober checked both live agents and left their breakers closed.
        for agent_id in ("sender", "receiver"):
            wait_until(lambda: registry.get(f"/agents/{agent_id}", timeout=5).status_code == 200)
            state = await admin.hget(f"swarm:{{duo}}:breaker:{agent_id}", "state")
            deadline = time.monotonic() + 10
            while state is None and time.monotonic() < deadline:
                time.sleep(0.1)
                state = await admin.hget(f"swarm:{{duo}}:breaker:{agent_id}", "state")
            assert state == "closed"
            assert registry.get(f"/agents/{agent_id}", timeout=5).json()["status"] == "healthy"

        # The receiver dies; its lease is still live, so the prober keeps checking it: with
        # failure_threshold 1 the second failed check opens its breaker, the registry lists
        # it as critical and its watch stream carries the breaker-opened event.
        agents[0].kill()
        wait_until(lambda: registry.get(f"/agents/receiver", timeout=5).json()["status"] == "critical")
        events = await admin.xrange("swarm:{duo}:events")
        assert [(e[1]["type"], e[1]["agent"]) for e in events if e[1]["type"].startswith("breaker")] == [
            ("breaker-opened", "receiver")
        ]
        # ... and a watcher of the registry gets it as an SSE event (resuming just before it)
        at = next(i for i, e in enumerate(events) if e[1]["type"] == "breaker-opened")
        async with httpx.AsyncClient(headers=registry.read_headers(), timeout=10) as http:
            async with http.stream("GET", f"{registry.url}/agents/watch",
                                   headers={"Last-Event-ID": events[at - 1][0]}) as resp:
                event = await SSEReader(resp).next_event()
        assert (event.id, event.event) == (events[at][0], "breaker-opened")
        assert event.json()["agent_id"] == "receiver" and event.json()["state"] == "open"  # type: ignore[index]
    finally:
        for agent in agents:
            agent.stop()
        await admin.aclose()
