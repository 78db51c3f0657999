"""Redis users changed outside their topics are healed by the resync pass (real redis-server).

The resync timer reads every agent's Redis user back whole and compares it with
what ``swarm.bus.apply.user_rules`` writes: a rule removed by hand, a disabled
user, a changed password or the rules of an older swarm version are re-applied;
the save-triggered path keeps trusting the users the daemon wrote itself.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import redis
from redis import asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.exceptions import AuthenticationError, NoPermissionError

from swarm.bus.apply import apply_bus, bus_password, user_rules
from swarm.desired import DesiredState
from swarm.keys import SwarmKeys
from swarm.reconcile.loop import Ports, ReconcileConfig, Reconciler
from swarm.reconcile.observe import RedisBusPort, user_differences
from swarm.reconcile.plan import ActionKind, desired_user_rights, plan_actions
from swarm.reconcile.state import ActualState, RegistryObservation, UserRights
from tests.reconcile.fakes import FakeRegistry
from tests.reconcile.specdata import REPO, desired_from_docs, example_docs
from tests.support.services import RedisServer

SECRET = "test-bus-secret"
KEYS = SwarmKeys("research")
AGENT = "summarizer"  # publishes results.*, subscribes tasks.*: every selector kind
USER = KEYS.redis_user(AGENT)
PASSWORD = bus_password(SECRET, "research", AGENT)


def _desired_rules() -> list[str]:
    desired = desired_from_docs(example_docs())
    a = desired.acl.agents[AGENT]
    return user_rules(KEYS, AGENT, a.publish, a.subscribe, PASSWORD)


def _as_agent(server: RedisServer, password: str = PASSWORD) -> Any:
    # no retries: a refused login is the expected answer, not a fault to back off from
    return redis.Redis(host="127.0.0.1", port=server.port, username=USER, password=password, decode_responses=True,
                       retry=Retry(NoBackoff(), 0))


def _logs_in(server: RedisServer) -> bool:
    agent = _as_agent(server)
    try:
        return bool(agent.ping())
    except (AuthenticationError, NoPermissionError):
        return False
    finally:
        agent.close()


def _may(*command: str) -> Callable[[RedisServer, Any], bool]:
    """Whether the agent's user may run ``command`` (ACL DRYRUN: Redis' own verdict)."""
    def check(_server: RedisServer, admin: Any) -> bool:
        return str(admin.execute_command("ACL", "DRYRUN", USER, *command)) == "OK"
    return check


def _selector_dropped() -> list[str]:
    rules = _desired_rules()
    first = next(i for i, r in enumerate(rules) if r.startswith("("))
    return ["reset", *rules[1:first], *rules[first + 1:]]


# (the ACL SETUSER arguments of the hand edit, whether the agent can do what the spec grants / the edit
# added, whether that is as desired, the words of the plan)
CASES: dict[str, tuple[Callable[[], list[str]], Callable[[RedisServer, Any], bool], bool, str]] = {
    # widened by hand: the agent may wipe the whole Redis; the resync takes it back
    "flushall-added": (lambda: ["+flushall"], _may("flushall"), False, "rules changed"),
    "catalog-writable": (lambda: ["~swarm:{research}:catalog", "+set"], _may("set", KEYS.catalog, "x"), False,
                         "rules changed"),
    # narrowed (or an older swarm version's rules): one selector of the spec's rules is gone
    "selector-dropped": (_selector_dropped, lambda s, a: a.acl_getuser(USER)["selectors"] == _SELECTORS, True,
                         "rules changed"),
    "disabled": (lambda: ["off"], lambda s, a: _logs_in(s), True, "disabled"),
    "password-changed": (lambda: ["resetpass", ">changed-by-hand"], lambda s, a: _logs_in(s), True, "password changed"),
}
_SELECTORS: list[Any] = []


@pytest.fixture
def world(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[Reconciler, RedisBusPort, Any]]:
    spec_dir = tmp_path / "specs"
    shutil.copytree(REPO / "specs", spec_dir)
    registry = FakeRegistry()
    bus = RedisBusPort(redis_server.url, "research", bus_secret=SECRET)

    def factory(_d: DesiredState, _c: ReconcileConfig) -> Ports:
        return Ports(registry=registry, bus=bus, status=bus)

    rec = Reconciler(ReconcileConfig(spec_paths=[spec_dir], redis_url=redis_server.url), factory)
    client: Any = redis_server.client(decode_responses=True)
    try:
        yield rec, bus, client
    finally:
        client.close()
        bus.close()
        rec.close()


def _commands(client: Any) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name: int(stats.get(f"cmdstat_acl|{name}", {}).get("calls", 0)) for name in ("getuser", "setuser", "list")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_resync_reapplies_a_user_changed_by_hand(
    case: str, world: tuple[Reconciler, RedisBusPort, Any], redis_server: RedisServer
) -> None:
    rec, _bus, client = world
    setuser, check, desired_answer, why = CASES[case]
    assert rec.run_pass("start").state == "synced"
    desired_user = client.acl_getuser(USER)
    _SELECTORS[:] = desired_user["selectors"]
    assert check(redis_server, client) is desired_answer

    client.execute_command("ACL", "SETUSER", USER, *setuser())
    assert client.acl_getuser(USER) != desired_user
    assert check(redis_server, client) is not desired_answer  # the hand edit is in effect

    result = rec.run_pass("resync")
    assert result.state == "synced", result
    assert [(a.kind, a.target) for a in result.applied] == [(ActionKind.PUT_REDIS_USER, AGENT)]
    action = result.applied[0]
    assert action.description == f"agent {AGENT}: Redis user {USER} differs from the spec ({why} by hand); re-apply"
    assert client.acl_getuser(USER) == desired_user
    assert check(redis_server, client) is desired_answer  # healed
    assert rec.status is not None and rec.status.drift == [action.description]

    again = rec.run_pass("resync")
    assert again.state == "synced" and again.applied == []


def test_plan_details_name_what_differs(world: tuple[Reconciler, RedisBusPort, Any]) -> None:
    rec, bus, client = world
    assert rec.run_pass("start").state == "synced"
    assert rec.good is not None
    desired = rec.good.desired
    client.execute_command("ACL", "SETUSER", USER, "+flushall", "resetpass", ">x")
    seen = bus.observe(desired.bus)
    assert seen.users[AGENT].differs == {"password", "commands"}
    assert all(not r.differs for aid, r in seen.users.items() if aid != AGENT)
    actual = ActualState(registry=RegistryObservation(catalog=desired.registry), bus=seen)
    (action,) = plan_actions(desired, actual).actions
    assert action.description == (
        f"agent {AGENT}: Redis user {USER} differs from the spec (password changed, rules changed by hand); re-apply"
    )
    assert action.details == (
        "its command rules differ from what swarm writes",
        "its password is not the one derived from the bus secret",
        "(edited by hand, or written by another swarm version)",
    )


def test_a_user_of_the_previously_applied_spec_is_an_update(world: tuple[Reconciler, RedisBusPort, Any]) -> None:
    """A user equal to ``user_rules`` of the bus settings applied before was changed by the spec, not by hand."""
    rec, bus, client = world
    assert rec.run_pass("start").state == "synced"
    assert rec.good is not None
    desired = rec.good.desired
    rights = desired.acl.agents[AGENT]
    old_agent = desired.bus.agents[AGENT].model_copy(update={"publish": rights.publish[:1]})
    old_bus = desired.bus.model_copy(update={"agents": {**desired.bus.agents, AGENT: old_agent}})
    client.set(KEYS.bus, old_bus.model_dump_json())  # what the previous spec applied
    old_rules = user_rules(KEYS, AGENT, rights.publish[:1], rights.subscribe, PASSWORD)
    client.execute_command("ACL", "SETUSER", USER, *old_rules, "off")
    seen = bus.observe(desired.bus)
    actual = ActualState(registry=RegistryObservation(catalog=desired.registry), bus=seen)
    actions = [a for a in plan_actions(desired, actual).actions if a.kind is ActionKind.PUT_REDIS_USER]
    (action,) = actions
    if old_rules == user_rules(KEYS, AGENT, rights.publish, rights.subscribe, PASSWORD):
        # the rules do not name topics (the router enforces them): the spec change leaves the user alone
        assert seen.users[AGENT] == UserRights(frozenset(rights.publish), frozenset(rights.subscribe), enabled=False)
        assert action.description == f"agent {AGENT}: Redis user {USER} differs from the spec (disabled by hand); re-apply"
    else:
        assert seen.users[AGENT] == UserRights(
            publish=frozenset(rights.publish[:1]), subscribe=frozenset(rights.subscribe), enabled=False
        )
        assert action.description == f"agent {AGENT}: update Redis user {USER}"
        assert action.details == ("is disabled: enable it", f"gains publish on {rights.publish[1]}")


def test_save_path_trusts_written_users_and_resync_reads_without_writing(
    world: tuple[Reconciler, RedisBusPort, Any],
) -> None:
    """Cost: a file-triggered pass reads no user; a steady resync lists all users at once
    (one ACL LIST), reads none one by one and writes none of them (only the scratch user)."""
    rec, _bus, client = world
    assert rec.run_pass("start").state == "synced"
    assert rec.good is not None
    assert rec.run_pass("resync").applied == []  # fills the expected-user cache if start did not
    lines_before = _agent_lines(client)
    before = _commands(client)
    assert rec.run_pass("file").applied == []
    assert _commands(client) == before
    assert rec.run_pass("resync").applied == []
    after = _commands(client)
    templates = {(frozenset(a.publish), frozenset(a.subscribe)) for a in rec.good.desired.bus.agents.values()}
    assert after["getuser"] == before["getuser"]
    assert after["list"] == before["list"] + 1
    assert 1 <= after["setuser"] - before["setuser"] <= len(templates)  # the scratch user(s), one per template
    assert _agent_lines(client) == lines_before  # no agent's user was written

    client.execute_command("ACL", "SETUSER", USER, "+flushall")
    assert rec.run_pass("file").applied == []  # the save path does not look (by design)
    assert [a.target for a in rec.run_pass("resync").applied] == [AGENT]


def _agent_lines(client: Any) -> list[str]:
    return sorted(line for line in client.execute_command("ACL", "LIST") if line.startswith(f"user {KEYS.redis_user('')}"))


def test_only_a_changed_user_is_read_back_one_by_one(world: tuple[Reconciler, RedisBusPort, Any]) -> None:
    """ACL LIST judges the unchanged users; the changed one is read with GETUSER, which names what differs."""
    rec, bus, client = world
    assert rec.run_pass("start").state == "synced"
    assert rec.good is not None
    desired = rec.good.desired
    client.execute_command("ACL", "SETUSER", USER, "+flushall")
    before = _commands(client)
    seen = bus.observe(desired.bus)
    assert _commands(client)["getuser"] - before["getuser"] <= 2  # the user, and maybe a fresh expected reply
    assert seen.users[AGENT].differs == {"commands"}
    assert all(not r.differs and r.enabled for aid, r in seen.users.items() if aid != AGENT)
    assert set(seen.users) == set(desired.acl.agents)
    assert not [u for u in client.acl_users() if ":" in u]  # the scratch users are gone


def test_users_written_by_bus_apply_are_equal(redis_server: RedisServer) -> None:
    """``swarm bus apply`` (the compose setup service) and the reconciler agree: nothing to re-apply."""
    desired = desired_from_docs(example_docs())
    asyncio.run(_apply_with_bus_apply(redis_server, desired))
    port = RedisBusPort(redis_server.url, "research", bus_secret=SECRET)
    try:
        seen = port.observe(desired.bus)
        assert seen.users == desired_user_rights(desired)
        actual = ActualState(registry=RegistryObservation(catalog=desired.registry), bus=seen)
        assert plan_actions(desired, actual).empty
        assert not [u for u in port._redis.acl_users() if ":" in u]  # the scratch user is gone
    finally:
        port.close()


def test_a_stale_cached_reply_never_calls_a_user_changed(redis_server: RedisServer) -> None:
    """A live user that differs from the cached reply is checked against a fresh one."""
    desired = desired_from_docs(example_docs())
    port = RedisBusPort(redis_server.url, "research", bus_secret=SECRET)
    try:
        asyncio.run(_apply_with_bus_apply(redis_server, desired))
        assert not port.observe(desired.bus).users[AGENT].differs
        port._canonical = {rules: {**reply, "commands": ["+stale"]} for rules, reply in port._canonical.items()}
        assert all(not r.differs for r in port.observe(desired.bus).users.values())
    finally:
        port.close()


async def _apply_with_bus_apply(server: RedisServer, desired: DesiredState) -> None:
    client = aioredis.Redis.from_url(server.url)
    try:
        await apply_bus(client, desired.bus, desired.acl, secret=SECRET)
    finally:
        await client.aclose()


def test_user_differences_names_fields() -> None:
    want = {"flags": ["on", "sanitize-payload"], "passwords": ["a"], "commands": ["+ping"], "keys": [],
            "channels": [], "selectors": [], "categories": ["-@all"], "enabled": True}
    assert user_differences(want, want) == frozenset()
    assert user_differences({**want, "flags": ["off", "sanitize-payload"], "enabled": False}, want) == frozenset()
    assert user_differences({**want, "flags": ["on", "sanitize-payload", "nopass"], "passwords": []}, want) == {
        "flags", "password"}
    assert user_differences({**want, "selectors": [["commands", "-@all +xadd"]]}, want) == {"selectors"}


def test_batched_reads_and_template_replies_give_the_per_user_plan(
    world: tuple[Reconciler, RedisBusPort, Any], redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Users read in batches of 2 and compared with one template reply per topic set plan
    exactly what comparing each user with its own Redis-computed reply plans: a missing
    user, extra rights, a wrong password, a disabled user."""
    import swarm.reconcile.observe as observe_mod

    rec, bus, client = world
    assert rec.run_pass("start").state == "synced"
    assert rec.good is not None
    desired = rec.good.desired
    others = sorted(a for a in desired.acl.agents if a != AGENT)
    assert len(others) >= 3, others
    client.execute_command("ACL", "SETUSER", USER, "+flushall")
    client.execute_command("ACL", "SETUSER", KEYS.redis_user(others[0]), "resetpass", ">wrong")
    client.execute_command("ACL", "SETUSER", KEYS.redis_user(others[1]), "off")
    client.acl_deluser(KEYS.redis_user(others[2]))

    monkeypatch.setattr(observe_mod, "USER_BATCH", 2)
    before = _commands(client)
    batched = bus.observe(desired.bus)
    reads = _commands(client)["getuser"] - before["getuser"]
    # one GETUSER per live user, plus the scratch user's: one per set of topics, not one per user
    topic_sets = {(frozenset(a.publish), frozenset(a.subscribe)) for a in desired.bus.agents.values()}
    assert reads <= len(desired.acl.agents) - 1 + len(topic_sets)

    fresh = RedisBusPort(redis_server.url, "research", bus_secret=SECRET)
    # the old way: no template, every user compared with the reply of its own rules
    monkeypatch.setattr(RedisBusPort, "_shape", lambda self, aid, topics: (self._rules(aid, *topics), False))
    try:
        per_user = fresh.observe(desired.bus)
    finally:
        fresh.close()
    assert batched.users == per_user.users
    assert batched.users[AGENT].differs == {"commands"}
    assert batched.users[others[0]].differs == {"password"}
    assert not batched.users[others[1]].enabled
    assert others[2] not in batched.users
    actual = ActualState(registry=RegistryObservation(catalog=desired.registry), bus=batched)
    targets = sorted((a.kind, a.target) for a in plan_actions(desired, actual).actions)
    assert targets == sorted([(ActionKind.PUT_REDIS_USER, AGENT), (ActionKind.PUT_REDIS_USER, others[0]),
                              (ActionKind.PUT_REDIS_USER, others[1]), (ActionKind.PUT_REDIS_USER, others[2])])
