"""The Redis bus port against a real redis-server: observe, apply (bus apply code), prune, drift."""

from __future__ import annotations

import shutil
import asyncio
from pathlib import Path
from typing import Any, Callable

import pytest
import redis
from redis import asyncio as aioredis

from swarm.bus.apply import apply_bus
from swarm.desired import DesiredState
from swarm.errors import RedisUnavailableError
from swarm.keys import SwarmKeys
from swarm.reconcile.loop import Ports, ReconcileConfig, Reconciler
from swarm.reconcile.observe import RedisBusPort
from swarm.reconcile.apply import bus_changes
from swarm.reconcile.plan import BUS_CREATES, ActionKind, plan_actions
from swarm.reconcile.state import ActualState, BusChanges, RegistryObservation
from swarm.reconcile.status import parse_status
from tests.reconcile.fakes import FakeRegistry
from tests.reconcile.specdata import REPO, desired_from_docs, edit, example_docs, swarm_doc
from tests.support.services import RedisServer

SECRET = "test-bus-secret"
KEYS = SwarmKeys("research")


def apply_all(port: RedisBusPort, desired: DesiredState) -> None:
    """Create whatever the plan says is missing (what a pass does)."""
    plan = plan_actions(desired, _actual(port, desired))
    port.apply(desired.bus, desired.acl, bus_changes([a for a in plan.actions if a.kind in BUS_CREATES]))


def _actual(port: RedisBusPort, desired: DesiredState) -> ActualState:
    return ActualState(registry=RegistryObservation(catalog=desired.registry), bus=port.observe(desired.bus))


def test_apply_then_observe_is_converged(redis_server: RedisServer) -> None:
    desired = desired_from_docs(example_docs())
    port = RedisBusPort(redis_server.url, "research", bus_secret=SECRET)
    try:
        first = plan_actions(desired, _actual(port, desired))
        assert {a.kind for a in first.actions} >= {ActionKind.CREATE_STREAM, ActionKind.PUT_REDIS_USER}
        apply_all(port, desired)
        seen = port.observe(desired.bus)
        assert seen.streams == frozenset(desired.bus.topics)
        assert seen.groups == {}  # the topic logs have no consumer groups
        assert seen.outboxes == {aid: {"router"} for aid in desired.bus.agents}
        assert seen.inboxes == {aid: {aid} for aid in desired.bus.agents}
        assert seen.users["summarizer"].publish == set(desired.bus.agents["summarizer"].publish)
        assert not seen.users["summarizer"].differs
        assert plan_actions(desired, _actual(port, desired)).empty
        client: Any = redis.Redis.from_url(port.url, decode_responses=True)
        try:  # groups at id 0: an entry written before the group existed is still delivered
            for aid in desired.bus.agents:
                (outbox,) = client.xinfo_groups(KEYS.outbox(aid))
                (inbox,) = client.xinfo_groups(KEYS.inbox(aid))
                assert (outbox["name"], outbox["last-delivered-id"]) == ("router", "0-0")
                assert (inbox["name"], inbox["last-delivered-id"]) == (aid, "0-0")
            assert sorted(client.acl_users()) == sorted(["default", *(KEYS.redis_user(a) for a in desired.bus.agents)])
        finally:
            client.close()
    finally:
        port.close()


def test_an_outbox_written_before_its_group_is_routed_from_the_start(redis_server: RedisServer) -> None:
    """An agent that XADDs before the reconciler made its outbox loses nothing: the group starts at 0."""
    desired = desired_from_docs(example_docs())
    port = RedisBusPort(redis_server.url, "research", bus_secret=SECRET)
    client: Any = redis_server.client(decode_responses=True)
    try:
        early = client.xadd(KEYS.outbox("summarizer"), {"topic": "results.summary", "payload": "{}"})
        plan = plan_actions(desired, _actual(port, desired))
        assert "agent summarizer: its outbox lost consumer group router; re-create it at id 0 (read by the router)" in [
            a.description for a in plan.actions]
        apply_all(port, desired)
        reply = client.xreadgroup("router", "r1", {KEYS.outbox("summarizer"): ">"}, count=10)
        assert [entry_id for entry_id, _ in reply[0][1]] == [early]
    finally:
        client.close()
        port.close()


def test_another_swarms_users_are_never_rewritten_or_deleted(redis_server: RedisServer) -> None:
    """Swarm research-x's user for agent w (and a look-alike of the old naming) survive a --prune pass of research."""
    desired = desired_from_docs(example_docs())
    port = RedisBusPort(redis_server.url, "research", bus_secret=SECRET)
    client: Any = redis_server.client(decode_responses=True)
    other = SwarmKeys("research-x").redis_user("w")
    try:
        for user in (other, "swarm-research-x-w", "swarm.research.x.w"):
            client.execute_command("ACL", "SETUSER", user, "reset", "on", ">theirs", "+ping")
        before = {u: client.acl_getuser(u) for u in (other, "swarm-research-x-w", "swarm.research.x.w")}
        apply_all(port, desired)
        plan = plan_actions(desired, _actual(port, desired), prune=True, force_prune=True)
        assert not [a for a in plan.actions if a.kind is ActionKind.DELETE_REDIS_USER]
        assert {u: client.acl_getuser(u) for u in before} == before
        theirs = redis.Redis(host="127.0.0.1", port=redis_server.port, username=other, password="theirs")
        try:
            assert theirs.ping()
        finally:
            theirs.close()
    finally:
        port.close()


