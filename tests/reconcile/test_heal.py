"""restore_missing_users (for the registry after a Redis restart) against a real redis-server."""

from __future__ import annotations

import asyncio
from typing import Any

from redis import asyncio as aioredis

from swarm.keys import SwarmKeys
from swarm.reconcile.apply import bus_changes
from swarm.reconcile.heal import restore_missing_users
from swarm.reconcile.observe import RedisBusPort
from swarm.reconcile.plan import BUS_CREATES, ActionKind, plan_actions
from swarm.reconcile.state import ActualState, RegistryObservation
from tests.reconcile.specdata import desired_from_docs, example_docs
from tests.support.services import RedisServer

SECRET = "test-bus-secret"
KEYS = SwarmKeys("research")


def _restore(server: RedisServer, swarm: str, secret: str | None) -> list[str]:
    async def run() -> list[str]:
        client = aioredis.Redis.from_url(server.url)
        try:
            return await restore_missing_users(client, swarm, secret)
        finally:
            await client.aclose()

    return asyncio.run(run())


def _acl_list_rules(client: Any, user: str) -> list[str]:
    """The user's rules as ``ACL LIST`` prints them (``user <name> on #<hash> ~... -@all +...``), name cut off."""
    line = next(ln for ln in client.execute_command("ACL", "LIST") if ln.split()[1] == user)
    return list(line.split()[2:])


def test_missing_users_come_back_as_the_reconciler_writes_them(redis_server: RedisServer) -> None:
    desired = desired_from_docs(example_docs())
    port = RedisBusPort(redis_server.url, "research", bus_secret=SECRET)
    client: Any = redis_server.client(decode_responses=True)
    try:
        actual = ActualState(registry=RegistryObservation(catalog=desired.registry), bus=port.observe(desired.bus))
        plan = plan_actions(desired, actual)
        port.apply(desired.bus, desired.acl, bus_changes([a for a in plan.actions if a.kind in BUS_CREATES]))
        written = {u: client.acl_getuser(u) for u in client.acl_users() if u.startswith(KEYS.redis_user_prefix)}
        other = SwarmKeys("research-x").redis_user("w")
        client.execute_command("ACL", "SETUSER", other, "reset", "on", ">theirs", "+ping")
        theirs = client.acl_getuser(other)
        edited = KEYS.redis_user("summarizer")
        as_written = _acl_list_rules(client, edited)
        client.execute_command("ACL", "SETUSER", edited, "+flushall")  # a hand edit: the reconciler's business
        edited_info = client.acl_getuser(edited)
        gone = sorted({KEYS.redis_user("architect"), KEYS.redis_user("reviewer")})
        for user in gone:
            client.acl_deluser(user)  # what a Redis restart does to every user

        assert _restore(redis_server, "research", None) == []  # no secret: nothing to derive passwords from
        assert _restore(redis_server, "research", SECRET) == gone
        for user in gone:
            assert client.acl_getuser(user) == written[user]
        assert client.acl_getuser(edited) == edited_info
        assert client.acl_getuser(other) == theirs
        assert _restore(redis_server, "research", SECRET) == []  # idempotent

        # the hand edit undone (its ACL LIST line: "-flushall" would be kept in Valkey's rules)
        client.execute_command("ACL", "SETUSER", edited, "reset", *as_written)
        seen = port.observe(desired.bus)
        again = plan_actions(desired, ActualState(registry=RegistryObservation(catalog=desired.registry), bus=seen))
        assert not [a for a in again.actions if a.kind is ActionKind.PUT_REDIS_USER]  # same rules exactly
    finally:
        client.close()
        port.close()


def test_nothing_is_created_without_applied_bus_settings(redis_server: RedisServer) -> None:
    client: Any = redis_server.client(decode_responses=True)
    try:
        assert _restore(redis_server, "research", SECRET) == []
        client.set(KEYS.bus, "not json")
        assert _restore(redis_server, "research", SECRET) == []
        assert client.acl_users() == ["default"]
    finally:
        client.close()
