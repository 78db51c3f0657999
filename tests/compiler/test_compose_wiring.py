"""docker-compose.yml wires a working, Redis-enforced deployment (no docker here, so
its commands and URLs are run against a redis-server of the test's own).

The compose file is taken at its word: ``${VAR...}`` references are interpolated
the way compose does, the hostname ``redis:6379`` becomes the test server, and
``--requirepass`` is emulated with ``CONFIG SET``. Then the ``swarm-bus-apply``
service's own command line installs the bus, and every agent's REDIS_URL logs in
as that agent's ACL user: it may XADD to its own outbox and Redis itself
answers NOPERM on every topic log and on other agents' outboxes. A mismatch between the user name or password
formula the compose file uses and what ``swarm bus apply`` creates fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from swarm.bus.apply import bus_password
from swarm.cli import build_parser
from swarm.compiler import compile_loaded, write_output
from swarm.compiler.targets.compose import (
    BUS_APPLY_SERVICE,
    CATALOG_PUSH_SERVICE,
    COMPILED_MOUNT,
    COMPOSE_REDIS_URL,
    COMPOSE_REGISTRY_URL,
    RECONCILER_METRICS_PORT,
    RECONCILER_SERVICE,
    SPEC_MOUNT,
)
from swarm.secrets_env import env_suffix
from swarm.keys import SwarmKeys
from swarm.spec.loader import load_spec_full
from tests.support.services import ProcessServer, RedisServer, free_port, python_cmd

from .conftest import REPO

SECRET = "compose-registry-secret"
ADMIN_PASSWORD = "compose-admin-password"
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([?-])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` (empty counts as unset)."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.groups()
        if env.get(name):
            return env[name]
        if op == "?":
            raise KeyError(f"{name}: {arg}")
        return arg or ""

    return _REFERENCE.sub(one, value)


@pytest.fixture
def deployment(tmp_path: Path, redis_server: RedisServer) -> tuple[dict[str, Any], Path, dict[str, str]]:
    loaded = load_spec_full(REPO / "specs")
    write_output(compile_loaded(loaded), tmp_path / "out", "research")
    compiled = tmp_path / "out" / "research"
    env = {"SWARM_REGISTRY_SECRET": SECRET, "SWARM_REDIS_PASSWORD": ADMIN_PASSWORD}
    for agent in loaded.spec.agents:
        env["SWARM_BUS_PASSWORD_" + env_suffix(agent.id)] = bus_password(SECRET, "research", agent.id)
    admin = redis.Redis.from_url(redis_server.url)
    admin.config_set("requirepass", ADMIN_PASSWORD)  # the redis service's --requirepass
    admin.close()
    return yaml.safe_load((compiled / "docker-compose.yml").read_text()), compiled, env


def to_test_server(url: str, env: dict[str, str], server: RedisServer) -> str:
    port = server.url.rsplit(":", 1)[1].split("/")[0]
    return interpolate(url, env).replace("@redis:6379/", f"@127.0.0.1:{port}/")


def test_bus_apply_service_then_each_agent_is_confined_to_its_outbox_by_redis(
    deployment: tuple[dict[str, Any], Path, dict[str, str]], redis_server: RedisServer
) -> None:
    compose, compiled, env = deployment
    services = compose["services"]
    apply = services[BUS_APPLY_SERVICE]
    assert apply["volumes"] == [f".:{COMPILED_MOUNT}:ro"]
    command = [to_test_server(a, env, redis_server) for a in apply["command"]]
    assert command[:4] == ["swarm", "bus", "apply", COMPILED_MOUNT]
    command[3] = str(compiled)
    run_env = {k: interpolate(v, env) for k, v in apply["environment"].items()}
    result = subprocess.run(
        [sys.executable, "-m", "swarm", *command[1:]], env={"PATH": "/usr/bin:/bin", **run_env},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped Redis users" not in result.stdout

    spec = load_spec_full(REPO / "specs").spec
    keys = SwarmKeys("research")
    ids = sorted(a.id for a in spec.agents)
    for agent in spec.agents:
        url = services[agent.id]["environment"]["REDIS_URL"]
        assert url.startswith(f"redis://{keys.redis_user(agent.id)}:${{SWARM_BUS_PASSWORD_{env_suffix(agent.id)}:?")
        client = redis.Redis.from_url(to_test_server(url, env, redis_server))
        try:
            wrong = {**env, "SWARM_BUS_PASSWORD_" + env_suffix(agent.id): "wrong"}
            with pytest.raises(redis.exceptions.AuthenticationError):
                redis.Redis.from_url(to_test_server(url, wrong, redis_server)).xlen("x")
            # its own outbox only: no topic log, no other agent's outbox, whatever its role allows
            client.xadd(keys.outbox(agent.id), {"topic": spec.topics[0].name, "payload": "{}"})
            for topic in spec.topics:
                with pytest.raises(redis.exceptions.NoPermissionError):
                    client.xadd(keys.topic(topic.name), {"probe": "1"})
            other = next(i for i in ids if i != agent.id)
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.xadd(keys.outbox(other), {"topic": spec.topics[0].name, "payload": "{}"})
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.acl_setuser(keys.redis_user(agent.id), enabled=True, nopass=True)
        finally:
            client.close()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(redis_server.url).ping()  # the default user needs the admin password


def test_agents_wait_for_the_one_shot_setup_and_setup_commands_parse(
    deployment: tuple[dict[str, Any], Path, dict[str, str]],
) -> None:
    compose, _, env = deployment
    services = compose["services"]
    spec = load_spec_full(REPO / "specs").spec
    for agent in spec.agents:
        depends = services[agent.id]["depends_on"]
        assert depends[BUS_APPLY_SERVICE] == {"condition": "service_completed_successfully"}
        assert (CATALOG_PUSH_SERVICE in depends) == agent.registry
    for name in (BUS_APPLY_SERVICE, CATALOG_PUSH_SERVICE):
        args = build_parser().parse_args([interpolate(a, env) for a in services[name]["command"][1:]])
        assert args.compiled in (COMPILED_MOUNT, Path(COMPILED_MOUNT))
    redis_service = services["redis"]
    assert redis_service["command"][redis_service["command"].index("--requirepass") + 1] == "${SWARM_REDIS_PASSWORD:?set SWARM_REDIS_PASSWORD: the Redis admin password (URL-safe)}"
    assert interpolate(redis_service["environment"]["REDISCLI_AUTH"], env) == ADMIN_PASSWORD
    for unset in ("SWARM_REDIS_PASSWORD", "SWARM_BUS_PASSWORD_ARCHITECT"):
        with pytest.raises(KeyError, match=unset):
            interpolate(yaml.safe_dump(compose), {k: v for k, v in env.items() if k != unset})


@pytest.mark.slow  # moved out of the quick suite (CI time budget)
def test_reconciler_service_heals_a_redis_restart_by_itself(
    deployment: tuple[dict[str, Any], Path, dict[str, str]], redis_server: RedisServer, tmp_path: Path
) -> None:
    """The swarm-reconciler service's own command line, run for real: it installs the bus, and
    after Redis restarts (ACL users gone, AOF kept) the agents can log in again without anyone acting."""
    compose, compiled, env = deployment
    service = compose["services"][RECONCILER_SERVICE]
    assert service["restart"] == "unless-stopped"
    assert service["depends_on"] == {"redis": {"condition": "service_healthy"},
                                     "registry": {"condition": "service_healthy"}}
    (volume,) = service["volumes"]
    host, mount, mode = interpolate(volume, {**env, "SWARM_SPEC_DIR": ""}).split(":")
    # by default the spec beside compiled/: compiled/research/../../specs is the repository's specs/
    assert (REPO / "compiled" / "research" / host).resolve() == (REPO / "specs").resolve()
    assert mount == SPEC_MOUNT and mode == "ro"
    args = build_parser().parse_args([interpolate(a, env) for a in service["command"][1:]])
    assert args.watch and args.spec == [SPEC_MOUNT] and args.compiled_dir == ""
    assert (args.metrics_port, args.metrics_host) == (RECONCILER_METRICS_PORT, "0.0.0.0")
    assert service["expose"] == [str(RECONCILER_METRICS_PORT)]

    admin_url = to_test_server(COMPOSE_REDIS_URL, env, redis_server)
    registry_port = free_port()
    registry = ProcessServer(
        python_cmd("-m", "swarm", "registry", "serve", "--port", str(registry_port), "--redis-url", admin_url,
                   "--swarm", "research", "--no-probe"),
        port=registry_port, env={"SWARM_REGISTRY_SECRET": SECRET, "SWARM_ADMIN_TOKEN": ""}, cwd=REPO,
        log=tmp_path / "registry.log",
    ).start()
    command = [to_test_server(a, env, redis_server) for a in service["command"]]
    command[command.index(SPEC_MOUNT)] = str(REPO / "specs")
    command[command.index(COMPOSE_REGISTRY_URL)] = registry.url
    metrics_port = free_port()  # the service's fixed port, on this machine a free one
    command[command.index("--metrics-port") + 1] = str(metrics_port)
    command[command.index("--metrics-host") + 1] = "127.0.0.1"
    run_env = {k: interpolate(v, env) for k, v in service["environment"].items()}
    log = tmp_path / "reconciler.log"
    with open(log, "wb") as out:
        reconciler = subprocess.Popen([sys.executable, "-m", "swarm", *command[1:]], cwd=tmp_path,
                                      env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **run_env},
                                      stdout=out, stderr=out)
    keys = SwarmKeys("research")
    url = to_test_server(compose["services"]["summarizer"]["environment"]["REDIS_URL"], env, redis_server)

    def agent_logs_in() -> bool:
        client = redis.Redis.from_url(url, socket_timeout=2, retry=None)
        try:
            return bool(client.xadd(keys.outbox("summarizer"), {"topic": "results.summary", "payload": "{}"}))
        except (redis.exceptions.AuthenticationError, redis.exceptions.ConnectionError):
            return False
        finally:
            client.close()

    def wait(predicate: Any, what: str) -> None:
        deadline = time.monotonic() + 20
        while not predicate():
            assert reconciler.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"{what}:\n{log.read_text()[-3000:]}"
            time.sleep(0.05)

    try:
        wait(agent_logs_in, "the reconciler service never created the agent's user")
        redis_server.restart()  # the redis container restarting: same AOF, users gone
        admin = redis.Redis(host="127.0.0.1", port=redis_server.port)
        admin.config_set("requirepass", ADMIN_PASSWORD)  # what --requirepass does at every start
        admin.close()
        wait(agent_logs_in, "the agent's user was not re-created after the Redis restart")
        # the registry may re-create the users first (it watches the run_id too); the
        # reconciler must still notice the restart by itself
        wait(lambda: "Redis restarted" in log.read_text(), "the reconciler did not notice the Redis restart")
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        assert 'swarm_reconcile_sync_state{state="synced"} 1.0' in scraped
    finally:
        reconciler.terminate()
        reconciler.wait(timeout=10)
        registry.stop()
