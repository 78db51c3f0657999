"""End to end, the user's verification: compiled agents really register.

Compile the example spec (a copy with a 3 s TTL and 1 s heartbeat, so renewals
show quickly), start a redis-server and ``swarm registry serve``, push the
catalog with ``swarm registry push``, then run a generated
``compiled/research/agents/<id>/server.py`` under uvicorn exactly as its
Dockerfile does (cwd = the agent directory) and watch it from the outside:
it appears in GET /agents, its lease is renewed, SIGTERM deregisters it (gone
from /agents, a ``deregistered`` event on the SSE watch). An agent with
``registry: false`` contacts no registry at all.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from swarm import compile_spec
from swarm.registry.auth import agent_token
from tests.registry.conftest import TEST_SECRET, RegistryFactory, RegistryProcess, SSEReader
from tests.support.services import ProcessServer, RedisServer, free_port

REPO = Path(__file__).resolve().parents[2]
ENABLED, DISABLED = "reviewer", "auditor"  # python agents (the architect is a node one: tests/runtimes/node)
REGISTRY_CODE = ("AgentRegistryClient", "start_heartbeat_loop", "REGISTRY_URL", "deregister", "swarm.registry")


@pytest.fixture
def compiled(tmp_path: Path) -> Path:
    """``compiled/research`` of the example spec with ttl 3 s / heartbeat 1 s."""
    specs = tmp_path / "specs"
    shutil.copytree(REPO / "specs", specs)
    swarm_yaml = specs / "swarm.yaml"
    text = swarm_yaml.read_text()
    assert "ttl_seconds: 30" in text and "heartbeat_interval: 10" in text, "example spec changed: update this test"
    swarm_yaml.write_text(text.replace("ttl_seconds: 30", "ttl_seconds: 3").replace("heartbeat_interval: 10",
                                                                                     "heartbeat_interval: 1"))
    compile_spec(specs, tmp_path / "compiled")
    return tmp_path / "compiled" / "research"


def push_with_cli(compiled: Path, registry: RegistryProcess) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "swarm", "registry", "push", str(compiled), "--registry-url", registry.url,
         "--revision", "e2e"],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "SWARM_REGISTRY_SECRET": TEST_SECRET},
        cwd=REPO, timeout=30,
    )
    assert out.returncode == 0, out.stderr


def start_agent(compiled: Path, agent_id: str, *, registry_url: str, redis: RedisServer, log: Path) -> ProcessServer:
    """The generated server.py under uvicorn, as its Dockerfile runs it."""
    port = free_port()
    env = {
        "REGISTRY_URL": registry_url,
        "AGENT_ID": agent_id,
        "AGENT_HOST": "127.0.0.1",
        "AGENT_PORT": str(port),
        "REDIS_URL": redis.url,
        "SWARM_AGENT_TOKEN": agent_token(TEST_SECRET, "research", agent_id),
    }
    args = [sys.executable, "-m", "uvicorn", "server:app", "--host", "127.0.0.1", "--port", str(port)]
    return ProcessServer(args, port=port, env=env, cwd=compiled / "agents" / agent_id, log=log).start()


def listed(registry: RegistryProcess) -> dict[str, dict[str, Any]]:
    r = registry.get("/agents", timeout=5)
    r.raise_for_status()
    return {a["agent_id"]: a for a in r.json()["agents"]}


def as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def poll(predicate: Callable[[], Any], timeout: float, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


@pytest.mark.parametrize("where", ["committed", "fresh"])
def test_users_check_registry_code_only_in_enabled_agents(where: str, compiled: Path) -> None:
    """The user's own check, on the committed artifacts and on a fresh compile."""
    root = REPO / "compiled" / "research" if where == "committed" else compiled
    enabled = (root / "agents" / ENABLED / "server.py").read_text()
    disabled = (root / "agents" / DISABLED / "server.py").read_text()
    assert "from swarm.registry import AgentRegistryClient" in enabled
    assert "start_heartbeat_loop" in enabled
    assert "/health/live" in enabled
    assert "/health/live" in disabled  # still a server with health endpoints
    leaked = [name for name in REGISTRY_CODE if name in disabled]
    assert leaked == [], f"registry code in an agent with registry: false: {leaked}"
    compile(enabled, "server.py", "exec")  # both are valid Python
    compile(disabled, "server.py", "exec")


