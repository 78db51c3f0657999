"""Faults with real processes: the daemon SIGKILLed mid-apply, Redis and the registry stopped."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from swarm.reconcile.status import ReconcileStatus
from tests.reconcile.conftest import STATUS_KEY, Daemon, catalog_digest_live
from tests.reconcile.test_watch import NEW_AGENT
from tests.registry.conftest import RegistryProcess

#: slow suite (kills and restarts daemons, Redis and the registry mid-apply); `.ci/run` runs it after the quick suite
pytestmark = pytest.mark.slow


def many_agents(n: int, first_port: int = 9100) -> str:
    docs = [
        f"apiVersion: swarm/v1\nkind: Agent\nid: extra-{i:03d}\nrole: worker\nport: {first_port + i}\n"
        f"publishes: [results.research]\nsubscribes: [tasks.research]\n"
        for i in range(n)
    ]
    return "---\n".join(docs)


def catalog_events(live: RegistryProcess) -> list[str]:
    r: Any = live.redis.client(decode_responses=True)
    try:
        out = []
        for _id, fields in r.xrange("swarm:{research}:events"):
            text = json.dumps(fields)
            if "catalog-changed" in text:
                out.append(text)
        return out
    finally:
        r.close()


@pytest.mark.parametrize("step", ["put-redis-user", "push-catalog"])
def test_sigkill_mid_apply_then_restart_converges_without_repeats(
    step: str, live: RegistryProcess, spec_dir: Path, daemon_factory: Callable[..., Daemon]
) -> None:
    """SIGKILL at a known point of an apply (the SWARM_FAULT_PAUSE_AFTER hook stops the
    pass there for good), restart, and nothing anyone can see happens twice.

    ``put-redis-user``: the bus objects of 100 new agents exist, the catalog is not pushed.
    ``push-catalog``: the catalog is pushed, status still says "applying".
    """
    d = daemon_factory(spec_dir)
    first = d.wait_for(lambda s: s.state == "synced")
    assert first.last_applied is not None
    for agent in ("architect", "reviewer"):
        assert live.register(agent).status_code in (200, 201)
    d.stop()
    d.env = {"SWARM_FAULT_PAUSE_AFTER": step}
    d.start()
    d.wait_for(lambda s: s.passes > first.passes)  # the restarted daemon is up and in sync
    (spec_dir / "agents" / "extra.yaml").write_text(many_agents(100))
    deadline = time.monotonic() + 30
    while f"paused after {step}" not in d.log.read_text():
        assert d.alive() and time.monotonic() < deadline, d.log.read_text()[-3000:]
        time.sleep(0.02)
    assert d.proc is not None
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    d.proc = None

    r: Any = live.redis.client(decode_responses=True)
    try:
        assert '"state":"applying"' in r.get(STATUS_KEY), "killed in the middle of the apply"
        assert sum(1 for u in r.acl_users() if u.startswith("swarm.research.extra-")) == 100
    finally:
        r.close()
    pushed = len(live.get("/catalog", timeout=5).json()["catalog"]["agents"])
    assert pushed == (106 if step == "push-catalog" else 6)

    d.env = {}
    d.start()
    done = d.wait_for(lambda s: s.state == "synced" and s.last_applied is not None and s.last_applied.digest != first.last_applied.digest)  # type: ignore[union-attr]
    assert done.last_applied is not None
    redone = [a["kind"] for a in done.last_applied.actions]
    assert "put-redis-user" not in redone, "the users written before the kill are not written again"
    assert redone.count("push-catalog") == (0 if step == "push-catalog" else 1), redone
    assert len(live.get("/catalog", timeout=5).json()["catalog"]["agents"]) == 106
    events = catalog_events(live)
    assert len(events) == 2, f"one catalog-changed event per distinct catalog, got {events}"
    for agent in ("architect", "reviewer"):  # no registration lost
        assert live.get(f"/agents/{agent}", timeout=5).status_code == 200
    d.wait_for(lambda s: s.passes >= done.passes + 1)  # a resync later: still nothing to do
    assert len(catalog_events(live)) == 2


def _pause_mid_apply(d: Daemon, spec_dir: Path, resume: Path) -> ReconcileStatus:
    """Restart ``d`` so its next apply pauses after the bus creations; save an edit; wait for the pause."""
    first = d.wait_for(lambda s: s.state == "synced")
    d.stop()
    d.env = {"SWARM_FAULT_PAUSE_AFTER": "put-redis-user", "SWARM_FAULT_RESUME_FILE": str(resume)}
    d.start()
    d.wait_for(lambda s: s.passes > first.passes)
    with open(spec_dir / "agents" / "review.yaml", "a") as fh:
        fh.write(NEW_AGENT)
    deadline = time.monotonic() + 20
    while "paused after put-redis-user" not in d.log.read_text():
        assert d.alive() and time.monotonic() < deadline, d.log.read_text()[-3000:]
        time.sleep(0.02)
    return first


def test_redis_stopped_mid_apply_retries_and_converges(
    live: RegistryProcess, spec_dir: Path, daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    """Redis stops between the bus creations and the catalog push of one apply."""
    d = daemon_factory(spec_dir)
    first = _pause_mid_apply(d, spec_dir, tmp_path / "resume")
    live.redis.stop()
    (tmp_path / "resume").touch()
    deadline = time.monotonic() + 20
    while '"state": "waiting"' not in d.log.read_text():  # status lives in the stopped Redis: read the log
        assert d.alive(), "a transient fault must not end the daemon"
        assert time.monotonic() < deadline, d.log.read_text()[-3000:]
        time.sleep(0.05)
    time.sleep(0.5)  # a few retries later
    assert d.alive(), "a transient fault must not end the daemon"
    live.redis.start()
    done = d.wait_for(
        lambda s: s.state == "synced" and s.last_applied is not None and s.last_applied.digest != first.last_applied.digest,  # type: ignore[union-attr]
        timeout=30,
    )
    assert done.last_error is None and done.last_applied is not None
    redone = sorted({a["kind"] for a in done.last_applied.actions})
    # Streams, groups and documents survive in the append-only file and are not redone;
    # ACL users live only in Redis's memory (no aclfile), so the restart lost them: re-created.
    assert redone == ["push-catalog", "put-redis-user"], redone
    assert "fact-checker" in live.get("/catalog", timeout=5).json()["catalog"]["agents"]
    assert len(catalog_events(live)) == 2


def test_registry_stopped_mid_apply_waits_then_converges_without_repeats(
    live: RegistryProcess, spec_dir: Path, daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    """The registry stops between the bus creations and the catalog push of one apply."""
    d = daemon_factory(spec_dir)
    before = catalog_digest_live(live)
    resume = tmp_path / "resume"
    first = _pause_mid_apply(d, spec_dir, resume)
    assert first.last_applied is not None
    live.stop()  # the bus objects of fact-checker exist; the catalog push is next
    resume.touch()
    waiting = d.wait_for(lambda s: s.state == "waiting")
    assert waiting.waiting_for is not None and live.url in waiting.waiting_for
    assert waiting.last_applied is not None and waiting.last_applied.digest == first.last_applied.digest
    assert d.alive(), "a transient fault must not end the daemon"
    live.start()
    done = d.wait_for(lambda s: s.state == "synced" and s.last_applied is not None and s.last_applied.digest != first.last_applied.digest, timeout=30)  # type: ignore[union-attr]
    assert done.last_error is None and done.waiting_for is None and done.last_applied is not None
    assert [a["kind"] for a in done.last_applied.actions] == ["push-catalog"], "the bus part is not redone"
    assert catalog_digest_live(live) != before
    assert "fact-checker" in live.get("/catalog", timeout=5).json()["catalog"]["agents"]
    assert len(catalog_events(live)) == 2, "one push per distinct catalog"
