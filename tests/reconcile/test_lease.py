"""One writer per swarm: the reconcile lease and its fencing token (real redis-server, registry, daemons).

Two ``swarm reconcile --watch`` daemons with different specs of one swarm: only
the lease holder's catalog is live and it does not flap; after a SIGKILL of the
holder the standby takes over within two lease TTLs. A paused ex-holder (its
lease expired and taken by another) writes nothing: every write is fenced.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from swarm.desired import DesiredState
from swarm.keys import SwarmKeys
from swarm.reconcile.apply import apply_plan
from swarm.reconcile.lease import Lease, LeaseLost, read_lease
from swarm.reconcile.observe import RedisBusPort
from swarm.reconcile.plan import plan_actions
from swarm.reconcile.status import parse_status
from swarm.reconcile.state import ActualState, BusChanges, RegistryObservation
from swarm.spec.loader import load_spec_full
from tests.reconcile.conftest import Daemon, catalog_digest_live, run_cli
from tests.reconcile.fakes import FakeRegistry
from tests.reconcile.specdata import desired_from_docs, example_docs
from swarm.registry.auth import read_token
from tests.registry.conftest import TEST_SECRET, RegistryProcess
from tests.support.services import RedisServer

#: slow suite (two real daemons, SIGKILL and lease expiry); `.ci/run` runs it after the quick suite
pytestmark = pytest.mark.slow

KEYS = SwarmKeys("research")
TTL = 2.0


def _client(server: RedisServer) -> Any:
    return server.client(decode_responses=True)


def test_one_holder_renewal_and_release(redis_server: RedisServer) -> None:
    a_client, b_client = _client(redis_server), _client(redis_server)
    a, b = Lease(a_client, "research", owner="a", ttl=30), Lease(b_client, "research", owner="b", ttl=30)
    try:
        first = a.acquire()
        assert first is not None and first.token == 1
        assert b.acquire() is None and b.holder is not None and b.holder.owner == "a"
        assert a.acquire() == first  # the holder asking again renews, same token
        assert a.renew()
        a.release()
        second = b.acquire()
        assert second is not None and second.token == 2  # a new token for every new holder
        assert not a.renew() and a.fence is None
        holder, pttl, _standby = read_lease(a_client, "research")
        assert holder is not None and holder.owner == "b" and 0 < pttl <= 30_000
        a.mark_standby("waiting for b")
        quick = Lease(a_client, "research", owner="gone", ttl=0.01)
        quick.mark_standby("a standby that then died")
        time.sleep(0.1)  # past its three TTLs
        assert set(read_lease(a_client, "research")[2]) == {"a"}
        other = Lease(a_client, "research-x", owner="a", ttl=30)
        assert other.acquire() is not None  # another swarm's lease is another key
    finally:
        a_client.close()
        b_client.close()


def _desired() -> DesiredState:
    return desired_from_docs(example_docs())


def test_a_paused_ex_holder_writes_nothing(redis_server: RedisServer) -> None:
    """The holder pauses past its TTL, another takes the lease: the old one's writes are refused, Redis unchanged."""
    desired = _desired()
    client = _client(redis_server)
    old, new = Lease(client, "research", owner="old", ttl=30), Lease(client, "research", owner="new", ttl=30)
    port = RedisBusPort(redis_server.url, "research", bus_secret="s")
    try:
        port.set_fence(old.acquire())
        port.apply(desired.bus, desired.acl, BusChanges(streams=("tasks.research",)))  # while it holds: written
        assert client.exists(KEYS.topic("tasks.research"))

        client.delete(KEYS.lease)  # what the TTL does to a holder paused for longer than it
        assert new.acquire() is not None
        before = {k: client.type(k) for k in client.keys("swarm:*")}
        users = sorted(client.acl_users())
        with pytest.raises(LeaseLost):
            port.apply(desired.bus, desired.acl,
                       BusChanges(streams=tuple(desired.bus.topics), mailboxes=(("summarizer", "outbox"),),
                                  documents=True, users=tuple(desired.bus.agents)))
        with pytest.raises(LeaseLost):
            port.write_status('{"swarm": "research"}')
        with pytest.raises(LeaseLost):
            port.delete_stream(desired.bus, "tasks.research")
        assert {k: client.type(k) for k in client.keys("swarm:*")} == before  # nothing written, nothing deleted
        assert sorted(client.acl_users()) == users

        # the catalog push goes to the registry over HTTP: checked right before it
        registry = FakeRegistry()
        actual = ActualState(registry=RegistryObservation(catalog=None), bus=port.observe(desired.bus))
        plan = plan_actions(desired, actual)
        bus_only = [a for a in plan.actions if a.kind.value == "push-catalog"]
        assert bus_only
        with pytest.raises(LeaseLost):
            apply_plan(type(plan)(actions=tuple(bus_only)), desired, registry, port, revision="r",
                       check_fence=port.check_fence)
        assert registry.pushes == 0
    finally:
        port.close()
        client.close()