def _canonical_user(info: dict[str, Any]) -> object:
    """ACL GETUSER with Redis's hash-order of commands and patterns taken out."""
    def words(v: object) -> object:
        return sorted(str(v).split()) if isinstance(v, str) else sorted(map(str, v)) if isinstance(v, list) else v

    selectors = sorted(
        repr({k: words(v) for k, v in zip(sel[::2], sel[1::2])}) for sel in info.get("selectors", [])
    )
    return {k: words(v) for k, v in info.items() if k != "selectors"}, selectors


def test_targeted_apply_leaves_redis_as_bus_apply_does(redis_factory: Callable[..., RedisServer]) -> None:
    """Our per-object apply and the bus's own ``apply_bus`` produce the same Redis."""
    desired = desired_from_docs(example_docs())
    ours, theirs = redis_factory(appendonly=False), redis_factory(appendonly=False)
    port = RedisBusPort(ours.url, "research", bus_secret=SECRET)

    async def bus_apply() -> None:
        client = aioredis.Redis.from_url(theirs.url)
        try:
            await apply_bus(client, desired.bus, desired.acl, secret=SECRET)
        finally:
            await client.aclose()

    a: Any = ours.client(decode_responses=True)
    b: Any = theirs.client(decode_responses=True)
    try:
        apply_all(port, desired)
        asyncio.run(bus_apply())
        for key in sorted(b.keys("swarm:*")):
            assert a.type(key) == b.type(key), key
            if b.type(key) == "string":
                assert a.get(key) == b.get(key), key
            else:
                assert {g["name"] for g in a.xinfo_groups(key)} == {g["name"] for g in b.xinfo_groups(key)}, key
        assert sorted(a.keys("swarm:*")) == sorted(b.keys("swarm:*"))
        for user in b.acl_users():
            assert _canonical_user(a.acl_getuser(user)) == _canonical_user(b.acl_getuser(user)), user
    finally:
        a.close()
        b.close()
        port.close()


def test_hand_deleted_acl_key_and_user_are_planned_back(redis_server: RedisServer) -> None:
    desired = desired_from_docs(example_docs())
    port = RedisBusPort(redis_server.url, "research", bus_secret=SECRET)
    client: Any = redis_server.client(decode_responses=True)
    try:
        apply_all(port, desired)
        client.delete(KEYS.acl)
        client.acl_deluser(KEYS.redis_user("reviewer"))
        client.execute_command("ACL", "SETUSER", KEYS.redis_user("summarizer"), "off")
        kinds = sorted((a.kind.value, a.target) for a in plan_actions(desired, _actual(port, desired)).actions)
        assert kinds == [
            ("put-redis-user", "reviewer"),
            ("put-redis-user", "summarizer"),
            ("write-acl-table", "research"),
        ]
        apply_all(port, desired)
        assert plan_actions(desired, _actual(port, desired)).empty
    finally:
        client.close()
        port.close()


def test_prune_deletes_exactly_what_the_plan_says(redis_server: RedisServer) -> None:
    docs = example_docs()
    desired = desired_from_docs(docs)
    port = RedisBusPort(redis_server.url, "research", bus_secret=SECRET)
    try:
        apply_all(port, desired)
        changed = edit(docs)
        sw = swarm_doc(changed)
        sw["topics"] = [t for t in sw["topics"] if t["name"] != "tasks.admin.reset"]
        changed = [d for d in changed if d.get("id") != "reviewer"]
        desired2 = desired_from_docs(changed)
        plan = plan_actions(desired2, _actual(port, desired2), prune=True)
        assert plan.refused is None
        for action in plan.actions:
            if action.kind is ActionKind.DELETE_STREAM:
                port.delete_stream(desired2.bus, action.target)
            elif action.kind is ActionKind.DELETE_GROUP:
                assert action.group is not None
                port.delete_group(desired2.bus, action.target, action.group)
            elif action.kind is ActionKind.DELETE_REDIS_USER:
                port.delete_user(desired2.bus, action.target)
            elif action.kind is ActionKind.DELETE_MAILBOX:
                port.delete_mailbox(desired2.bus, action.target)
        assert sorted((a.kind.value, a.target) for a in plan.actions if a.prune) == [
            ("delete-mailbox", "reviewer"), ("delete-redis-user", "reviewer"), ("delete-stream", "tasks.admin.reset")]
        apply_all(port, desired2)
        seen = port.observe(desired2.bus)
        assert "tasks.admin.reset" not in seen.streams and "reviewer" not in seen.users
        assert "reviewer" not in seen.outboxes and "reviewer" not in seen.inboxes
        assert "summarizer" in seen.outboxes and "summarizer" in seen.users
        assert plan_actions(desired2, _actual(port, desired2), prune=True).empty
    finally:
        port.close()


