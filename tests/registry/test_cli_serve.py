"""``swarm registry serve`` without --swarm (the spec names the swarm) and ``swarm token --bus``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from swarm.bus.apply import bus_password
from swarm.errors import SwarmError
from swarm.registry.auth import admin_token
from swarm.registry.catalog_push import push_catalog
from tests.registry.conftest import make_catalog, research_catalog
from tests.support.services import ProcessServer, RedisServer, free_port

SECRET = "cli-serve-secret"


def _swarm(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "swarm", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=60)


def test_serve_takes_the_swarm_from_the_spec(repo_root: Path, redis_server: RedisServer, tmp_path: Path) -> None:
    port = free_port()
    server = ProcessServer(
        [sys.executable, "-m", "swarm", "registry", "serve", "--spec", str(repo_root / "specs"),
         "--port", str(port), "--redis-url", redis_server.url],
        port=port, env={"SWARM_REGISTRY_SECRET": SECRET}, log=tmp_path / "registry.log",
    ).start()
    try:
        admin = admin_token(SECRET, "research")
        result = push_catalog(server.url, research_catalog(), "r1", admin)  # swarm 'research' is accepted
        assert result.changed
        with pytest.raises(SwarmError):  # and another swarm's catalog is refused: it serves 'research'
            push_catalog(server.url, make_catalog(["x"], swarm="other"), "r1", admin)
        assert httpx.get(server.url + "/health/ready", timeout=5).status_code == 200
    finally:
        server.stop()


def test_serve_refuses_a_swarm_flag_that_contradicts_the_spec(repo_root: Path, tmp_path: Path) -> None:
    import os

    env = {**os.environ, "SWARM_REGISTRY_SECRET": SECRET}
    out = _swarm("registry", "serve", "--spec", str(repo_root / "specs"), "--swarm", "other",
                 "--port", str(free_port()), env=env, cwd=tmp_path)
    assert out.returncode == 2 and "declares swarm 'research'" in out.stderr


def test_token_bus_prints_the_agents_redis_password(repo_root: Path, tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("SWARM_BUS_SECRET", "SWARM_REGISTRY_SECRET")}
    specs = str(repo_root / "specs")
    ok = _swarm("token", "--bus", "architect", "--spec", specs, env={**env, "SWARM_REGISTRY_SECRET": SECRET},
                cwd=tmp_path)
    assert ok.returncode == 0 and ok.stdout.strip() == bus_password(SECRET, "research", "architect")
    own = _swarm("token", "--bus", "architect", "--spec", specs,
                 env={**env, "SWARM_REGISTRY_SECRET": SECRET, "SWARM_BUS_SECRET": "b"}, cwd=tmp_path)
    assert own.stdout.strip() == bus_password("b", "research", "architect")
    unknown = _swarm("token", "--bus", "nobody", "--spec", specs, env={**env, "SWARM_REGISTRY_SECRET": SECRET},
                     cwd=tmp_path)
    assert unknown.returncode == 2 and "not declared" in unknown.stderr
    no_secret = _swarm("token", "--bus", "architect", "--spec", specs, env=env, cwd=tmp_path)
    assert no_secret.returncode == 2 and "SWARM_BUS_SECRET" in no_secret.stderr
