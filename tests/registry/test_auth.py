"""Registry auth: HMAC agent tokens, the admin token, and the insecure switch."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys

import httpx
import pytest

from swarm.errors import AuthError
from swarm.registry.auth import Authorizer, ForbiddenError, MissingTokenError, admin_token, agent_token, bearer_token
from tests.registry.conftest import REPO, RegistryFactory, RegistryProcess


def test_agent_token_is_documented_hmac() -> None:
    expected = hmac.new(b"k", b"agent:architect", hashlib.sha256).hexdigest()
    assert agent_token("k", "architect") == expected
    assert agent_token("k", "architect") != agent_token("k", "reviewer")
    assert agent_token("k", "architect") != agent_token("k2", "architect")
    assert admin_token("k") == hmac.new(b"k", b"admin", hashlib.sha256).hexdigest()


def test_bearer_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


def test_authorizer_rules() -> None:
    auth = Authorizer.create("k", None, enabled=True)
    auth.require_agent(f"Bearer {agent_token('k', 'a')}", "a")
    auth.require_agent(f"Bearer {admin_token('k')}", "a")
    auth.require_admin(f"Bearer {admin_token('k')}")
    with pytest.raises(MissingTokenError):
        auth.require_agent(None, "a")
    with pytest.raises(ForbiddenError):
        auth.require_agent(f"Bearer {agent_token('k', 'b')}", "a")
    with pytest.raises(ForbiddenError):
        auth.require_admin(f"Bearer {agent_token('k', 'a')}")
    explicit = Authorizer.create("k", "root", enabled=True)
    explicit.require_admin("Bearer root")
    with pytest.raises(AuthError):
        explicit.require_admin(f"Bearer {admin_token('k')}")
    Authorizer.create(None, None, enabled=False).require_admin(None)


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
    assert httpx.get(url + "/agents/architect").status_code == 200  # reads are open
    assert httpx.delete(url + "/agents/architect", headers=mine).status_code == 204
    assert httpx.delete(url + "/agents/reviewer", headers=admin).status_code == 204
    bad = {"Authorization": "Bearer nonsense"}
    body = {"revision": None, "catalog": httpx.get(url + "/catalog").json()["catalog"]}
    assert httpx.put(url + "/catalog", json=body).status_code == 401
    assert httpx.put(url + "/catalog", json=body, headers=bad).status_code == 403
    assert httpx.put(url + "/catalog", json=body, headers=mine).status_code == 403
    assert httpx.put(url + "/catalog", json=body, headers=admin).status_code == 200


def test_admin_token_from_environment(registry_factory: RegistryFactory) -> None:
    reg = registry_factory(env={"SWARM_ADMIN_TOKEN": "root-token"})
    reg.admin = "root-token"
    assert reg.push().changed is True
    derived = {"Authorization": f"Bearer {admin_token(reg.secret or '')}"}
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


def test_token_command_prints_the_agent_token() -> None:
    env = {"PATH": "/usr/bin:/bin", "SWARM_REGISTRY_SECRET": "k"}
    out = subprocess.run([sys.executable, "-m", "swarm", "token", "architect"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == agent_token("k", "architect")
    out = subprocess.run([sys.executable, "-m", "swarm", "token", "--admin"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == admin_token("k")
    out = subprocess.run([sys.executable, "-m", "swarm", "token", "architect"], env={"PATH": "/usr/bin:/bin"},
                         cwd=REPO, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "SWARM_REGISTRY_SECRET" in out.stderr
