"""``swarm reconcile --watch`` as a process: saves, drift healing, git refs."""

from __future__ import annotations

import pytest
import subprocess
from pathlib import Path
from typing import Any, Callable

from tests.reconcile.conftest import Daemon, catalog_digest_live, run_cli
from tests.registry.conftest import RegistryProcess

NEW_AGENT = """
---
apiVersion: swarm/v1
kind: Agent
id: fact-checker
role: reviewer
port: 8010
publishes: [reviews.verdict]
subscribes: [results.research]
"""


def test_save_applies_and_hand_made_drift_heals(live: RegistryProcess, spec_dir: Path, daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory(spec_dir)
    first = d.wait_for(lambda s: s.state == "synced")
    assert first.last_applied is not None
    with open(spec_dir / "agents" / "review.yaml", "a") as fh:
        fh.write(NEW_AGENT)
    d.wait_for(lambda s: s.state == "synced" and s.last_applied is not None and s.last_applied.digest != first.last_applied.digest)  # type: ignore[union-attr]
    r: Any = live.redis.client(decode_responses=True)
    try:
        assert r.exists("swarm:{research}:topic:results.research")
        assert [g["name"] for g in r.xinfo_groups("swarm:{research}:inbox:fact-checker")] == ["fact-checker"]
        assert [g["name"] for g in r.xinfo_groups("swarm:{research}:outbox:fact-checker")] == ["router"]
        assert "swarm.research.fact-checker" in r.acl_users()
        r.delete("swarm:{research}:acl")  # drift by hand, as with redis-cli
        d.wait_for(lambda s: s.drift_at is not None and "write the ACL table" in s.drift)
        assert r.exists("swarm:{research}:acl")
    finally:
        r.close()
    compiled = d.cwd / "compiled" / "research" / "agents" / "fact-checker"
    assert compiled.is_dir(), "compiled/ was written like swarm compile"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def test_rev_applies_commits_not_the_working_tree(live: RegistryProcess, tmp_path: Path, spec_dir: Path, daemon_factory: Callable[..., Daemon]) -> None:
    repo = spec_dir.parent
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "-c", "user.email=t@e", "-c", "user.name=t", "add", "specs")
    _git(repo, "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qm", "spec")
    first_commit = _git(repo, "rev-parse", "HEAD")
    d = daemon_factory(spec_dir, "--rev", "main")
    s = d.wait_for(lambda s: s.state == "synced")
    assert s.last_applied is not None and s.last_applied.revision.commit == first_commit
    before = catalog_digest_live(live)

    with open(spec_dir / "agents" / "review.yaml", "a") as fh:  # a save alone changes nothing
        fh.write(NEW_AGENT)
    d.wait_for(lambda s: s.passes >= 3)  # a couple of resyncs later
    assert catalog_digest_live(live) == before
    urls = ("--registry-url", live.url, "--redis-url", live.redis.url)
    assert run_cli("plan", str(spec_dir), "--rev", "main", *urls, cwd=repo).returncode == 0, "the commit is applied"
    assert run_cli("plan", str(spec_dir), *urls, cwd=repo).returncode == 1, "the working tree is not"

    _git(repo, "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qam", "add fact-checker")
    second = _git(repo, "rev-parse", "HEAD")
    s = d.wait_for(lambda s: s.last_applied is not None and s.last_applied.revision.commit == second, timeout=10)
    assert s.state == "synced" and s.last_applied is not None and s.last_applied.revision.source == "git"
    assert catalog_digest_live(live) != before


def test_daemon_started_on_an_invalid_spec_says_so_then_applies_the_fix(
    live: RegistryProcess, spec_dir: Path, daemon_factory: Callable[..., Daemon]
) -> None:
    workers = spec_dir / "agents" / "workers.yaml"
    good = workers.read_text()
    workers.write_text(good.replace("role: worker", "role: wroker", 1))
    d = daemon_factory(spec_dir)
    s = d.wait_for(lambda s: s.state == "invalid-spec")
    assert s.last_applied is None and s.last_error is not None
    assert any(i["file"].endswith("workers.yaml") and i["line"] for i in s.last_error.issues)
    assert catalog_digest_live(live) is None, "nothing was applied"
    workers.write_text(good)
    s = d.wait_for(lambda s: s.state == "synced")
    assert s.last_applied is not None and catalog_digest_live(live) == s.last_applied.digest


@pytest.mark.slow  # moved out of the quick suite (CI time budget)
def test_daemon_restarted_onto_an_invalid_spec_keeps_enforcing_the_last_applied(
    live: RegistryProcess, spec_dir: Path, daemon_factory: Callable[..., Daemon]
) -> None:
    d = daemon_factory(spec_dir)
    good = d.wait_for(lambda s: s.state == "synced")
    assert good.last_applied is not None
    d.stop()
    workers = spec_dir / "agents" / "workers.yaml"
    fixed = workers.read_text()
    workers.write_text(fixed.replace("role: worker", "role: wroker", 1))
    r: Any = live.redis.client(decode_responses=True)
    try:
        r.delete("swarm:{research}:acl")  # drift made while no daemon ran
        d.start()
        s = d.wait_for(lambda s: s.state == "invalid-spec" and s.passes > good.passes)
        assert "read back from Redis" in s.message
        assert s.last_applied is not None and s.last_applied.digest == good.last_applied.digest  # type: ignore[union-attr]
        assert s.last_error is not None and any(i["file"].endswith("workers.yaml") for i in s.last_error.issues)
        assert r.exists("swarm:{research}:acl"), "the last applied spec is enforced again"
        assert catalog_digest_live(live) == good.last_applied.digest  # type: ignore[union-attr]
    finally:
        r.close()
    workers.write_text(fixed)
    with open(spec_dir / "agents" / "review.yaml", "a") as fh:
        fh.write(NEW_AGENT)
    s = d.wait_for(lambda s: s.state == "synced" and s.last_applied is not None and s.last_applied.digest != good.last_applied.digest)  # type: ignore[union-attr]
    assert catalog_digest_live(live) == s.last_applied.digest  # type: ignore[union-attr]