def test_breakers_and_protection_are_seen(redis_server: RedisServer) -> None:
    desired = desired_from_docs(example_docs())
    port = RedisBusPort(redis_server.url, "research", bus_secret=SECRET)
    client: Any = redis_server.client(decode_responses=True)
    try:
        assert port.observe(desired.bus).breakers_open == () and not port.observe(desired.bus).protection
        client.hset(KEYS.breaker("summarizer"), mapping={"state": "open", "failures": "4"})
        client.hset(KEYS.breaker("reviewer"), mapping={"state": "closed", "failures": "0"})
        client.set(KEYS.protection, "1795306056843")
        seen = port.observe(desired.bus)
        assert seen.breakers_open == ("summarizer",) and seen.protection
    finally:
        client.close()
        port.close()


def test_unreachable_redis_is_transient(redis_server: RedisServer) -> None:
    desired = desired_from_docs(example_docs())
    port = RedisBusPort(redis_server.url, "research", bus_secret=SECRET)
    redis_server.stop()
    try:
        with pytest.raises(RedisUnavailableError, match="redis at"):
            port.observe(desired.bus)
        with pytest.raises(RedisUnavailableError):
            port.apply(desired.bus, desired.acl, BusChanges(documents=True, users=("architect",)))
    finally:
        port.close()


def test_reconciler_heals_drift_and_keeps_status_in_redis(redis_server: RedisServer, tmp_path: Path) -> None:
    spec_dir = tmp_path / "specs"
    shutil.copytree(REPO / "specs", spec_dir)
    registry = FakeRegistry()
    bus = RedisBusPort(redis_server.url, "research", bus_secret=SECRET)

    def factory(_d: DesiredState, _c: ReconcileConfig) -> Ports:
        return Ports(registry=registry, bus=bus, status=bus)

    rec = Reconciler(ReconcileConfig(spec_paths=[spec_dir], redis_url=redis_server.url), factory)
    client: Any = redis_server.client(decode_responses=True)
    try:
        assert rec.run_pass("start").state == "synced"
        client.delete(KEYS.acl)
        result = rec.run_pass("resync")
        assert [a.kind for a in result.applied] == [ActionKind.WRITE_ACL_TABLE]
        assert client.exists(KEYS.acl)
        status = parse_status(client.get(KEYS.status))
        assert status is not None and status.state == "synced"
        assert status.drift == ["write the ACL table"] and status.drift_at is not None
        assert status.live is not None and status.live.agents_declared == 6
    finally:
        client.close()
        bus.close()


def test_users_of_the_old_naming_are_deleted_without_touching_another_swarms(redis_server: RedisServer) -> None:
    """``swarm-research-summarizer`` (before ``swarm.<N>.<id>``) still opens EVAL and raw topic XADD with the
    agent's password: any pass deletes it. ``swarm-research-x-w`` has swarm research-x's keys: it stays."""
    from swarm.bus.apply import bus_password

    desired = desired_from_docs(example_docs())
    port = RedisBusPort(redis_server.url, "research", bus_secret=SECRET)
    client: Any = redis_server.client(decode_responses=True)
    password = bus_password(SECRET, "research", "summarizer")
    old = "swarm-research-summarizer"
    theirs = "swarm-research-x-w"
    handmade = "swarm-research-ops"  # a hand-made user with keys outside the swarm: not ours to judge
    try:
        client.execute_command("ACL", "SETUSER", old, "reset", "on", f">{password}", "+eval", "+evalsha",
                               f"~{KEYS.breaker('summarizer')}", f"(+xadd %W~{KEYS.topic('results.summary')})")
        client.execute_command("ACL", "SETUSER", theirs, "reset", "on", ">x", "+eval",
                               f"~{SwarmKeys('research-x').breaker('w')}")
        client.execute_command("ACL", "SETUSER", handmade, "reset", "on", ">y", "+info", "~*")
        agent = redis.Redis(host="127.0.0.1", port=redis_server.port, username=old, password=password)
        try:
            assert agent.eval("return 1", 0) == 1  # the hole: scripts with the agent's own password
        finally:
            agent.close()
        before = {u: client.acl_getuser(u) for u in (theirs, handmade)}
        plan = plan_actions(desired, _actual(port, desired))  # no --prune
        legacy = [a for a in plan.actions if a.kind is ActionKind.DELETE_LEGACY_USER]
        assert [a.target for a in legacy] == [old]
        assert legacy[0].description.startswith(f"delete Redis user {old}: the naming before swarm.<swarm>.<agent>")
        from swarm.reconcile.apply import apply_plan

        apply_plan(plan, desired, FakeRegistry(), port, revision="r1")
        assert old not in client.acl_users()
        assert {u: client.acl_getuser(u) for u in before} == before
        apply_all(port, desired)
        assert not [a for a in plan_actions(desired, _actual(port, desired)).actions
                    if a.kind is ActionKind.DELETE_LEGACY_USER]
    finally:
        client.close()
        port.close()