# --------------------------------------------------------------------------- two daemons


def _spec_variant(spec_dir: Path, version: str) -> None:
    """Change one agent's version: another spec (another catalog digest) of the same swarm."""
    path = spec_dir / "agents" / "workers.yaml"
    text = path.read_text()
    assert "id: summarizer\nname: Summarizer\nversion: 0.9.0\n" in text
    path.write_text(text.replace("id: summarizer\nname: Summarizer\nversion: 0.9.0\n",
                                 f"id: summarizer\nname: Summarizer\nversion: {version}\n"))


def _digest(spec_dir: Path) -> str:
    return load_spec_full(spec_dir).digest


def _catalog_events(live: RegistryProcess) -> int:
    client = _client(live.redis)
    try:
        return sum(1 for _id, fields in client.xrange(KEYS.events) if fields.get("type") == "catalog-changed")
    finally:
        client.close()


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, what
        time.sleep(0.05)
    return time.monotonic() - start


def test_two_daemons_one_writer_no_flapping_and_takeover_after_sigkill(
    live: RegistryProcess, spec_dir: Path, tmp_path: Path, daemon_factory: Callable[..., Daemon]
) -> None:
    other_dir = tmp_path / "other-specs"
    shutil.copytree(spec_dir, other_dir)
    _spec_variant(other_dir, "9.9.9")
    mine, theirs = _digest(spec_dir), _digest(other_dir)
    assert mine != theirs

    holder = daemon_factory(spec_dir, "--lease-ttl", str(TTL))
    holder.wait_for(lambda s: s.state == "synced" and s.last_applied is not None and s.last_applied.digest == mine)
    standby = daemon_factory(other_dir, "--lease-ttl", str(TTL))
    _wait(lambda: "standing by" in standby.log.read_text(), 20, "the second daemon never said it stands by")
    assert catalog_digest_live(live) is not None

    # a bounded window of several lease TTLs and resyncs (--resync 0.5): the catalog does not move
    events = _catalog_events(live)
    window_end = time.monotonic() + 3 * TTL
    while time.monotonic() < window_end:
        assert _catalog_events(live) == events, "the catalog flapped between the two specs"
        assert holder.alive() and standby.alive()
        time.sleep(0.1)
    status = holder.status()
    assert status is not None and status.last_applied is not None and status.last_applied.digest == mine

    shown = run_cli("status", str(spec_dir), "--registry-url", live.url, "--redis-url", live.redis.url, cwd=tmp_path)
    assert "reconcile lease: held by" in shown.stdout and f"pid {holder.proc.pid}" in shown.stdout  # type: ignore[union-attr]
    assert "standing by: " in shown.stdout and f"pid {standby.proc.pid}" in shown.stdout, shown.stdout  # type: ignore[union-attr]

    holder.stop(signal.SIGKILL)  # no release: the lease has to expire
    killed = time.monotonic()
    took = _wait(lambda: (s := standby.status()) is not None and s.last_applied is not None
                 and s.last_applied.digest == theirs, 2 * TTL, "the standby did not take over within two TTLs")
    assert took < 2 * TTL and time.monotonic() - killed < 2 * TTL + 0.5
    print(f"standby's catalog live {took:.2f}s after SIGKILL of the holder (TTL {TTL:g}s)")  # a figure
    read = {"Authorization": f"Bearer {read_token(TEST_SECRET, 'research')}"}
    catalog = httpx.get(live.url + "/catalog", headers=read, timeout=5).json()["catalog"]
    assert catalog["agents"]["summarizer"]["version"] == "9.9.9"


