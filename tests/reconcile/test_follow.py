"""Following a remote branch like Argo CD and Flux: ``--rev origin/main`` fetches on a
timer and on the registry's git webhook, status shows what was fetched, ``swarm
history`` lists what each applied revision changed, and ``swarm rollback`` applies
an earlier commit until the branch moves.

Real parts: a bare repository as the remote, a clone the daemon reads, a second
clone a developer pushes from, a real registry and Redis, the daemon as a process.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
from pathlib import Path
from typing import Callable

import httpx
import pytest

from tests.reconcile.conftest import Daemon, catalog_digest_live, run_cli
from tests.reconcile.test_watch import NEW_AGENT
from tests.reconcile.specdata import REPO
from tests.registry.conftest import RegistryFactory, RegistryProcess
from tests.support.services import RedisServer

HOOK_SECRET = "webhook-secret-for-tests"


@pytest.fixture
def live(registry_factory: RegistryFactory, redis_server: RedisServer) -> RegistryProcess:
    """The registry with the git webhook on."""
    return registry_factory(redis_server, extra_args=["--no-probe"], env={"SWARM_GIT_WEBHOOK_SECRET": HOOK_SECRET})


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@e", "-c", "user.name=t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def remote(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(bare remote, the daemon's clone, a developer's clone), the example spec committed."""
    origin, dev, deploy = tmp_path / "origin.git", tmp_path / "dev", tmp_path / "deploy"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    subprocess.run(["git", "clone", "-q", str(origin), str(dev)], check=True, capture_output=True)
    shutil.copytree(REPO / "specs", dev / "specs")
    _git(dev, "add", "specs")
    _git(dev, "commit", "-qm", "the example spec")
    _git(dev, "push", "-q", "origin", "main")
    subprocess.run(["git", "clone", "-q", str(origin), str(deploy)], check=True, capture_output=True)
    return origin, deploy, dev


def _hook(live: RegistryProcess, *, github: bool = True, secret: str = HOOK_SECRET) -> httpx.Response:
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    if github:
        headers = {"X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
                   "X-GitHub-Event": "push"}
    else:
        headers = {"X-Gitlab-Token": secret}
    return httpx.post(live.url + "/hooks/git", content=body, headers={**headers, "Content-Type": "application/json"},
                      timeout=10)


def _push_new_agent(dev: Path) -> str:
    with open(dev / "specs" / "agents" / "review.yaml", "a") as fh:
        fh.write(NEW_AGENT)
    _git(dev, "commit", "-qam", "add fact-checker")
    _git(dev, "push", "-q", "origin", "main")
    return _git(dev, "rev-parse", "HEAD")


@pytest.mark.slow  # moved out of the quick suite (CI time budget)
def test_webhook_fetch_history_and_rollback(live: RegistryProcess, remote: tuple[Path, Path, Path],
                                            daemon_factory: Callable[..., Daemon]) -> None:
    origin, deploy, dev = remote
    first = _git(deploy, "rev-parse", "HEAD")
    # a fetch interval far beyond the test: only the webhook can make it fetch
    d = daemon_factory(deploy / "specs", "--rev", "origin/main", "--fetch-interval", "3600")
    s = d.wait_for(lambda s: s.state == "synced" and s.fetch is not None and s.fetch.commit == first)
    assert s.last_applied is not None and s.last_applied.revision.commit == first
    assert s.fetch is not None and (s.fetch.remote, s.fetch.branch, s.fetch.error) == ("origin", "main", None)
    before = catalog_digest_live(live)

    second = _push_new_agent(dev)
    assert _hook(live, secret="wrong").status_code == 401  # a forged delivery moves nothing
    response = _hook(live)
    assert response.status_code == 202 and response.json()["form"] == "github"
    s = d.wait_for(lambda s: s.last_applied is not None and s.last_applied.revision.commit == second, timeout=15)
    assert s.state == "synced" and s.fetch is not None and s.fetch.commit == second
    assert catalog_digest_live(live) != before

    urls = ("--redis-url", live.redis.url)
    done = run_cli("history", str(deploy / "specs"), *urls, "-o", "json", cwd=deploy)
    assert done.returncode == 0, done.stderr
    history = json.loads(done.stdout)
    assert [h["revision"]["commit"] for h in history[:2]] == [second, first]
    assert history[0]["files"] == ["M specs/agents/review.yaml"]
    assert any("fact-checker" in a for a in history[0]["actions"])
    text = run_cli("history", str(deploy / "specs"), *urls, cwd=deploy).stdout
    assert "changed M specs/agents/review.yaml" in text and second[:10] in text

    # roll back to the first commit: applied until the branch moves
    done = run_cli("rollback", first, str(deploy / "specs"), *urls, "--timeout", "15", cwd=deploy)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "unless the change is reverted in git" in done.stdout
    s = d.wait_for(lambda s: s.pinned is not None and s.last_applied is not None
                   and s.last_applied.revision.commit == first)
    assert catalog_digest_live(live) == before
    passes = s.passes
    d.wait_for(lambda s: s.passes >= passes + 2)  # resyncs (every 0.5 s here) keep the rollback
    assert catalog_digest_live(live) == before

    # a new commit on the branch ends the rollback
    with open(dev / "specs" / "agents" / "review.yaml", "a") as fh:
        fh.write("# a comment: a new commit\n")
    _git(dev, "commit", "-qam", "touch")
    _git(dev, "push", "-q", "origin", "main")
    third = _git(dev, "rev-parse", "HEAD")
    assert _hook(live, github=False).status_code == 202  # the GitLab form
    s = d.wait_for(lambda s: s.last_applied is not None and s.last_applied.revision.commit == third, timeout=15)
    assert s.pinned is None and catalog_digest_live(live) != before
    client = live.redis.client(decode_responses=True)
    try:
        assert client.get("swarm:{research}:pin") is None
    finally:
        client.close()


