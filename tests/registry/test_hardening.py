"""The registry against a misbehaving agent (or outsider), tried for real.

Each test runs ``swarm registry serve`` under uvicorn (subprocess) on a redis-server
of its own and does what an attacker would: read the fleet without a token, read
another agent's ``api_key``, replay a token of another swarm, claim undeclared
capabilities, steer the prober at an internal address, send an id with a trailing
newline, or burst 500 requests at once. The victim (another agent, the registry)
must be unharmed. The last tests check that the spec's
``bus.breaker.probe_interval_seconds`` sets the prober's pace.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import httpx
import pytest
import redis

from swarm.desired import RegistryCatalog, desired_from_spec
from swarm.keys import SwarmKeys
from swarm.registry.auth import admin_token, agent_token, read_token
from swarm.spec.loader import load_spec
from tests.registry.conftest import REPO, TEST_SECRET, RegistryFactory, RegistryProcess, SSEReader, research_catalog
from tests.registry.test_sweeper import wait_until
from tests.support.services import free_port

VICTIM_KEY = "sk-victim-0123456789"
READS = ["/agents", "/agents/architect", "/catalog", "/status"]
OPEN = ["/health", "/health/live", "/health/ready", "/openapi.json", "/metrics"]


def catalog_with(catalog: RegistryCatalog | None = None, **settings: Any) -> RegistryCatalog:
    base = catalog or research_catalog()
    return base.model_copy(update={"settings": base.settings.model_copy(update=settings)})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class CountingServer:
    """A real HTTP server (thread) that counts the GETs it receives: an "internal" service."""

    def __init__(self) -> None:
        self.hits = 0
        self.paths: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                owner.hits += 1
                owner.paths.append(self.path)
                body = b'{"status":"live"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "CountingServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def counting() -> Iterator[CountingServer]:
    with CountingServer() as server:
        yield server


# -- reads need a token ----------------------------------------------------------------


def test_reads_need_a_token_any_agents_the_admins_or_the_read_token(registry: RegistryProcess) -> None:
    assert registry.register("architect").status_code == 201
    wrong = bearer("nonsense")
    for path in READS:
        anonymous = httpx.get(registry.url + path, timeout=10)
        assert anonymous.status_code == 401, path
        assert anonymous.headers["www-authenticate"] == "Bearer"
        assert "architect" not in anonymous.text, path
        assert httpx.get(registry.url + path, headers=wrong, timeout=10).status_code == 403, path
        for headers in (registry.read_headers(), registry.agent_headers("reviewer"), registry.admin_headers()):
            assert registry.get(path, headers=headers).status_code == 200, path
    with httpx.stream("GET", registry.url + "/agents/watch", timeout=10) as watch:
        assert watch.status_code == 401
    with httpx.stream("GET", registry.url + "/agents/watch", headers=registry.read_headers(), timeout=10) as watch:
        assert watch.status_code == 200
    for path in OPEN:  # probes and scrapers carry no token; none of these names an agent
        r = httpx.get(registry.url + path, timeout=10)
        assert r.status_code == 200, path
        assert "architect" not in r.text, path
    # the read token reads, and nothing more
    read = registry.read_headers()
    assert httpx.post(registry.url + "/agents/architect/heartbeat", headers=read).status_code == 403
    assert httpx.delete(registry.url + "/agents/architect", headers=read).status_code == 403
    body = {"revision": None, "catalog": research_catalog().model_dump(mode="json")}
    assert httpx.put(registry.url + "/catalog", json=body, headers=read).status_code == 403
    assert registry.get("/agents/architect").status_code == 200  # the victim is still registered


def test_reads_need_a_token_before_any_catalog_is_pushed(registry_factory: RegistryFactory) -> None:
    reg = registry_factory()
    assert httpx.get(reg.url + "/agents", timeout=10).status_code == 401
    assert httpx.get(reg.url + "/status", timeout=10).status_code == 401
    assert reg.get("/agents").json()["count"] == 0


def test_public_reads_is_an_opt_in_of_the_spec_and_still_hides_private_metadata(
    registry_factory: RegistryFactory,
) -> None:
    reg = registry_factory()
    reg.push(catalog_with(public_reads=True))
    assert reg.register("architect", metadata={"api_key": VICTIM_KEY, "team": "blue"}).status_code == 201
    for path in READS:
        assert httpx.get(reg.url + path, timeout=10).status_code == 200, path
    listed = httpx.get(reg.url + "/agents", timeout=10)
    assert listed.json()["agents"][0]["metadata"] == {"team": "blue"}
    assert VICTIM_KEY not in listed.text
    # a wrong token is still refused, not silently treated as anonymous
    assert httpx.get(reg.url + "/agents", headers=bearer("nonsense"), timeout=10).status_code == 403


# -- private metadata -------------------------------------------------------------------


async def _first_event(reg: RegistryProcess, headers: dict[str, str], last_event_id: str) -> str:
    async with httpx.AsyncClient(headers=headers, timeout=10) as http:
        async with http.stream("GET", reg.url + "/agents/watch", headers={"Last-Event-ID": last_event_id}) as resp:
            assert resp.status_code == 200
            reader = SSEReader(resp)
            event = await reader.next_event(timeout=10)
            while event.event == "catalog-changed":
                event = await reader.next_event(timeout=10)
            return f"{event.event} {event.data}"


async def test_an_api_key_in_metadata_reaches_only_the_agent_itself_and_the_admin(
    registry_factory: RegistryFactory,
) -> None:
    reg = registry_factory()
    declared = research_catalog()
    architect = declared.agents["architect"].model_copy(update={"metadata": {"api_key": "declared-key"}})
    reg.push(declared.model_copy(update={"agents": {**declared.agents, "architect": architect}}))
    async with httpx.AsyncClient(base_url=reg.url, timeout=10) as http:
        r = await http.post("/agents/register", headers=reg.agent_headers("architect"),
                            json={"agent_id": "architect", "metadata": {"api_key": VICTIM_KEY, "team": "blue"}})
        assert r.status_code == 201 and r.json()["metadata"]["api_key"] == VICTIM_KEY  # its own answer
        others = {"read token": reg.read_headers(), "reviewer": reg.agent_headers("reviewer")}
        owners = {"architect": reg.agent_headers("architect"), "admin": reg.admin_headers()}
        for who, headers in {**others, **owners}.items():
            one = await http.get("/agents/architect", headers=headers)
            listed = await http.get("/agents", headers=headers)
            catalog = await http.get("/catalog", headers=headers)
            assert one.status_code == listed.status_code == catalog.status_code == 200
            visible = who in owners
            assert (VICTIM_KEY in one.text) is visible, who
            assert (VICTIM_KEY in listed.text) is visible, who
            assert ("declared-key" in catalog.text) is visible, who
            assert one.json()["metadata"]["team"] == "blue"  # public fields stay
    # the watch: backlog, the reset snapshot, and a live event
    for who, headers in {"read token": reg.read_headers(), "reviewer": reg.agent_headers("reviewer")}.items():
        backlog = await _first_event(reg, headers, "0-0")
        assert backlog.startswith("registered ") and '"team":"blue"' in backlog and VICTIM_KEY not in backlog, who
        reset = await _first_event(reg, headers, "99999999999999-0")  # an id from the future: reset
        assert reset.startswith("reset ") and '"team":"blue"' in reset and VICTIM_KEY not in reset, who
    assert VICTIM_KEY in await _first_event(reg, reg.agent_headers("architect"), "0-0")
    assert VICTIM_KEY in await _first_event(reg, reg.admin_headers(), "99999999999999-0")
    async with httpx.AsyncClient(headers=reg.agent_headers("reviewer"), timeout=10) as http:
        async with http.stream("GET", reg.url + "/agents/watch") as resp:
            reader = SSEReader(resp)
            await http.post(reg.url + "/agents/register", headers=reg.agent_headers("architect"),
                            json={"agent_id": "architect", "metadata": {"api_key": "sk-rotated", "team": "blue"}})
            live = await reader.next_event(timeout=10)
            assert live.event == "updated" and "sk-rotated" not in live.data and '"team":"blue"' in live.data


def test_the_spec_names_the_private_metadata_keys(registry_factory: RegistryFactory) -> None:
    reg = registry_factory()
    reg.push(catalog_with(private_metadata=["team"]))
    reg.register("architect", metadata={"api_key": "not-private-here", "team": "blue"})
    seen = reg.get("/agents/architect").json()["metadata"]
    assert seen == {"api_key": "not-private-here"}
    assert reg.get("/agents/architect", headers=reg.admin_headers()).json()["metadata"]["team"] == "blue"


# -- tokens bind the swarm --------------------------------------------------------------


def test_tokens_of_another_swarm_sharing_the_secret_are_refused(registry_factory: RegistryFactory) -> None:
    research = registry_factory(swarm="research")
    research.push()
    other = registry_factory(research.redis, swarm="other")  # same secret, same Redis
    other.push(research_catalog().model_copy(update={"swarm": "other"}))
    stolen = research.agent_headers("architect")
    r = httpx.post(other.url + "/agents/register", json={"agent_id": "architect"}, headers=stolen, timeout=10)
    assert r.status_code == 403
    assert other.register("architect").status_code == 201  # its own token works
    assert httpx.post(other.url + "/agents/architect/heartbeat", headers=stolen, timeout=10).status_code == 403
    assert httpx.delete(other.url + "/agents/architect", headers=stolen, timeout=10).status_code == 403
    for headers in (research.read_headers(), research.admin_headers(), stolen):
        assert httpx.get(other.url + "/agents", headers=headers, timeout=10).status_code == 403
    body = {"revision": None, "catalog": research_catalog().model_copy(update={"swarm": "other"}).model_dump(mode="json")}
    assert httpx.put(other.url + "/catalog", json=body, headers=research.admin_headers(), timeout=10).status_code == 403
    # the old unbound token format is refused too
    legacy = hmac.new(TEST_SECRET.encode(), b"agent:architect", hashlib.sha256).hexdigest()
    assert httpx.post(other.url + "/agents/architect/heartbeat", headers=bearer(legacy), timeout=10).status_code == 403
    assert other.get("/agents/architect").status_code == 200  # the victim is unharmed
    assert research.get("/agents/architect").status_code == 404  # and nothing leaked into the other swarm
    assert agent_token(TEST_SECRET, "research", "a") != agent_token(TEST_SECRET, "other", "a")
    assert admin_token(TEST_SECRET, "research") != admin_token(TEST_SECRET, "other")
    assert read_token(TEST_SECRET, "research") != read_token(TEST_SECRET, "other")


# -- registration -----------------------------------------------------------------------


def test_registered_capabilities_must_be_declared(registry: RegistryProcess) -> None:
    assert registry.register("architect").status_code == 201
    r = registry.register("web-researcher", capabilities=["research", "planning", "payments"])
    assert r.status_code == 403 and r.json()["error"] == "not_declared"
    assert "payments" in r.json()["detail"] and "planning" in r.json()["detail"]
    assert registry.register("web-researcher", capabilities=["research"]).status_code == 201
    planners = registry.get("/agents", params={"capability": "planning"}).json()["agents"]
    assert [a["agent_id"] for a in planners] == ["architect"]


def test_health_url_must_be_on_the_agents_own_host_and_port(
    registry_factory: RegistryFactory, counting: CountingServer,
) -> None:
    reg = registry_factory(extra_args=["--probe-interval", "0.1"])
    reg.push()
    internal = f"http://127.0.0.1:{counting.port}/admin/secrets"
    own_port = free_port()
    attempts: list[dict[str, Any]] = [
        {"host": "127.0.0.1", "port": own_port, "health_url": internal},  # another port
        {"host": "10.0.0.5", "port": counting.port, "health_url": internal},  # another host
        {"health_url": internal},  # no host to compare with
        {"host": "127.0.0.1", "port": counting.port, "health_url": f"ftp://127.0.0.1:{counting.port}/"},
        {"host": "127.0.0.1", "port": counting.port, "health_url": f"http://u:p@127.0.0.1:{counting.port}/"},
    ]
    for body in attempts:
        r = reg.register("architect", **body)
        assert r.status_code == 403, body
        assert r.json()["error"] == "health_url_refused" and r.json()["fields"] == ["health_url"], r.text
    # a registration on an address of its own: the prober probes that, and only that
    assert reg.register("architect", host="127.0.0.1", port=own_port).status_code == 201
    client = redis.Redis.from_url(reg.redis.url)
    try:
        wait_until(lambda: client.hget("swarm:{research}:breaker:architect", "failures") is not None,
                   what="the prober to probe the agent's own address")
    finally:
        client.close()
    assert counting.hits == 0
    # the same server as an agent's own address is fine: proof the prober would have reached it
    ok = reg.register("reviewer", host="127.0.0.1", port=counting.port,
                      health_url=f"http://127.0.0.1:{counting.port}/health/live")
    assert ok.status_code == 201
    wait_until(lambda: counting.hits > 0, what="the prober to probe the reviewer")
    assert set(counting.paths) == {"/health/live"}


# -- ids ---------------------------------------------------------------------------------


def test_an_id_with_a_trailing_newline_is_422(registry: RegistryProcess) -> None:
    assert registry.register("architect").status_code == 201
    admin = registry.admin_headers()
    for method, path in [("GET", "/agents/architect%0A"), ("POST", "/agents/architect%0A/heartbeat"),
                         ("DELETE", "/agents/architect%0A"), ("GET", "/agents/architect%0a")]:
        r = httpx.request(method, registry.url + path, headers=admin, timeout=10)
        assert r.status_code == 422, (method, path, r.text)
    body = httpx.post(registry.url + "/agents/register", json={"agent_id": "architect\n"}, headers=admin, timeout=10)
    assert body.status_code == 422
    assert registry.get("/agents", params={"status": "healthy\n"}).status_code == 422
    assert registry.get("/agents/architect").status_code == 200


# -- bursts ------------------------------------------------------------------------------


@pytest.mark.slow  # moved out of the quick suite (CI time budget)
async def test_500_concurrent_reads_and_500_concurrent_watch_connects_get_no_error(
    registry: RegistryProcess,
) -> None:
    for agent in ("architect", "reviewer", "summarizer"):
        assert registry.register(agent).status_code == 201
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=registry.url, headers=registry.read_headers(), limits=limits,
                                 timeout=httpx.Timeout(60)) as http:
        async def read() -> object:
            r = await http.get("/agents")
            return r.status_code if r.status_code != 200 or r.json()["count"] == 3 else "wrong count"

        reads = await asyncio.wait_for(asyncio.gather(*(read() for _ in range(500)), return_exceptions=True), 120)
        assert Counter(map(str, reads)) == {"200": 500}

        connected = 0
        all_in = asyncio.Event()

        async def watch() -> object:
            nonlocal connected
            async with http.stream("GET", "/agents/watch") as resp:
                connected += 1
                if connected == 500:
                    all_in.set()
                await asyncio.wait_for(all_in.wait(), 120)  # every stream open at once
                return resp.status_code

        watches = await asyncio.wait_for(asyncio.gather(*(watch() for _ in range(500)), return_exceptions=True), 150)
        assert Counter(map(str, watches)) == {"200": 500}
    assert "Traceback" not in registry.log_text()


# -- the spec's probe interval ------------------------------------------------------------


def _install_bus(reg: RegistryProcess, probe_interval: float) -> None:
    """Write bus.json as `swarm bus apply` does, with the given breaker.probe_interval_seconds."""
    bus = desired_from_spec(load_spec(REPO / "specs"), "test").bus
    settings = bus.settings.model_copy(update={"breaker": bus.settings.breaker.model_copy(
        update={"probe_interval_seconds": probe_interval})})
    r = redis.Redis.from_url(reg.redis.url)
    try:
        r.set(SwarmKeys(reg.swarm).bus, bus.model_copy(update={"settings": settings}).model_dump_json())
    finally:
        r.close()


def _hits_over(reg: RegistryProcess, counting: CountingServer, seconds: float) -> int:
    assert reg.register("architect", host="127.0.0.1", port=counting.port).status_code == 201
    start = counting.hits
    time.sleep(seconds)
    return counting.hits - start


def test_the_specs_probe_interval_sets_the_probers_pace(
    registry_factory: RegistryFactory, counting: CountingServer,
) -> None:
    reg = registry_factory(start=False)  # no --probe-interval
    _install_bus(reg, 0.2)
    reg.start()
    reg.push()
    hits = _hits_over(reg, counting, 3.0)
    # 0.2 s for 3 s is ~15 rounds; the default 5 s could give at most one
    assert 5 <= hits <= 60, hits


@pytest.mark.slow  # moved out of the quick suite (CI time budget)
def test_the_probe_interval_flag_overrides_the_spec(
    registry_factory: RegistryFactory, counting: CountingServer,
) -> None:
    slow_flag = registry_factory(start=False, extra_args=["--probe-interval", "60"])
    _install_bus(slow_flag, 0.2)
    slow_flag.start()
    slow_flag.push()
    assert _hits_over(slow_flag, counting, 3.0) <= 1
    slow_flag.stop()
    # and the other way round, so a prober that never probes cannot pass: a fast flag beats a slow spec
    fast_flag = registry_factory(start=False, extra_args=["--probe-interval", "0.2"])
    _install_bus(fast_flag, 60)
    fast_flag.start()
    fast_flag.push()
    assert _hits_over(fast_flag, counting, 3.0) >= 5


@pytest.mark.slow  # moved out of the quick suite (CI time budget)
def test_a_changed_spec_interval_takes_effect_without_a_restart(
    registry_factory: RegistryFactory, counting: CountingServer,
) -> None:
    reg = registry_factory(start=False)
    _install_bus(reg, 3600)
    reg.start()
    reg.push()
    assert _hits_over(reg, counting, 1.0) <= 1
    before = counting.hits
    _install_bus(reg, 0.2)  # the prober re-reads it within its recheck period (5 s)
    wait_until(lambda: counting.hits - before >= 5, timeout=20, what="probes at the new pace")