def test_once_refuses_while_a_daemon_holds_the_lease(
    live: RegistryProcess, spec_dir: Path, tmp_path: Path, daemon_factory: Callable[..., Daemon]
) -> None:
    d = daemon_factory(spec_dir, "--lease-ttl", "30")
    d.wait_for(lambda s: s.state == "synced")
    other = tmp_path / "other-specs"
    shutil.copytree(spec_dir, other)
    _spec_variant(other, "7.7.7")
    events = _catalog_events(live)
    once = run_cli("reconcile", str(other), "--once", "--registry-url", live.url, "--redis-url", live.redis.url,
                   "--compiled-dir", "", cwd=tmp_path)
    assert once.returncode == 1, once.stdout + once.stderr
    assert "standing by" in once.stdout and "another reconciler holds the lease" in once.stderr
    assert _catalog_events(live) == events

    # an invalid spec (the last applied one is read back from Redis) stands by too: the status stays the holder's
    client = _client(live.redis)
    try:
        broken = tmp_path / "broken-specs"
        shutil.copytree(spec_dir, broken)
        (broken / "agents" / "workers.yaml").write_text("id: [unclosed\n")
        bad = run_cli("reconcile", str(broken), "--once", "--registry-url", live.url, "--redis-url", live.redis.url,
                      "--compiled-dir", "", cwd=tmp_path)
        assert bad.returncode == 1, bad.stdout + bad.stderr
        assert "standing by" in bad.stdout
        after = parse_status(client.get(KEYS.status))  # the holder keeps writing its own (resync 0.5 s)
        assert after is not None and after.state == "synced" and after.last_error is None
    finally:
        client.close()
    d.stop()  # SIGTERM releases the lease at once
    again = run_cli("reconcile", str(other), "--once", "--registry-url", live.url, "--redis-url", live.redis.url,
                    "--compiled-dir", "", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _catalog_events(live) == events + 1


def test_a_holder_paused_mid_apply_cannot_push_after_losing_the_lease(
    live: RegistryProcess, spec_dir: Path, tmp_path: Path, daemon_factory: Callable[..., Daemon]
) -> None:
    """Daemon A stops (SIGSTOP) between its bus creations and its catalog push; its lease expires
    and B applies its own spec; A resumes (SIGCONT): its push is refused by the fence, B's catalog stays."""
    other_dir = tmp_path / "other-specs"
    shutil.copytree(spec_dir, other_dir)
    _spec_variant(other_dir, "8.8.8")
    theirs = _digest(other_dir)
    resume = tmp_path / "resume"
    a = daemon_factory(spec_dir, "--lease-ttl", str(TTL), start=False)
    a.env = {"SWARM_FAULT_PAUSE_AFTER": "put-redis-user", "SWARM_FAULT_RESUME_FILE": str(resume)}
    a.start()
    _wait(lambda: "paused after put-redis-user" in a.log.read_text(), 30, "A never reached the pause")
    assert a.proc is not None
    a.proc.send_signal(signal.SIGSTOP)  # the whole process: no more lease renewals either
    try:
        b = daemon_factory(other_dir, "--lease-ttl", str(TTL))
        b.wait_for(lambda s: s.state == "synced" and s.last_applied is not None and s.last_applied.digest == theirs)
        events = _catalog_events(live)
        resume.touch()
    finally:
        a.proc.send_signal(signal.SIGCONT)
    _wait(lambda: "fault hook: resumed" in a.log.read_text(), 20, "A did not resume")
    _wait(lambda: "standby" in a.log.read_text().split("fault hook: resumed", 1)[1], 20, "A did not stand by")
    assert catalog_digest_live(live) == theirs, "the paused ex-holder pushed its catalog"
    assert _catalog_events(live) == events
    status = b.status()
    assert status is not None and status.last_applied is not None and status.last_applied.digest == theirs
    assert a.alive() and b.alive()
