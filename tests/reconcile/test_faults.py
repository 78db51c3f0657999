"""Faults with real processes: the daemon SIGKILLed mid-apply, Redis and the registry stopped."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any, Callable

import httpx

from tests.reconcile.conftest import STATUS_KEY, Daemon, catalog_digest_live
from tests.reconcile.test_watch import NEW_AGENT
from tests.registry.conftest import RegistryProcess


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


def test_sigkill_mid_apply_then_restart_converges_without_repeats(
    live: RegistryProcess, spec_dir: Path, daemon_factory: Callable[..., Daemon]
) -> None:
    d = daemon_factory(spec_dir)
    first = d.wait_for(lambda s: s.state == "synced")
    for agent in ("architect", "reviewer"):
        assert live.register(agent).status_code in (200, 201)

    r: Any = live.redis.client(decode_responses=True)
    try:
        (spec_dir / "agents" / "extra.yaml").write_text(many_agents(100))
        # Kill as soon as the first of the 100 new Redis users exists: the bus is
        # being applied (one pipeline), the catalog not yet pushed.
        deadline = time.monotonic() + 20
        created = 0
        while time.monotonic() < deadline and created < 1:
            created = sum(1 for u in r.acl_users() if u.startswith("swarm-research-extra-"))
        assert d.proc is not None
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        d.proc = None
        assert created >= 1, "the daemon never started applying"
        assert '"state":"applying"' in r.get(STATUS_KEY)
        assert len(httpx.get(live.url + "/catalog", timeout=5).json()["catalog"]["agents"]) == 6, "killed before the push"
    finally:
        r.close()

    d.start()
    done = d.wait_for(lambda s: s.state == "synced" and s.last_applied is not None and s.last_applied.digest != first.last_applied.digest)  # type: ignore[union-attr]
    assert done.last_applied is not None
    agents = httpx.get(live.url + "/catalog", timeout=5).json()["catalog"]["agents"]
    assert len(agents) == 106
    events = catalog_events(live)
    assert len(events) == 2, f"one catalog-changed event per distinct catalog, got {events}"
    for agent in ("architect", "reviewer"):  # no registration lost
        assert httpx.get(f"{live.url}/agents/{agent}", timeout=5).status_code == 200
    d.wait_for(lambda s: s.passes >= done.passes + 1)  # a resync later: still nothing to do
    assert len(catalog_events(live)) == 2


def test_redis_stopped_during_apply_retries_and_converges(
    live: RegistryProcess, spec_dir: Path, daemon_factory: Callable[..., Daemon]
) -> None:
    d = daemon_factory(spec_dir)
    first = d.wait_for(lambda s: s.state == "synced")
    live.redis.stop()
    with open(spec_dir / "agents" / "review.yaml", "a") as fh:
        fh.write(NEW_AGENT)
    time.sleep(1.5)
    assert d.alive(), "a transient fault must not end the daemon"
    assert '"state": "waiting"' in d.log.read_text()
    live.redis.start()
    done = d.wait_for(
        lambda s: s.state == "synced" and s.last_applied is not None and s.last_applied.digest != first.last_applied.digest,  # type: ignore[union-attr]
        timeout=30,
    )
    assert done.last_error is None
    assert "fact-checker" in httpx.get(live.url + "/catalog", timeout=5).json()["catalog"]["agents"]


def test_registry_stopped_status_says_what_it_waits_for(
    live: RegistryProcess, spec_dir: Path, daemon_factory: Callable[..., Daemon]
) -> None:
    d = daemon_factory(spec_dir)
    first = d.wait_for(lambda s: s.state == "synced")
    before = catalog_digest_live(live)
    live.stop()
    with open(spec_dir / "agents" / "review.yaml", "a") as fh:
        fh.write(NEW_AGENT)
    waiting = d.wait_for(lambda s: s.state == "waiting")
    assert waiting.waiting_for is not None and live.url in waiting.waiting_for
    assert waiting.last_applied is not None and waiting.last_applied.digest == first.last_applied.digest  # type: ignore[union-attr]
    live.start()
    d.wait_for(lambda s: s.state == "synced" and s.last_applied is not None and s.last_applied.digest != first.last_applied.digest, timeout=30)  # type: ignore[union-attr]
    assert catalog_digest_live(live) != before