async def test_generated_agent_registers_renews_and_deregisters_on_sigterm(
    compiled: Path, redis_server: RedisServer, registry_factory: RegistryFactory, tmp_path: Path
) -> None:
    registry = registry_factory(redis_server)
    push_with_cli(compiled, registry)
    assert registry.get("/catalog").json()["catalog"]["settings"]["ttl_seconds"] == 3

    agent = start_agent(compiled, ENABLED, registry_url=registry.url, redis=redis_server,
                        log=tmp_path / "agent.log")
    try:
        # it appears in GET /agents within 2 s of answering /health/live
        entry = await asyncio.to_thread(poll, lambda: listed(registry).get(ENABLED), 2.0)
        assert entry is not None, "agent not registered within 2 s:\n" + agent.log.read_text()[-3000:]  # type: ignore[union-attr]
        assert (entry["host"], entry["port"]) == ("127.0.0.1", agent.port)
        assert entry["health_url"] == f"http://127.0.0.1:{agent.port}/health/live"
        assert entry["ttl_seconds"] == 3 and entry["role"] == "reviewer"

        # its lease is renewed: the expiry moves forward (heartbeat every 1 s)
        first = entry["lease_expires_at"]
        renewed = await asyncio.to_thread(
            poll, lambda: (listed(registry).get(ENABLED) or {}).get("lease_expires_at", 0) > first, 5.0
        )
        assert renewed, "lease never renewed"

        # SIGTERM: deregistered, and watchers are told
        async with httpx.AsyncClient(headers=registry.read_headers(), base_url=registry.url, timeout=httpx.Timeout(10, read=None)) as http:
            async with http.stream("GET", "/agents/watch") as response:
                assert response.status_code == 200
                reader = SSEReader(response)
                code = await asyncio.to_thread(agent.stop, signal.SIGTERM)
                log_text = agent.log.read_text() if agent.log else ""
                # uvicorn >= 0.29 re-raises the signal after a graceful shutdown: -15 is a clean exit
                assert code in (0, -signal.SIGTERM), log_text[-3000:]
                assert "Application shutdown complete" in log_text
                event = await reader.next_event(timeout=5)
                while not (event.event == "deregistered" and as_dict(event.json()).get("agent_id") == ENABLED):
                    event = await reader.next_event(timeout=5)
                assert event.id
        assert ENABLED not in listed(registry)
    finally:
        agent.stop()


@pytest.mark.parametrize(("agent_id", "contacts_registry"), [(DISABLED, False), (ENABLED, True)])
async def test_agent_with_registry_false_contacts_no_registry(
    agent_id: str, contacts_registry: bool,
    compiled: Path, redis_server: RedisServer, registry_factory: RegistryFactory, tmp_path: Path,
) -> None:
    """Point REGISTRY_URL at a TCP listener that counts connections.

    The enabled agent is the control: the same trap must catch it, or the
    disabled agent's zero would prove nothing.
    """
    registry = registry_factory(redis_server)
    push_with_cli(compiled, registry)
    contacts: list[str] = []

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        contacts.append(str(writer.get_extra_info("peername")))
        writer.close()

    listener = await asyncio.start_server(count, "127.0.0.1", 0)
    trap_url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    agent = await asyncio.to_thread(
        start_agent, compiled, agent_id, registry_url=trap_url, redis=redis_server, log=tmp_path / "agent.log"
    )
    try:
        async with httpx.AsyncClient(base_url=agent.url) as http:
            assert (await http.get("/health/live")).status_code == 200
            # an enabled agent tries to register at startup: the control is done as soon
            # as the trap catches it; the disabled agent gets a full heartbeat interval
            # and more (1 s in this spec) to prove it never calls
            deadline = asyncio.get_running_loop().time() + 1.5
            while not (contacts_registry and contacts) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            health = (await http.get("/health")).json()
        assert health["agent_id"] == agent_id
        assert bool(contacts) is contacts_registry, contacts
        assert agent_id not in listed(registry)
    finally:
        await asyncio.to_thread(agent.stop)
        listener.close()
        await listener.wait_closed()
    if not contacts_registry:
        assert contacts == [], "the agent contacted the registry URL while shutting down"
