"""AgentRegistryClient without a registry: arguments, body, host/port, backoff, loop control.

These need no server: the backoff math is pure, and the loop's behaviour against a
registry that is not there (a closed port) is exactly what we want to pin down.
Behaviour against the real registry is in ``test_client.py``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket

import httpx
import pytest

from swarm.errors import (
    AuthError,
    ConflictError,
    InvalidRequestError,
    NotDeclaredError,
    PermanentError,
    RegistryUnavailableError,
)
from swarm.registry import AgentRegistryClient
from swarm.registry import client as client_module
from swarm.registry.client import MAX_RETRY_DELAY, MIN_RETRY_DELAY, backoff_delay
from tests.support.services import free_port


def closed_url() -> str:
    """A URL where nothing listens (connection refused at once)."""
    return f"http://127.0.0.1:{free_port()}"


# -- constructor --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"agent_id": "Bad_Id"}, "agent_id 'Bad_Id'"),
        ({"agent_id": "-x"}, "agent_id '-x'"),
        ({"agent_id": "architect\n"}, "agent_id 'architect"),  # re.match with $ would accept it
        ({"agent_id": "a" * 64}, "at most 63"),
        ({"registry_url": "ftp://x"}, "registry_url"),
        ({"ttl_seconds": 0}, "ttl_seconds"),
        ({"ttl_seconds": 10, "heartbeat_interval": 10}, "heartbeat_interval (10) must be > 0 and < ttl_seconds (10)"),
        ({"heartbeat_interval": 0}, "heartbeat_interval"),
        ({"heartbeat_interval": True}, "heartbeat_interval"),
    ],
)
def test_constructor_rejects_bad_arguments_saying_which(kwargs: dict[str, object], fragment: str) -> None:
    args: dict[str, object] = {"registry_url": "http://127.0.0.1:1", "agent_id": "architect"}
    args.update(kwargs)
    with pytest.raises(InvalidRequestError, match=fragment.replace("(", r"\(").replace(")", r"\)")) as info:
        AgentRegistryClient(**args)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError) and isinstance(info.value, PermanentError)


def test_agent_id_rule_matches_the_spec_rule() -> None:
    from swarm.spec.models import NAME_MAX, NAME_PATTERN

    assert client_module.AGENT_ID_PATTERN == NAME_PATTERN
    assert client_module.AGENT_ID_MAX == NAME_MAX


async def test_defaults_follow_the_users_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWARM_AGENT_TOKEN", raising=False)
    c = AgentRegistryClient("http://127.0.0.1:8700/", "architect")
    try:
        assert (c.ttl_seconds, c.heartbeat_interval, c.registry_url) == (60, 20, "http://127.0.0.1:8700")
        assert "authorization" not in c._http.headers
        assert c._heartbeat_task is None
    finally:
        await c.aclose()


async def test_token_argument_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_AGENT_TOKEN", "from-env")
    from_env = AgentRegistryClient("http://127.0.0.1:1", "a")
    explicit = AgentRegistryClient("http://127.0.0.1:1", "a", token="explicit")
    try:
        assert from_env._http.headers["authorization"] == "Bearer from-env"
        assert explicit._http.headers["authorization"] == "Bearer explicit"
    finally:
        await from_env.aclose()
        await explicit.aclose()


# -- host / port ----------------------------------------------------------------------


async def test_host_port_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_HOST", "10.1.2.3")
    monkeypatch.setenv("AGENT_PORT", "8123")
    async with AgentRegistryClient("http://127.0.0.1:1", "a") as c:
        assert c._get_host_port() == ("10.1.2.3", 8123)


async def test_host_port_fallback_is_hostname_and_8000(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENT_HOST", raising=False)
    monkeypatch.delenv("AGENT_PORT", raising=False)
    async with AgentRegistryClient("http://127.0.0.1:1", "a") as c:
        assert c._get_host_port() == (socket.gethostname(), 8000)


@pytest.mark.parametrize("raw", ["eighty", "0", "70000"])
async def test_bad_agent_port_names_the_variable(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("AGENT_PORT", raw)
    async with AgentRegistryClient("http://127.0.0.1:1", "a") as c:
        with pytest.raises(InvalidRequestError, match=f"AGENT_PORT={raw!r}"):
            c._get_host_port()


# -- register body ----------------------------------------------------------------------


async def test_body_lifts_known_fields_and_keeps_the_rest_in_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_HOST", "127.0.0.1")
    monkeypatch.setenv("AGENT_PORT", "8001")
    async with AgentRegistryClient("http://127.0.0.1:1", "architect", ttl_seconds=30, heartbeat_interval=10) as c:
        body = c.build_register_body(
            {
                "name": "Architect",
                "version": "1.0.0",
                "role": "planner",
                "capabilities": ["planning"],
                "topics": {"publish": ["tasks.research"], "subscribe": []},
                "health_url": "http://127.0.0.1:8001/health/live",
                "team": "blue",
            }
        )
    assert body == {
        "agent_id": "architect",
        "agent_name": "Architect",
        "host": "127.0.0.1",
        "port": 8001,
        "ttl_seconds": 30,
        "version": "1.0.0",
        "role": "planner",
        "capabilities": ["planning"],
        "topics": {"publish": ["tasks.research"], "subscribe": []},
        "health_url": "http://127.0.0.1:8001/health/live",
        "metadata": {"team": "blue"},
    }


async def test_agent_name_prefers_agent_name_then_name_then_id() -> None:
    async with AgentRegistryClient("http://127.0.0.1:1", "architect") as c:
        assert c.build_register_body({"agent_name": "A", "name": "B"})["agent_name"] == "A"
        assert c.build_register_body({"agent_name": "A", "name": "B"})["metadata"] == {}
        assert c.build_register_body({"name": "B"})["agent_name"] == "B"
        assert c.build_register_body(None)["agent_name"] == "architect"
        assert c.build_register_body(None)["metadata"] == {}


# -- backoff ------------------------------------------------------------------------------


def test_backoff_window_doubles_and_is_capped() -> None:
    rng = random.Random(7)
    for failures in range(12):
        ceiling = min(MAX_RETRY_DELAY, 0.2 * 2**failures)
        draws = [backoff_delay(failures, rng=rng) for _ in range(200)]
        assert all(MIN_RETRY_DELAY <= d <= max(ceiling, MIN_RETRY_DELAY) for d in draws)
    # full jitter really spreads: late draws cover most of the capped window
    late = [backoff_delay(20, rng=rng) for _ in range(500)]
    assert min(late) < 0.3 and max(late) > 1.2


def test_backoff_rejects_negative_failures() -> None:
    with pytest.raises(InvalidRequestError, match="failures"):
        backoff_delay(-1)


def test_backoff_huge_failure_counts_do_not_overflow() -> None:
    assert MIN_RETRY_DELAY <= backoff_delay(10_000, rng=random.Random(1)) <= MAX_RETRY_DELAY


# -- against a registry that is not there ----------------------------------------------


async def test_register_against_closed_port_is_registry_unavailable() -> None:
    url = closed_url()
    async with AgentRegistryClient(url, "architect") as c:
        with pytest.raises(RegistryUnavailableError, match="ConnectError") as info:
            await c.register({})
        assert isinstance(info.value.__cause__, Exception)
        assert not c.registered


async def test_loop_backs_off_instead_of_hot_looping(monkeypatch: pytest.MonkeyPatch) -> None:
    """Count connection attempts during a 1 s outage: the floor bounds them hard."""
    attempts = 0
    real_request = AgentRegistryClient._request

    async def counting(self: AgentRegistryClient, method: str, path: str, **kw: object) -> object:
        nonlocal attempts
        attempts += 1
        return await real_request(self, method, path, **kw)

    monkeypatch.setattr(AgentRegistryClient, "_request", counting)
    c = AgentRegistryClient(closed_url(), "architect", ttl_seconds=3, heartbeat_interval=1)
    await c.start_heartbeat_loop()
    await asyncio.sleep(1.0)
    assert c._heartbeat_task is not None and not c._heartbeat_task.done()  # still alive, retrying
    await c.aclose()
    # >1 shows it retries; a hot loop would make thousands. The floor of 50 ms caps it at ~20.
    assert 2 <= attempts <= 1.0 / MIN_RETRY_DELAY + 2


async def test_cancelled_loop_exits_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="swarm.registry.client")
    c = AgentRegistryClient(closed_url(), "architect", ttl_seconds=3, heartbeat_interval=1)
    await c.start_heartbeat_loop()
    task = c._heartbeat_task
    assert task is not None
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)
    assert any("heartbeat loop of architect stopped" in r.getMessage() for r in caplog.records)
    await c.aclose()


async def test_start_heartbeat_loop_is_idempotent() -> None:
    async with AgentRegistryClient(closed_url(), "architect", ttl_seconds=3, heartbeat_interval=1) as c:
        await c.start_heartbeat_loop()
        first = c._heartbeat_task
        await c.start_heartbeat_loop()
        assert c._heartbeat_task is first
    assert first is not None and first.done()


async def test_deregister_tolerates_an_unreachable_registry(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="swarm.registry.client")
    c = AgentRegistryClient(closed_url(), "architect", ttl_seconds=3, heartbeat_interval=1)
    await c.start_heartbeat_loop()
    assert await c.deregister() is False
    assert c._heartbeat_task is None
    assert any("could not deregister architect" in r.getMessage() for r in caplog.records)
    await c.aclose()


async def test_context_exit_stops_loop_and_closes_http() -> None:
    async with AgentRegistryClient(closed_url(), "architect", ttl_seconds=3, heartbeat_interval=1) as c:
        await c.start_heartbeat_loop()
        task = c._heartbeat_task
    assert task is not None and task.done()
    assert c._http.is_closed


# -- answer -> error type (the mapping alone, with httpx.MockTransport) -------------------


def answering(status: int, body: object, headers: dict[str, str] | None = None) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, json=body, headers=headers))


@pytest.mark.parametrize(
    ("status", "body", "error", "fragment"),
    [
        (401, {"error": "missing_token", "detail": "missing bearer token"}, AuthError, "missing bearer token"),
        (403, {"error": "forbidden", "detail": "token does not grant"}, AuthError, "token does not grant"),
        (403, {"error": "not_declared", "detail": "agent 'x' is not declared"}, NotDeclaredError, "not declared"),
        (409, {"error": "conflict", "detail": "changed: role", "fields": ["role"]}, ConflictError, "changed: role"),
        (
            422,
            {"error": "invalid", "detail": [{"loc": ["body", "port"], "msg": "too big", "type": "x"}]},
            InvalidRequestError,
            "body.port: too big",
        ),
        (503, {"error": "unavailable", "detail": "redis down"}, RegistryUnavailableError, "answered 503: redis down"),
        (418, {"detail": "teapot"}, InvalidRequestError, "answered 418: teapot"),
    ],
)
async def test_register_maps_answers_to_swarm_errors(
    status: int, body: object, error: type[Exception], fragment: str
) -> None:
    async with AgentRegistryClient("http://registry.test", "architect", transport=answering(status, body)) as c:
        with pytest.raises(error, match=fragment) as info:
            await c.register({})
    assert not c.registered
    assert "http://registry.test" in str(info.value)  # says where


async def test_retry_after_is_carried_on_the_error() -> None:
    transport = answering(503, {"detail": "redis down"}, {"Retry-After": "3"})
    async with AgentRegistryClient("http://registry.test", "architect", transport=transport) as c:
        with pytest.raises(RegistryUnavailableError) as info:
            await c.heartbeat()
    assert info.value.delay == 3.0


def test_package_exports_only_the_client() -> None:
    import swarm.registry

    assert swarm.registry.__all__ == sorted(swarm.registry.__all__) == ["AgentRegistryClient"]
    assert all(getattr(swarm.registry, name) is not None for name in swarm.registry.__all__)


@pytest.mark.parametrize(
    ("asked", "effective"),
    [(0.5, 0.5), (100, 20.0), (0.001, 0.1), ("soon", 20.0), (True, 20.0), (None, 20.0)],
)
async def test_loop_adopts_a_faster_interval_asked_by_the_registry(asked: object, effective: float) -> None:
    transport = answering(201, {"agent_id": "architect", "heartbeat_interval": asked})
    async with AgentRegistryClient("http://registry.test", "architect", transport=transport) as c:
        await c.register({})
        assert c.effective_heartbeat_interval == effective
        assert c.heartbeat_interval == 20  # the configured value is kept
