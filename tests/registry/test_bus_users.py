"""The registry re-creates the agents' Redis users after a Redis restart (no reconcile daemon running).

Redis keeps ACL users in memory only: even with the append-only file a restart forgets
them, and every agent's login fails. The reconcile daemon repairs that within about a
second; the registry, which notices the restart through Redis' run_id, repairs it too,
so a deployment whose reconciler is down still heals. Real redis-server, real registry.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import redis

from swarm.bus.apply import bus_password
from swarm.keys import SwarmKeys
from swarm.reconcile.apply import bus_changes
from swarm.reconcile.observe import RedisBusPort
from swarm.reconcile.plan import BUS_CREATES, plan_actions
from swarm.reconcile.state import ActualState, RegistryObservation
from tests.reconcile.specdata import desired_from_docs, example_docs
from tests.registry.conftest import TEST_SECRET, RegistryFactory
from tests.support.services import RedisServer

KEYS = SwarmKeys("research")


def _agent_login_works(server: RedisServer, agent_id: str) -> bool:
    client = redis.Redis(host="127.0.0.1", port=server.port, username=KEYS.redis_user(agent_id),
                         password=bus_password(TEST_SECRET, "research", agent_id), socket_timeout=2)
    try:
        return bool(client.ping())
    except redis.exceptions.RedisError:
        return False
    finally:
        client.close()


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_agent_users_come_back_after_a_redis_restart(
    redis_factory: Callable[..., RedisServer], registry_factory: RegistryFactory
) -> None:
    server = redis_factory()  # append-only: the applied bus settings survive, the users do not
    desired = desired_from_docs(example_docs())
    port = RedisBusPort(server.url, "research", bus_secret=TEST_SECRET)
    try:
        actual = ActualState(registry=RegistryObservation(catalog=desired.registry), bus=port.observe(desired.bus))
        plan = plan_actions(desired, actual)
        port.apply(desired.bus, desired.acl, bus_changes([a for a in plan.actions if a.kind in BUS_CREATES]))
    finally:
        port.close()
    agents = sorted(desired.bus.agents)
    assert all(_agent_login_works(server, a) for a in agents)

    registry = registry_factory(server, extra_args=["--sweep-interval", "0.2", "--no-probe", "--no-route"])
    registry.push()
    admin: Any = server.client(decode_responses=True)
    admin.execute_command("ACL", "SETUSER", "hand-made", "on", ">x", "+ping")  # not the swarm's: stays gone
    run_id = admin.info("server")["run_id"]
    admin.close()

    server.restart()
    admin = server.client(decode_responses=True)
    try:
        assert admin.info("server")["run_id"] != run_id
        assert _wait(lambda: all(_agent_login_works(server, a) for a in agents), 15.0), (
            "agents' Redis users were not re-created by the registry:\n" + registry.log_text()[-2000:]
        )
        assert "hand-made" not in admin.acl_users()
        assert "re-created" in registry.log_text()
    finally:
        admin.close()
