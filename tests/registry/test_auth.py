"""Registry auth: HMAC agent tokens, the admin token, and the insecure switch.

Read tokens, private metadata and swarm-bound tokens against real registries are
in test_hardening.py."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys

import httpx
import pytest

from swarm.errors import AuthError
from swarm.registry.auth import (
    Authorizer,
    ForbiddenError,
    MissingTokenError,
    Reader,
    admin_token,
    agent_token,
    bearer_token,
    read_token,
)
from tests.registry.conftest import REPO, RegistryFactory, RegistryProcess


def test_tokens_are_the_documented_hmacs_bound_to_the_swarm() -> None:
    expected = hmac.new(b"k", b"agent:research:architect", hashlib.sha256).hexdigest()
    assert agent_token("k", "research", "architect") == expected
    assert agent_token("k", "research", "architect") != agent_token("k", "research", "reviewer")
    assert agent_token("k", "research", "architect") != agent_token("k2", "research", "architect")
    assert agent_token("k", "research", "architect") != agent_token("k", "other", "architect")
    assert admin_token("k", "research") == hmac.new(b"k", b"admin:research", hashlib.sha256).hexdigest()
    assert read_token("k", "research") == hmac.new(b"k", b"read:research", hashlib.sha256).hexdigest()
    assert admin_token("k", "research") != admin_token("k", "other")


def test_bearer_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


def test_authorizer_rules() -> None:
    auth = Authorizer.create("k", None, swarm="s", enabled=True)
    auth.require_agent(f"Bearer {agent_token('k', 's', 'a')}", "a")
    auth.require_agent(f"Bearer {admin_token('k', 's')}", "a")
    auth.require_admin(f"Bearer {admin_token('k', 's')}")
    with pytest.raises(MissingTokenError):
        auth.require_agent(None, "a")
    with pytest.raises(ForbiddenError):
        auth.require_agent(f"Bearer {agent_token('k', 's', 'b')}", "a")
    with pytest.raises(ForbiddenError):
        auth.require_agent(f"Bearer {agent_token('k', 'other', 'a')}", "a")
    with pytest.raises(ForbiddenError):
        auth.require_agent(f"Bearer {read_token('k', 's')}", "a")
    with pytest.raises(ForbiddenError):
        auth.require_admin(f"Bearer {agent_token('k', 's', 'a')}")
    with pytest.raises(ForbiddenError):
        auth.require_admin(f"Bearer {read_token('k', 's')}")
    explicit = Authorizer.create("k", "root", swarm="s", enabled=True)
    explicit.require_admin("Bearer root")
    with pytest.raises(AuthError):
        explicit.require_admin(f"Bearer {admin_token('k', 's')}")
    Authorizer.create(None, None, swarm="s", enabled=False).require_admin(None)


def test_reader_rules() -> None:
    auth = Authorizer.create("k", None, swarm="s", enabled=True)
    ids = {"a", "b"}
    assert auth.reader(f"Bearer {admin_token('k', 's')}", public=False, agent_ids=ids).admin
    assert auth.reader(f"Bearer {agent_token('k', 's', 'a')}", public=False, agent_ids=ids) == Reader(agent_id="a")
    assert auth.reader(f"Bearer {read_token('k', 's')}", public=False, agent_ids=ids) == Reader()
    assert auth.reader(None, public=True, agent_ids=ids) == Reader()
    with pytest.raises(MissingTokenError):
        auth.reader(None, public=False, agent_ids=ids)
    for wrong in (read_token("k", "other"), agent_token("k", "s", "c"), agent_token("k", "other", "a"), "x"):
        with pytest.raises(ForbiddenError):
            auth.reader(f"Bearer {wrong}", public=True, agent_ids=ids)


def test_agent_acts_only_on_itself_admin_on_all(registry: RegistryProcess) -> None:
    url = registry.url
    mine = registry.agent_headers("architect")
    other = registry.agent_headers("reviewer")
    admin = registry.admin_headers()
    assert httpx.post(url + "/agents/register", json={"agent_id": "architect"}).status_code == 401
    r = httpx.post(url + "/agents/register", json={"agent_id": "architect"}, headers=other)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert httpx.post(url + "/agents/register", json={"agent_id": "architect"}, headers=mine).status_code == 201
    assert httpx.post(url + "/agents/register", json={"agent_id": "reviewer"}, headers=admin).status_code == 201
    assert httpx.post(url + "/agents/architect/heartbeat", headers=other).status_code == 403
    missing = httpx.post(url + "/agents/architect/heartbeat")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert httpx.post(url + "/agents/architect/heartbeat", headers=mine).status_code == 200
    assert httpx.post(url + "/agents/reviewer/heartbeat", headers=admin).status_code == 200
    assert httpx.delete(url + "/agents/architect", headers=other).status_code == 403
    assert registry.get("/agents/architect").status_code == 200
    assert httpx.delete(url + "/agents/architect", headers=mine).status_code == 204
    assert httpx.delete(url + "/agents/reviewer", headers=admin).status_code == 204
    bad = {"Authorization": "Bearer nonsense"}
    body = {"revision": None, "catalog": registry.get("/catalog", headers=admin).json()["catalog"]}
    assert httpx.put(url + "/catalog", json=body).status_code == 401
    assert httpx.put(url + "/catalog", json=body, headers=bad).status_code == 403
    assert httpx.put(url + "/catalog", json=body, headers=mine).status_code == 403
    assert httpx.put(url + "/catalog", json=body, headers=admin).status_code == 200


def test_admin_token_from_environment(registry_factory: RegistryFactory) -> None:
    reg = registry_factory(env={"SWARM_ADMIN_TOKEN": "root-token"})
    reg.admin = "root-token"
    assert reg.push().changed is True
    derived = {"Authorization": f"Bearer {admin_token(reg.secret or '', reg.swarm)}"}
    assert httpx.delete(reg.url + "/agents/architect", headers=derived).status_code == 403


def test_serve_without_secret_refuses_to_start() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "swarm", "registry", "serve", "--swarm", "research", "--port", "1"],
        env={"PATH": "/usr/bin:/bin", "SWARM_REGISTRY_SECRET": ""}, cwd=REPO, capture_output=True, text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "SWARM_REGISTRY_SECRET is not set" in proc.stderr and "--insecure" in proc.stderr


def test_insecure_serves_without_auth(registry_factory: RegistryFactory) -> None:
    reg = registry_factory(secret=None, insecure=True)
    reg.push()
    r = httpx.post(reg.url + "/agents/register", json={"agent_id": "architect"})
    assert r.status_code == 201
    assert httpx.delete(reg.url + "/agents/architect").status_code == 204
    assert "WITHOUT authentication" in reg.log_text()


def _token(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "swarm", "token", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=30)


def test_token_command_prints_the_agent_token() -> None:
    env = {"PATH": "/usr/bin:/bin", "SWARM_REGISTRY_SECRET": "k"}
    out = _token("architect", env=env)  # swarm 'research' from specs/
    assert out.returncode == 0 and out.stdout.strip() == agent_token("k", "research", "architect")
    out = _token("--admin", env=env)
    assert out.returncode == 0 and out.stdout.strip() == admin_token("k", "research")
    out = _token("--read", env=env)
    assert out.returncode == 0 and out.stdout.strip() == read_token("k", "research")
    out = _token("--admin", env={**env, "SWARM_ADMIN_TOKEN": "root"})
    assert out.stdout.strip() == "root"


def test_token_command_refuses_an_undeclared_agent() -> None:
    env = {"PATH": "/usr/bin:/bin", "SWARM_REGISTRY_SECRET": "k"}
    out = _token("nosuchagent", env=env)
    assert out.returncode == 2 and out.stdout == ""
    assert "'nosuchagent' is not declared" in out.stderr and "architect" in out.stderr
    out = _token("architect", "--spec", "no/such/dir", env=env)
    assert out.returncode == 2 and out.stdout == ""
    out = _token("architect\n", env=env)  # not a name: a trailing newline is refused too
    assert out.returncode == 2 and out.stdout == ""
    out = subprocess.run([sys.executable, "-m", "swarm", "token", "architect"], env={"PATH": "/usr/bin:/bin"},
                         cwd=REPO, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "SWARM_REGISTRY_SECRET" in out.stderr
