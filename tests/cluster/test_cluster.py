"""A swarm on a real Redis Cluster (3 masters, 3 replicas), reached through a node that does
NOT own the swarm's slot: reconcile, registry, router, bus, status; then a master failover
(CLUSTER FAILOVER on the owner's replica) that loses no routed message and no registration,
after which the agents log in as their own users on the promoted node."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from swarm.bus.apply import agent_redis_url, bus_password
from swarm.bus.bus import EventBus
from swarm.errors import SwarmError
from swarm.keys import SwarmKeys
from swarm.redis_conn import async_client, mirror_users, swarm_slot, sync_client
from tests.cluster.conftest import NodeUrl
from tests.reconcile.conftest import run_cli
from tests.reconcile.specdata import REPO
from tests.registry.conftest import TEST_SECRET, RegistryProcess
from tests.support.cluster import RedisCluster

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

SWARM = "research"
KEYS = SwarmKeys(SWARM)


def _reconciled(cluster: RedisCluster, registry_factory: Any, spec_dir: Path, tmp_path: Path) -> tuple[str, RegistryProcess]:
    """The swarm installed by `swarm reconcile --once` through a node that does not own its slot."""
    url = cluster.non_owner_url(SWARM)
    assert cluster.node(int(url.rsplit(":", 1)[1].split("/")[0])).port != cluster.owner(SWARM).port
    reg = registry_factory(NodeUrl(url), swarm=SWARM)  # type: ignore[arg-type]
    once = run_cli("reconcile", str(spec_dir), "--registry-url", reg.url, "--redis-url", url, "--once", cwd=tmp_path)
    assert once.returncode == 0, once.stdout + once.stderr
    return url, reg


def _users_everywhere(cluster: RedisCluster, agent_ids: list[str]) -> None:
    for node in cluster.nodes:
        with node.client() as c:
            for agent_id in agent_ids:
                assert c.acl_getuser(KEYS.redis_user(agent_id)) is not None, (node.port, agent_id)


def _agent(url: str, agent_id: str) -> EventBus:
    return EventBus(redis_url=agent_redis_url(url, SWARM, agent_id, TEST_SECRET), swarm=SWARM, agent_id=agent_id,
                    block_ms=200)


async def _collect(bus: EventBus, want: set[str], timeout: float = 30.0) -> set[str]:
    seen: set[str] = set()

    async def run() -> None:
        async for message in bus.subscribe():
            seen.add(message.message_id)
            await message.ack()
            if want <= seen:
                return

    try:
        await asyncio.wait_for(run(), timeout)
    except asyncio.TimeoutError:
        pass
    return seen


def test_the_client_finds_the_owner_of_the_slot_from_any_node(redis_cluster: RedisCluster) -> None:
    owner = redis_cluster.owner(SWARM)
    with owner.client() as c:
        assert c.execute_command("CLUSTER", "KEYSLOT", KEYS.bus) == swarm_slot(SWARM)
    for node in redis_cluster.nodes:  # masters and replicas
        client = sync_client(node.url, swarm=SWARM, decode_responses=True)
        with client.pipeline(transaction=True) as tx:  # WATCH + MULTI work: a plain client of the owner
            tx.watch(KEYS.status)
            tx.multi()
            tx.incr(KEYS.status)
            tx.execute()
        resolver = client.connection_pool.connection_kwargs["resolver"]
        assert resolver.cluster is True and resolver.owner == ("127.0.0.1", owner.port)
        client.close()
    with owner.client() as c:
        assert c.get(KEYS.status) == str(len(redis_cluster.nodes))


async def test_users_are_mirrored_to_every_node_and_extra_ones_removed(redis_cluster: RedisCluster) -> None:
    client = async_client(redis_cluster.non_owner_url(SWARM), swarm=SWARM, decode_responses=True)
    try:
        await client.execute_command("ACL", "SETUSER", KEYS.redis_user("a"), "on", ">pw", f"%R~{KEYS.bus}",  # type: ignore[no-untyped-call]
                                     "(+get ~x)", "+ping")
        assert await mirror_users(client, SWARM) == len(redis_cluster.nodes) - 1
        assert await mirror_users(client, SWARM) == 0  # in step: nothing written
        stray = redis_cluster.replica_of(redis_cluster.owner(SWARM))
        with stray.client() as c:
            c.execute_command("ACL", "SETUSER", KEYS.redis_user("ghost"), "on", ">x")
            c.execute_command("ACL", "SETUSER", "someone-else", "on", ">x")
        assert await mirror_users(client, SWARM) == 1
        for node in redis_cluster.nodes:
            with node.client() as c:
                users = c.acl_users()
                assert KEYS.redis_user("a") in users and KEYS.redis_user("ghost") not in users
                info = c.acl_getuser(KEYS.redis_user("a"))
                assert info["selectors"], node.port  # the selector came along whole
            with redis.Redis(port=node.port, username=KEYS.redis_user("a"), password="pw") as agent:
                assert agent.ping()
        with stray.client() as c:
            assert "someone-else" in c.acl_users()  # not this swarm's: left alone
    finally:
        await client.aclose()


def test_registry_router_bus_reconcile_and_status_on_a_cluster(
    redis_cluster: RedisCluster, registry_factory: Any, router_factory: Any, spec_dir: Path, tmp_path: Path
) -> None:
    url, reg = _reconciled(redis_cluster, registry_factory, spec_dir, tmp_path)
    with redis_cluster.owner(SWARM).client() as c:
        assert c.exists(KEYS.bus, KEYS.acl, KEYS.catalog) == 3  # on the owner of the slot
    agents = sorted(json.loads((REPO / "compiled" / SWARM / "acl.json").read_text())["agents"])
    _users_everywhere(redis_cluster, agents)

    status = run_cli("status", str(spec_dir), "--registry-url", reg.url, "--redis-url", url, "-o", "json", cwd=tmp_path)
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["state"] == "synced"
    again = run_cli("plan", str(spec_dir), "--registry-url", reg.url, "--redis-url", url, cwd=tmp_path)
    assert again.returncode == 0 and "no changes" in again.stdout, again.stdout + again.stderr

    r = reg.register("web-researcher", host="127.0.0.1", port=9102)
    assert r.status_code in (200, 201), r.text
    listed = reg.get("/agents")
    assert "web-researcher" in [a["agent_id"] for a in listed.json()["agents"]], listed.text

    router_factory(redis_url=url, swarm=SWARM)

    async def bus_round() -> None:
        planner, worker = _agent(url, "architect"), _agent(url, "web-researcher")
        await planner.connect()
        await worker.connect()
        try:
            sent = await planner.publish("tasks.research", {"q": "cluster"}, message_id="m1", wait=True, timeout=10)
            assert sent.status == "routed"
            assert await _collect(worker, {"m1"}, timeout=20) == {"m1"}
        finally:
            await planner.close()
            await worker.close()

    asyncio.run(bus_round())


def test_a_master_failover_loses_no_routed_message_and_no_registration(
    redis_cluster: RedisCluster, registry_factory: Any, router_factory: Any, spec_dir: Path, tmp_path: Path
) -> None:
    url, reg = _reconciled(redis_cluster, registry_factory, spec_dir, tmp_path)
    assert reg.register("web-researcher", host="127.0.0.1", port=9102).status_code in (200, 201)
    router_factory(redis_url=url, swarm=SWARM)
    timings: dict[str, float] = {}

    async def scenario() -> tuple[set[str], set[str]]:
        planner, worker = _agent(url, "architect"), _agent(url, "web-researcher")
        await planner.connect()
        await worker.connect()
        routed: set[str] = set()
        try:
            for i in range(20):
                assert (await planner.publish("tasks.research", {"i": i}, message_id=f"before-{i}",
                                              wait=True, timeout=10)).status == "routed"
                routed.add(f"before-{i}")
                if i == 9:  # the first half consumed and acked before the failover, the rest waits in the inbox
                    first = await _collect(worker, set(routed), timeout=20)
                    assert first == routed

            await asyncio.to_thread(redis_cluster.failover, SWARM)
            start = time.monotonic()
            while True:  # publishing resumes on the promoted master
                try:
                    await planner.publish("tasks.research", {"i": "after"}, message_id="after-0", wait=True, timeout=2)
                    break
                except SwarmError:
                    if time.monotonic() - start > 60:
                        raise
                    await asyncio.sleep(0.05)
            timings["failover_to_publish_s"] = time.monotonic() - start
            routed.add("after-0")
            rest = await _collect(worker, routed - first, timeout=30)
            return routed, first | rest
        finally:
            await planner.close()
            await worker.close()

    routed, delivered = asyncio.run(scenario())
    assert routed <= delivered, sorted(routed - delivered)
    print(f"failover to first successful publish: {timings['failover_to_publish_s']:.3f}s")

    new_owner = redis_cluster.owner(SWARM)
    for agent_id in ("architect", "web-researcher"):  # their own users on the promoted node
        with redis.Redis(port=new_owner.port, username=KEYS.redis_user(agent_id),
                         password=bus_password(TEST_SECRET, SWARM, agent_id)) as agent:
            assert agent.get(KEYS.bus) is not None  # logged in on the promoted master, its data there
    beat = httpx.post(f"{reg.url}/agents/web-researcher/heartbeat", headers=reg.agent_headers("web-researcher"), timeout=10)
    assert beat.status_code == 200, beat.text  # the registration survived the failover
    listed = reg.get("/agents")
    assert "web-researcher" in [a["agent_id"] for a in listed.json()["agents"]]


def test_publishing_resumes_when_the_owner_is_killed(
    redis_cluster: RedisCluster, registry_factory: Any, router_factory: Any, spec_dir: Path, tmp_path: Path
) -> None:
    """kill -9 of the slot's master: its replica takes over after the node timeout; the clients,
    which have only the dead node's address and the URL's, find the new owner and go on."""
    url, reg = _reconciled(redis_cluster, registry_factory, spec_dir, tmp_path)
    assert reg.register("web-researcher", host="127.0.0.1", port=9102).status_code in (200, 201)
    router_factory(redis_url=url, swarm=SWARM)

    async def scenario() -> set[str]:
        planner, worker = _agent(url, "architect"), _agent(url, "web-researcher")
        await planner.connect()
        await worker.connect()
        try:
            assert (await planner.publish("tasks.research", {}, message_id="before", wait=True, timeout=10)).status == "routed"
            old = redis_cluster.owner(SWARM)
            replica = redis_cluster.replica_of(old)
            assert old.proc is not None
            old.proc.kill()
            old.proc.wait()
            start = time.monotonic()
            while True:
                try:
                    await planner.publish("tasks.research", {}, message_id="after", wait=True, timeout=2)
                    break
                except SwarmError:
                    assert time.monotonic() - start < 60, "no publish a minute after the owner died"
                    await asyncio.sleep(0.1)
            assert redis_cluster.owner(SWARM).port == replica.port
            return await _collect(worker, {"before", "after"}, timeout=30)
        finally:
            await planner.close()
            await worker.close()

    assert asyncio.run(scenario()) >= {"before", "after"}
    beat = httpx.post(f"{reg.url}/agents/web-researcher/heartbeat", headers=reg.agent_headers("web-researcher"), timeout=10)
    assert beat.status_code == 200, beat.text
