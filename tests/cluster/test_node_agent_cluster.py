"""A compiled node agent on a real Redis Cluster (3 masters, 3 replicas), its REDIS_URL naming a
master that does NOT own the swarm's slot: its user has no CLUSTER rights, so it follows the
MOVED replies to the owner (both connections) and receives what a Python agent published, and
what its handler publishes is routed back; after a CLUSTER FAILOVER it follows the next MOVED
to the promoted replica and goes on."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from swarm.bus import EventBus, apply_bus
from swarm.bus.apply import agent_redis_url, bus_password
from swarm.compiler import compile_loaded, write_output
from swarm.desired import AclDocument, BusPlan
from swarm.errors import SwarmError
from swarm.redis_conn import async_client
from swarm.spec.loader import load_spec_full
from tests.compiler.conftest import agent_doc, swarm_doc, write_spec
from tests.runtimes.node.conftest import node_modules  # noqa: F401  (fixture: one npm ci per session)
from tests.runtimes.node.support import link_modules, run
from tests.runtimes.node.test_node_agent_e2e import BUS, HANDLER, ROLES, status, wait_until
from tests.support.cluster import RedisCluster
from tests.support.router import RouterFactory, router_factory  # noqa: F401  (fixture)
from tests.support.services import ProcessServer, free_port

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

SWARM = "demo"
SECRET = "node-cluster-bus-secret"


async def _reply(worker: EventBus, want: str, timeout: float = 30.0) -> Any:
    """The node handler's answer to the message ``want`` (it publishes tasks.work with reply_to)."""
    async def first() -> Any:
        async for message in worker.subscribe():
            await message.ack()
            if message.payload.get("reply_to") == want:
                return message
        return None

    return await asyncio.wait_for(first(), timeout)


async def _publish(worker: EventBus, message_id: str) -> None:
    """Publish until routed (during a failover the slot is briefly unserved)."""
    start = time.monotonic()
    while True:
        try:
            sent = await worker.publish("results.work", {"id": message_id}, message_id=message_id, wait=True, timeout=2)
            assert sent.status in ("routed", "duplicate"), sent  # duplicate: an earlier try was routed
            return
        except SwarmError:
            assert time.monotonic() - start < 60, f"{message_id} not routed within a minute"
            await asyncio.sleep(0.1)


async def _started_agent(cluster: RedisCluster, tmp_path: Path, node_modules: Path,
                         router_factory: RouterFactory) -> tuple[ProcessServer, Path, str]:  # noqa: F811
    """The swarm applied through a non-owner master, its router, and the node agent (ready) with
    that master in its REDIS_URL; (agent, its log, the URL)."""
    repo = tmp_path / "repo"
    (repo / "handlers").mkdir(parents=True)
    (repo / "handlers" / "architect.ts").write_text(HANDLER)
    port = free_port()
    agents = [
        agent_doc("architect", port, runtime="node", role="planner", registry=False, subscribes=["results.work"],
                  publishes=["tasks.work"], handler="handlers/architect.ts:handle"),
        agent_doc("worker", port + 1, role="worker", registry=False, subscribes=["tasks.work"],
                  publishes=["results.work"]),
    ]
    files = compile_loaded(load_spec_full(write_spec(repo / "specs", swarm_doc(roles=ROLES, bus=BUS), agents)))
    write_output(files, repo / "compiled", SWARM)
    agent_dir = repo / "compiled" / SWARM / "agents" / "architect"
    link_modules(agent_dir, node_modules)
    run(["npm", "run", "build"], agent_dir)

    url = cluster.non_owner_url(SWARM)
    assert _port(url) != cluster.owner(SWARM).port
    admin = async_client(url, swarm=SWARM, decode_responses=True)
    await apply_bus(admin, BusPlan.model_validate_json(files[f"{SWARM}/bus.json"]),
                    AclDocument.model_validate_json(files[f"{SWARM}/acl.json"]), secret=SECRET)
    await admin.aclose()
    # the agent's own user logs in on the seed but may not ask the topology: MOVED is all it gets
    with redis.Redis(port=_port(url), username=f"swarm.{SWARM}.architect",
                     password=bus_password(SECRET, SWARM, "architect")) as as_agent:
        with pytest.raises(redis.exceptions.NoPermissionError):
            as_agent.execute_command("CLUSTER", "NODES")
    router_factory(redis_url=url, swarm=SWARM)

    log = tmp_path / "architect.log"
    agent = ProcessServer(
        ["node", "dist/main.js"], port=port, cwd=agent_dir, log=log,
        env={"AGENT_PORT": str(port), "SWARM_LISTEN_HOST": "127.0.0.1",
             "REDIS_URL": agent_redis_url(url, SWARM, "architect", SECRET)},
    ).start()
    try:
        wait_until(lambda: status(agent.url, "/health/ready") == 200, what="node agent ready")
    except AssertionError:
        agent.stop()
        raise
    return agent, log, url


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def _worker(url: str) -> EventBus:
    return EventBus(redis_url=agent_redis_url(url, SWARM, "worker", SECRET), swarm=SWARM, agent_id="worker",
                    block_ms=200)


