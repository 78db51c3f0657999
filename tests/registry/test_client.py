"""AgentRegistryClient against the real registry (uvicorn subprocess + redis-server).

The ``registry`` fixture (tests/registry/conftest.py) serves swarm ``research``
with the compiled catalog pushed; ``architect`` is declared there (planner,
capabilities [planning]).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from swarm.errors import AuthError, ConflictError, InvalidRequestError, NotDeclaredError
from swarm.registry import AgentRegistryClient
from tests.registry.conftest import RegistryProcess
from tests.support.wait import await_until

ARCHITECT_METADATA: dict[str, Any] = {
    # what the generated server.py sends (compiled/research/agents/architect/server.py)
    "agent_name": "Architect",
    "version": "1.0.0",
    "role": "planner",
    "capabilities": ["planning"],
    "topics": {
        "publish": ["tasks.research", "tasks.summarize"],
        "subscribe": ["results.research", "results.summary", "reviews.verdict"],
    },
    "health_url": "http://127.0.0.1:8001/health/live",
    "team": "blue",
}


@pytest.fixture(autouse=True)
def agent_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_HOST", "127.0.0.1")
    monkeypatch.setenv("AGENT_PORT", "8001")
    monkeypatch.delenv("SWARM_AGENT_TOKEN", raising=False)


def client_for(registry: RegistryProcess, agent_id: str = "architect", **kw: Any) -> AgentRegistryClient:
    kw.setdefault("ttl_seconds", 3)
    kw.setdefault("heartbeat_interval", 0.3)
    kw.setdefault("token", registry.agent_token(agent_id) if registry.secret else None)
    return AgentRegistryClient(registry.url, agent_id, **kw)


async def get_agent(registry: RegistryProcess, agent_id: str = "architect") -> dict[str, Any] | None:
    async with httpx.AsyncClient(headers=registry.read_headers(), base_url=registry.url, timeout=5) as http:
        r = await http.get(f"/agents/{agent_id}")
    if r.status_code == 404:
        return None
    r.raise_for_status()
    body: dict[str, Any] = r.json()
    return body


async def test_register_sends_the_users_fields_and_the_registry_stores_them(registry: RegistryProcess) -> None:
    async with client_for(registry) as client:
        answer = await client.register(ARCHITECT_METADATA)
        assert client.registered
        assert answer["agent_id"] == "architect"
        stored = await get_agent(registry)
    assert stored is not None
    assert (stored["host"], stored["port"], stored["ttl_seconds"]) == ("127.0.0.1", 8001, 3)
    assert stored["agent_name"] == "Architect"
    assert stored["version"] == "1.0.0"
    assert stored["role"] == "planner"
    assert stored["capabilities"] == ["planning"]
    assert stored["health_url"] == "http://127.0.0.1:8001/health/live"
    # lifted fields are not duplicated in metadata; unknown keys stay there
    assert stored["metadata"] == {"team": "blue"}


async def test_register_is_idempotent_201_then_200(registry: RegistryProcess) -> None:
    async with client_for(registry) as client:
        body = client.build_register_body(ARCHITECT_METADATA)
        async with httpx.AsyncClient(base_url=registry.url, headers=registry.agent_headers("architect")) as http:
            first = await http.post("/agents/register", json=body)
            second = await http.post("/agents/register", json=body)
        assert (first.status_code, second.status_code) == (201, 200)
        await client.register(ARCHITECT_METADATA)  # the client accepts 200 as success
        assert client.registered


async def test_minimal_metadata_is_filled_from_the_catalog(registry: RegistryProcess) -> None:
    async with client_for(registry) as client:
        await client.register()
        stored = await get_agent(registry)
    assert stored is not None
    assert stored["agent_name"] == "architect"  # the client sends the id when no name is given
    assert stored["role"] == "planner" and stored["capabilities"] == ["planning"]
    assert stored["topics"]["publish"] == ["tasks.research", "tasks.summarize"]


async def test_heartbeat_loop_renews_the_lease(registry: RegistryProcess) -> None:
    async with client_for(registry) as client:
        await client.register(ARCHITECT_METADATA)
        first = await get_agent(registry)
        assert first is not None
        await client.start_heartbeat_loop()

        async def renewed() -> bool:
            now = await get_agent(registry)
            return now is not None and now["lease_expires_at"] > first["lease_expires_at"]

        await await_until(renewed, timeout=5)
        assert client.registrations == 1  # renewals are heartbeats, not registrations


async def test_404_heartbeat_makes_the_loop_register_again(registry: RegistryProcess) -> None:
    async with client_for(registry) as client:
        await client.register(ARCHITECT_METADATA)
        await client.start_heartbeat_loop()
        async with httpx.AsyncClient(base_url=registry.url, headers=registry.admin_headers()) as http:
            assert (await http.delete("/agents/architect")).status_code == 204
        assert await get_agent(registry) is None

        async def back() -> dict[str, Any] | None:
            return await get_agent(registry)

        stored = await await_until(back, timeout=5)
        assert client.registrations == 2
        # re-registered with the remembered metadata, not a bare body
        assert stored["metadata"] == {"team": "blue"} and stored["agent_name"] == "Architect"


async def test_loop_registers_first_when_never_registered(registry: RegistryProcess) -> None:
    async with client_for(registry) as client:
        await client.start_heartbeat_loop()  # no register() call: the loop does it

        async def present() -> dict[str, Any] | None:
            return await get_agent(registry)

        await await_until(present, timeout=5)
        assert client.registered


async def test_context_exit_deregisters(registry: RegistryProcess) -> None:
    async with client_for(registry) as client:
        await client.register(ARCHITECT_METADATA)
        await client.start_heartbeat_loop()
        assert await get_agent(registry) is not None
    assert await get_agent(registry) is None
    assert client._http.is_closed
    assert client._heartbeat_task is None


async def test_deregister_removes_and_tolerates_repeats(registry: RegistryProcess) -> None:
    async with client_for(registry) as client:
        await client.register(ARCHITECT_METADATA)
        assert await client.deregister() is True
        assert await get_agent(registry) is None
        assert not client.registered
        await client.deregister()  # already gone: no exception


async def test_refusals_map_to_swarm_error_types(registry: RegistryProcess) -> None:
    """One registry for every refusal (each case starts from the same state)."""
    async with client_for(registry, token=registry.agent_token("reviewer")) as client:
        with pytest.raises(AuthError, match="403") as info:
            await client.register(ARCHITECT_METADATA)
        assert not isinstance(info.value, NotDeclaredError)
    async with client_for(registry, token="") as client:
        with pytest.raises(AuthError, match="401"):
            await client.register(ARCHITECT_METADATA)
    async with client_for(registry, "stranger") as client:
        with pytest.raises(NotDeclaredError, match="not declared"):
            await client.register({})
    async with client_for(registry) as client:
        with pytest.raises(NotDeclaredError, match="role"):
            await client.register({**ARCHITECT_METADATA, "role": "worker"})
        with pytest.raises(InvalidRequestError, match="version"):
            await client.register({**ARCHITECT_METADATA, "version": "one"})
        assert not client.registered
        await client.register(ARCHITECT_METADATA)
        with pytest.raises(NotDeclaredError, match="capabilities that are not declared: juggling"):
            await client.register({**ARCHITECT_METADATA, "capabilities": ["planning", "juggling"]})
        with pytest.raises(ConflictError, match="capabilities"):
            await client.register({**ARCHITECT_METADATA, "capabilities": []})
        # a new version may change an immutable field (within the declared capabilities)
        await client.register({**ARCHITECT_METADATA, "version": "1.1.0", "capabilities": []})
        stored = await get_agent(registry)
        assert stored is not None and stored["capabilities"] == []


async def test_client_heartbeats_at_the_registrys_pace_when_its_lease_is_shorter(
    registry_factory: Any,
) -> None:
    """Defaults (ttl 60, heartbeat 20) against a catalog TTL of 3 s: the registry caps
    the lease at 3 s, so heartbeating every 20 s would lose the lease between beats."""
    from tests.registry.conftest import make_catalog

    registry = registry_factory()
    registry.push(make_catalog(["alpha"], ttl_seconds=3, heartbeat_interval=1))
    async with AgentRegistryClient(registry.url, "alpha", token=registry.agent_token("alpha")) as client:
        await client.register()
        assert client.effective_heartbeat_interval <= 1
        stored = await get_agent(registry, "alpha")
        assert stored is not None and stored["ttl_seconds"] == 3
        await client.start_heartbeat_loop()

        async def renewed() -> bool:
            now = await get_agent(registry, "alpha")
            return now is not None and now["lease_expires_at"] > stored["lease_expires_at"]

        await await_until(renewed, timeout=5)
        assert client.registrations == 1  # never lost the lease, never had to register again