def test_a_failing_fetch_is_shown_and_the_applied_revision_kept(
    live: RegistryProcess, remote: tuple[Path, Path, Path], daemon_factory: Callable[..., Daemon]
) -> None:
    origin, deploy, _dev = remote
    first = _git(deploy, "rev-parse", "HEAD")
    d = daemon_factory(deploy / "specs", "--rev", "origin/main", "--fetch-interval", "3600")
    d.wait_for(lambda s: s.state == "synced" and s.fetch is not None and s.fetch.commit == first)
    origin.rename(origin.with_name("gone.git"))  # the remote is unreachable now
    assert _hook(live).status_code == 202
    s = d.wait_for(lambda s: s.fetch is not None and s.fetch.error is not None, timeout=15)
    assert "git fetch origin main" in (s.fetch.error or "")
    assert s.last_applied is not None and s.last_applied.revision.commit == first and s.state == "synced"
    done = run_cli("status", str(deploy / "specs"), "--registry-url", live.url, "--redis-url", live.redis.url,
                   cwd=deploy)
    assert "fetch error at" in done.stdout and f"origin/main @ {first[:10]}" in done.stdout


def test_the_webhook_is_off_without_a_secret_and_refuses_forgeries(registry_factory: RegistryFactory,
                                                                    live: RegistryProcess) -> None:
    off = registry_factory(extra_args=["--no-probe"])
    r = httpx.post(off.url + "/hooks/git", content=b"{}", timeout=10)
    assert r.status_code == 404 and r.json()["error"] == "not_configured"
    assert httpx.post(live.url + "/hooks/git", content=b"{}", timeout=10).status_code == 401  # no signature
    assert _hook(live, github=False, secret="nope").status_code == 401
    ping = httpx.post(live.url + "/hooks/git", content=b"{}", timeout=10, headers={
        "X-GitHub-Event": "ping",
        "X-Hub-Signature-256": "sha256=" + hmac.new(HOOK_SECRET.encode(), b"{}", hashlib.sha256).hexdigest()})
    assert ping.status_code == 200 and ping.json()["accepted"] is False
    big = httpx.post(live.url + "/hooks/git", content=b"x" * (5 * 1024 * 1024 + 1), timeout=30,
                     headers={"X-Gitlab-Token": HOOK_SECRET})
    assert big.status_code == 413
    client = live.redis.client(decode_responses=True)
    try:
        assert client.get("swarm:{research}:git-hook") is None  # nothing refused was counted
    finally:
        client.close()


@pytest.mark.slow  # moved out of the quick suite (CI time budget)
def test_a_failed_pass_is_in_the_history_once_while_it_lasts(
    live: RegistryProcess, remote: tuple[Path, Path, Path], daemon_factory: Callable[..., Daemon]
) -> None:
    _origin, deploy, dev = remote
    d = daemon_factory(deploy / "specs", "--rev", "origin/main", "--fetch-interval", "3600")
    d.wait_for(lambda s: s.state == "synced")
    workers = dev / "specs" / "agents" / "workers.yaml"
    workers.write_text(workers.read_text().replace("role: worker", "role: wroker", 1))
    _git(dev, "commit", "-qam", "a typo")
    _git(dev, "push", "-q", "origin", "main")
    assert _hook(live).status_code == 202
    s = d.wait_for(lambda s: s.state == "invalid-spec", timeout=15)
    passes = s.passes
    d.wait_for(lambda s: s.passes >= passes + 3)  # resyncs: the same failure, not recorded again
    done = run_cli("history", str(deploy / "specs"), "--redis-url", live.redis.url, "-o", "json", cwd=deploy)
    history = json.loads(done.stdout)
    assert [h["result"] for h in history] == ["invalid-spec", "applied"], history
    assert "wroker" in history[0]["error"] and history[0]["actions"] == []
    text = run_cli("history", str(deploy / "specs"), "--redis-url", live.redis.url, cwd=deploy).stdout
    assert "invalid-spec" in text and "error:" in text