async def _round(worker: EventBus, message_id: str, timeout: float = 60.0) -> None:
    """The Python worker publishes ``message_id``; the node handler's answer comes back, sent as the architect."""
    await _publish(worker, message_id)
    message = await _reply(worker, message_id, timeout=timeout)
    assert message.sender == "architect" and message.topic == "tasks.work"
    assert message.payload == {"reply_to": message_id, "got": {"id": message_id}}


async def test_node_agent_behind_a_non_owner_node_follows_moved_and_a_failover(
    redis_cluster: RedisCluster, tmp_path: Path, node_modules: Path, router_factory: RouterFactory,  # noqa: F811
) -> None:
    owner = redis_cluster.owner(SWARM)
    agent, log, url = await _started_agent(redis_cluster, tmp_path, node_modules, router_factory)
    try:
        worker = _worker(url)
        await worker.connect()
        try:
            await _round(worker, "before")
            text = log.read_text()
            assert f"served by 127.0.0.1:{owner.port} (MOVED from 127.0.0.1:{_port(url)})" in text, text[-3000:]

            old, new = await asyncio.to_thread(redis_cluster.failover, SWARM)
            assert old.port == owner.port and new.port != owner.port
            await _round(worker, "after")
            text = log.read_text()
            assert f"served by 127.0.0.1:{new.port} (MOVED from 127.0.0.1:{owner.port})" in text, text[-3000:]
        finally:
            await worker.close()
        stats = httpx.get(agent.url + "/health", timeout=2).json()["bus"]
        assert stats["acked"] >= 2 and stats["deadLettered"] == 0, stats
    finally:
        assert agent.stop() == 0, log.read_text()[-3000:]


async def test_node_agent_goes_back_to_its_url_node_when_the_owner_dies(
    redis_cluster: RedisCluster, tmp_path: Path, node_modules: Path, router_factory: RouterFactory,  # noqa: F811
) -> None:
    """kill -9 of the slot's master: the agent's connections to it fail; it goes back to the URL's
    node (backing off meanwhile), which redirects it to the promoted replica once the cluster
    has failed the dead master over."""
    agent, log, url = await _started_agent(redis_cluster, tmp_path, node_modules, router_factory)
    try:
        worker = _worker(url)
        await worker.connect()
        try:
            await _round(worker, "before")
            old = redis_cluster.owner(SWARM)
            replica = redis_cluster.replica_of(old)
            assert old.proc is not None
            old.proc.kill()
            old.proc.wait()
            await _round(worker, "after", timeout=90)
            assert redis_cluster.owner(SWARM).port == replica.port
            text = log.read_text()
            assert f"127.0.0.1:{old.port} failed (" in text and f"trying 127.0.0.1:{_port(url)} next" in text, text[-3000:]
            assert f"served by 127.0.0.1:{replica.port} (MOVED from 127.0.0.1:{_port(url)})" in text, text[-3000:]
        finally:
            await worker.close()
    finally:
        assert agent.stop() == 0, log.read_text()[-3000:]
