"""Registry HTTP API against a real uvicorn subprocess and a real redis-server."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from swarm.registry.models import CatalogState
from tests.registry.conftest import RegistryFactory, RegistryProcess, make_catalog, research_catalog


def post(reg: RegistryProcess, path: str, agent_id: str, **kw: object) -> httpx.Response:
    return httpx.post(reg.url + path, headers=reg.agent_headers(agent_id), timeout=10, **kw)  # type: ignore[arg-type]


def test_register_new_then_same_then_fields_filled_from_catalog(registry: RegistryProcess) -> None:
    first = registry.register("architect", host="10.0.0.5", port=8001, metadata={"zone": "a"})
    assert first.status_code == 201, first.text
    body = first.json()
    declared = research_catalog().agents["architect"]
    assert body["role"] == declared.role
    assert body["capabilities"] == declared.capabilities
    assert body["topics"] == declared.topics.model_dump()
    assert body["version"] == declared.version
    assert body["agent_name"] == "Architect"
    assert body["health_url"] == "http://10.0.0.5:8001/health/live"
    assert body["metadata"] == {"zone": "a"}
    assert body["declared"] is True
    assert body["ttl_seconds"] == 30 and body["heartbeat_interval"] == 10
    assert body["lease_expires_at"] > body["registered_at"]

    again = registry.register("architect", host="10.0.0.5", port=8001, metadata={"zone": "a"})
    assert again.status_code == 200
    assert again.json()["registered_at"] == body["registered_at"]
    assert again.json()["updated_at"] == body["updated_at"]


def test_ttl_is_capped_by_the_catalog(registry: RegistryProcess) -> None:
    assert registry.register("architect", ttl_seconds=3600).json()["ttl_seconds"] == 30
    assert registry.register("reviewer", ttl_seconds=6).json()["ttl_seconds"] == 6


def test_immutable_fields_conflict_at_same_version_but_not_across_versions(registry: RegistryProcess) -> None:
    agent = "paper-researcher"  # declares citations and research
    assert registry.register(agent).status_code == 201
    conflict = registry.register(agent, capabilities=["citations"])
    assert conflict.status_code == 409
    assert conflict.json()["fields"] == ["capabilities"]
    assert "capabilities" in conflict.json()["detail"]
    # a mutable field may change at the same version
    updated = registry.register(agent, host="h2")
    assert updated.status_code == 200 and updated.json()["host"] == "h2"
    bumped = registry.register(agent, version="1.1.0", capabilities=["research"])
    assert bumped.status_code == 200, bumped.text
    assert bumped.json()["capabilities"] == ["research"]
    assert registry.get(f"/agents/{agent}").json()["capabilities"] == ["research"]


def test_catalog_refusals_are_403_with_reason(registry: RegistryProcess) -> None:
    undeclared = registry.register("stranger")
    assert undeclared.status_code == 403
    assert undeclared.json()["error"] == "not_declared"
    assert "not declared" in undeclared.json()["detail"]
    role = registry.register("architect", role="worker")
    assert role.status_code == 403 and "role" in role.json()["detail"]
    topics = registry.register("architect", topics={"publish": ["tasks.admin.reset"], "subscribe": []})
    assert topics.status_code == 403
    assert "tasks.admin.reset" in topics.json()["detail"]


def test_allow_undeclared_catalog_accepts_strangers(registry_factory: RegistryFactory) -> None:
    reg = registry_factory()
    reg.push(make_catalog(["alpha"], allow_undeclared=True))
    r = reg.register("stranger", role="worker", capabilities=["x"])
    assert r.status_code == 201, r.text
    assert r.json()["declared"] is False and r.json()["capabilities"] == ["x"]


def test_register_without_catalog_is_503(registry_factory: RegistryFactory) -> None:
    reg = registry_factory()
    r = reg.register("architect")
    assert r.status_code == 503
    assert r.json()["error"] == "no_catalog"
    assert "retry-after" in r.headers
    assert reg.get("/health/ready").status_code == 503
    reg.push()
    assert reg.get("/health/ready").status_code == 200


def test_heartbeat_renews_and_404_for_unknown(registry: RegistryProcess) -> None:
    reg = registry.register("architect").json()
    hb = post(registry, "/agents/architect/heartbeat", "architect")
    assert hb.status_code == 200
    assert hb.json()["lease_expires_at"] >= reg["lease_expires_at"]
    assert hb.json()["heartbeat_interval"] == 10
    from swarm.registry.models import Heartbeat

    assert Heartbeat.model_validate_json(hb.content).agent_id == "architect"  # hand-formatted body = the model
    unknown = post(registry, "/agents/reviewer/heartbeat", "reviewer")
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "not_registered"


def test_deregister_is_204_and_idempotent(registry: RegistryProcess) -> None:
    registry.register("architect")
    headers = registry.agent_headers("architect")
    assert httpx.delete(registry.url + "/agents/architect", headers=headers).status_code == 204
    assert registry.get("/agents/architect").status_code == 404
    assert httpx.delete(registry.url + "/agents/architect", headers=headers).status_code == 204
    assert post(registry, "/agents/architect/heartbeat", "architect").status_code == 404


def test_list_filters(registry: RegistryProcess) -> None:
    for agent_id in ("architect", "paper-researcher", "reviewer"):
        assert registry.register(agent_id).status_code == 201
    def ids(**params: str) -> list[str]:
        r = registry.get("/agents", params=params)
        assert r.status_code == 200, r.text
        assert r.json()["count"] == len(r.json()["agents"])
        return [a["agent_id"] for a in r.json()["agents"]]

    assert ids() == ["architect", "paper-researcher", "reviewer"]
    assert ids(capability="citations") == ["paper-researcher"]
    assert ids(role="planner") == ["architect"]
    assert ids(topic="results.research") == ["architect", "paper-researcher", "reviewer"]
    assert ids(topic="tasks.summarize") == ["architect"]
    assert ids(status="healthy") == ["architect", "paper-researcher", "reviewer"]
    assert ids(status="critical") == []
    # the bus's prober writes breaker hashes; open or half-open means critical
    r = registry.redis.client()
    r.hset("swarm:{research}:breaker:reviewer", mapping={"state": "open"})  # type: ignore[attr-defined]
    r.close()  # type: ignore[attr-defined]
    assert ids(status="critical") == ["reviewer"]
    assert registry.get("/agents/reviewer").json()["status"] == "critical"
    assert registry.get("/agents", params={"status": "sleepy"}).status_code == 422


def test_catalog_put_get_and_swarm_mismatch(registry_factory: RegistryFactory) -> None:
    reg = registry_factory()
    assert reg.get("/catalog").status_code == 404
    first = reg.push(revision="abc")
    assert first.changed is True and len(first.digest) == 64
    again = reg.push(revision="abc")
    assert again.changed is False and again.digest == first.digest
    body = reg.get("/catalog").text
    got = json.loads(body)
    assert got["revision"] == "abc" and got["digest"] == first.digest
    assert set(got["catalog"]["agents"]) == set(research_catalog().agents)
    # the body is made from kept agent texts: byte for byte what the model itself dumps, twice
    assert body == CatalogState.model_validate_json(body).model_dump_json() == reg.get("/catalog").text
    other = make_catalog(["x"], swarm="other")
    r = httpx.put(reg.url + "/catalog", json={"revision": None, "catalog": other.model_dump(mode="json")},
                  headers=reg.admin_headers())
    assert r.status_code == 409 and r.json()["error"] == "swarm_mismatch"


def test_agents_no_longer_declared_are_kept_until_deleted_by_admin(registry: RegistryProcess) -> None:
    registry.register("architect")
    registry.push(make_catalog(["alpha"]))
    assert registry.get("/agents/architect").status_code == 200
    r = httpx.delete(registry.url + "/agents/architect", headers=registry.admin_headers())
    assert r.status_code == 204
    assert registry.get("/agents/architect").status_code == 404


def test_malformed_bodies_and_ids_are_422_with_field_errors(registry: RegistryProcess) -> None:
    h = registry.admin_headers()
    bad_json = httpx.post(registry.url + "/agents/register", content=b"{not json", headers=h)
    assert bad_json.status_code == 422 and bad_json.json()["detail"][0]["type"] == "json_invalid"
    missing = httpx.post(registry.url + "/agents/register", json={"host": "x"}, headers=h)
    assert missing.status_code == 422
    assert {"loc": ["body", "agent_id"], "msg": "Field required", "type": "missing"} in missing.json()["detail"]
    bad_id = httpx.post(registry.url + "/agents/register", json={"agent_id": "Bad_Id"}, headers=h)
    assert bad_id.status_code == 422 and bad_id.json()["detail"][0]["loc"] == ["body", "agent_id"]
    bad_port = httpx.post(registry.url + "/agents/register", json={"agent_id": "architect", "port": 0}, headers=h)
    assert bad_port.json()["detail"][0]["loc"] == ["body", "port"]
    unknown = httpx.post(registry.url + "/agents/register", json={"agent_id": "architect", "colour": 1}, headers=h)
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["body", "colour"]
    path = httpx.post(registry.url + "/agents/Bad_Id/heartbeat", headers=h)
    assert path.status_code == 422 and path.json()["detail"][0]["loc"] == ["path", "agent_id"]
    long_id = "a" * 64
    assert registry.get(f"/agents/{long_id}").status_code == 422


def test_bodies_over_64k_are_413_by_header_and_by_stream(registry: RegistryProcess) -> None:
    h = registry.admin_headers()
    big = json.dumps({"agent_id": "architect", "metadata": {"x": "y" * 70_000}}).encode()
    r = httpx.post(registry.url + "/agents/register", content=big, headers=h)
    assert r.status_code == 413 and r.json()["error"] == "too_large"

    def chunks():  # no Content-Length: chunked transfer encoding
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    r = httpx.post(registry.url + "/agents/register", content=chunks(), headers=h)
    assert r.status_code == 413
    assert registry.register("architect").status_code == 201  # server still fine


def test_catalog_of_a_thousand_agents_is_not_held_to_the_64k_agent_body_cap(registry: RegistryProcess) -> None:
    catalog = make_catalog([f"agent-{i:04d}" for i in range(1000)])
    assert len(catalog.model_dump_json()) > 64 * 1024
    registry.push(catalog)
    got = registry.get("/catalog", timeout=10).json()
    assert len(got["catalog"]["agents"]) == 1000
    # the agent-facing cap is unchanged
    big = json.dumps({"agent_id": "agent-0001", "metadata": {"x": "y" * 70_000}}).encode()
    r = httpx.post(registry.url + "/agents/register", content=big, headers=registry.admin_headers())
    assert r.status_code == 413


def test_redis_down_is_503_with_retry_after_and_recovers(registry: RegistryProcess) -> None:
    registry.register("architect")
    registry.redis.stop()
    r = registry.register("architect")
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "1"
    assert r.json()["error"] in ("redis_unavailable", "no_catalog")
    assert post(registry, "/agents/architect/heartbeat", "architect").status_code == 503
    assert registry.get("/agents").status_code == 503
    assert registry.get("/status").status_code == 503
    assert registry.get("/health/ready").status_code == 503
    assert registry.get("/health/live").status_code == 200
    health = registry.get("/health").json()
    assert health["redis"] is False and health["status"] == "degraded"
    registry.redis.start()
    assert registry.get("/health/ready").status_code == 200
    assert post(registry, "/agents/architect/heartbeat", "architect").status_code == 200


def test_health_and_status(registry: RegistryProcess) -> None:
    registry.register("architect")
    health = registry.get("/health").json()
    assert health == {"status": "ok", "redis": True, "catalog_loaded": True, "agents": 1, "protection": False}
    r = registry.redis.client()
    r.set("swarm:{research}:status", json.dumps({"revision": "abc", "drift": []}))  # type: ignore[attr-defined]
    r.close()  # type: ignore[attr-defined]
    status = registry.get("/status").json()
    assert status["reconcile"] == {"revision": "abc", "drift": []}
    assert status["agents"] == {"declared": 6, "live": 1, "healthy": 1, "critical": 0, "expiring": 0}
    assert status["protection"] is False
    assert status["catalog"]["revision"] == "test"
    assert status["swarm"] == "research"


def test_openapi_lists_every_route_with_bodies(registry: RegistryProcess) -> None:
    doc = registry.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    routes = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    expected = {
        ("POST", "/agents/register"), ("POST", "/agents/{agent_id}/heartbeat"), ("DELETE", "/agents/{agent_id}"),
        ("GET", "/agents"), ("GET", "/agents/{agent_id}"), ("GET", "/agents/watch"), ("PUT", "/catalog"),
        ("PATCH", "/catalog"),
        ("GET", "/catalog"), ("GET", "/status"), ("GET", "/health"), ("GET", "/health/live"),
        ("GET", "/health/ready"), ("GET", "/openapi.json"), ("GET", "/metrics"), ("POST", "/hooks/git"),
    }
    # the dashboard's reads, under the /ui mount (its static pages are deliberately not API)
    dashboard = {("GET", "/ui/api/overview"), ("GET", "/ui/api/agents/{agent_id}"), ("GET", "/ui/api/topics"),
                 ("GET", "/ui/api/topics/{topic}/messages"), ("GET", "/ui/api/acl"), ("GET", "/ui/api/sync")}
    assert routes == expected | dashboard
    app_routes = {(m, r.path) for r in _app_routes() for m in getattr(r, "methods", None) or () if m != "HEAD"}
    assert app_routes == expected | {("GET", "/ui")}  # /ui redirects to the dashboard's /ui/
    schemas = doc["components"]["schemas"]
    assert {"RegisterRequest", "Registration", "CatalogPut", "CatalogPatch", "ErrorBody", "ValidationErrorBody"} <= set(schemas)
    register = doc["paths"]["/agents/register"]["post"]
    assert register["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("RegisterRequest")
    assert {"201", "200", "403", "409", "413", "422", "503"} <= set(register["responses"])


def _app_routes() -> list:  # type: ignore[type-arg]
    from swarm.registry.config import RegistryConfig
    from swarm.registry.server import create_app

    return list(create_app(RegistryConfig(swarm="research", insecure=True)).routes)


def test_metrics_exposes_the_named_metrics(registry: RegistryProcess) -> None:
    registry.register("architect")
    post(registry, "/agents/architect/heartbeat", "architect")
    post(registry, "/agents/reviewer/heartbeat", "reviewer")
    text = registry.get("/metrics").text
    assert 'swarm_registry_agents{status="healthy"} 1.0' in text
    assert 'swarm_registry_registrations_total{result="registered"} 1.0' in text
    assert 'swarm_registry_heartbeats_total{result="ok"} 1.0' in text
    assert 'swarm_registry_heartbeats_total{result="unknown"} 1.0' in text
    assert "swarm_registry_evictions_total 0.0" in text
    assert "swarm_registry_protection_mode 0.0" in text
    assert "swarm_registry_watchers 0.0" in text
    assert 'swarm_registry_request_duration_seconds_count{method="POST",route="/agents/register"} 1.0' in text


def test_unknown_route_and_method_are_json(registry: RegistryProcess) -> None:
    r = registry.get("/nowhere")
    assert r.status_code == 404 and r.json()["error"] == "http"
    r = httpx.delete(registry.url + "/catalog")  # GET, PUT and PATCH exist; DELETE does not
    assert r.status_code == 405
    assert set(r.headers["allow"].replace(" ", "").split(",")) >= {"GET", "PUT", "PATCH"}


@pytest.mark.parametrize("access_log", [False, True])
def test_access_log_flag(registry_factory: RegistryFactory, access_log: bool) -> None:
    reg = registry_factory(extra_args=["--access-log" if access_log else "--no-access-log", "--log-level", "info"])
    reg.get("/health/live")
    reg.stop()
    assert ('"GET /health/live HTTP/1.1" 200' in reg.log_text()) is access_log


def test_health_prober_marks_an_unreachable_agent_critical(registry_factory: RegistryFactory) -> None:
    from tests.registry.test_sweeper import wait_until
    from tests.support.services import free_port

    reg = registry_factory(extra_args=["--probe-interval", "0.1"])
    reg.push()
    port = free_port()
    dead = f"http://127.0.0.1:{port}/health/live"
    assert reg.register("architect", host="127.0.0.1", port=port, health_url=dead).status_code == 201
    wait_until(lambda: reg.get("/agents/architect").json()["status"] == "critical",
               what="breaker to open")
    assert [a["agent_id"] for a in reg.get("/agents", params={"status": "critical"}).json()["agents"]] \
        == ["architect"]


def test_no_probe_leaves_breakers_alone(registry_factory: RegistryFactory) -> None:
    import time

    reg = registry_factory(extra_args=["--no-probe", "--probe-interval", "0.1"])
    reg.push()
    assert reg.register("architect", host="127.0.0.1", port=1,
                        health_url="http://127.0.0.1:1/health/live").status_code == 201
    time.sleep(0.6)  # several probe intervals: nothing may probe
    r = reg.redis.client()
    assert r.exists("swarm:{research}:breaker:architect") == 0  # type: ignore[attr-defined]
    r.close()  # type: ignore[attr-defined]


def test_cli_push_sends_the_compiled_catalog(registry_factory: RegistryFactory) -> None:
    import subprocess
    import sys

    from tests.registry.conftest import REPO, TEST_SECRET

    reg = registry_factory()
    cmd = [sys.executable, "-m", "swarm", "registry", "push", "compiled/research", "--registry-url", reg.url,
           "--revision", "r1"]
    env = {"PATH": "/usr/bin:/bin", "SWARM_REGISTRY_SECRET": TEST_SECRET}
    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "changed" in first.stdout and "unchanged" not in first.stdout
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert "unchanged" in again.stdout
    assert reg.get("/catalog").json()["revision"] == "r1"
    denied = subprocess.run(cmd, cwd=REPO, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                            timeout=60)
    assert denied.returncode == 2 and "401" in denied.stderr


def test_push_reuses_the_callers_kept_alive_client(registry_factory: RegistryFactory) -> None:
    from swarm.errors import AuthError
    from swarm.registry.catalog_push import push_catalog

    reg = registry_factory()
    sent: list[str] = []
    with httpx.Client(event_hooks={"request": [lambda r: sent.append(f"{r.method} {r.url.path}")]}) as http:
        first = push_catalog(reg.url, research_catalog(), "r1", reg.admin, client=http)
        again = push_catalog(reg.url, research_catalog(), "r2", reg.admin, client=http)
        other = push_catalog(reg.url, make_catalog(["alpha"]), "r3", reg.admin, client=http)
        with pytest.raises(AuthError):
            push_catalog(reg.url, research_catalog(), "r4", None, client=http)
        assert not http.is_closed  # the caller's client is left open for its next pass
    assert (first.changed, again.changed, other.changed) == (True, False, True)
    assert sent == ["PUT /catalog"] * 4
    assert reg.get("/catalog").json()["revision"] == "r3"


def test_push_of_a_missing_catalog_names_the_path(tmp_path: Path) -> None:
    from swarm.errors import InvalidRequestError
    from swarm.registry.catalog_push import load_catalog

    with pytest.raises(InvalidRequestError, match="nowhere"):
        load_catalog(tmp_path / "nowhere")
    (tmp_path / "registry.json").write_text('{"swarm": 1}')
    with pytest.raises(InvalidRequestError, match="not a valid registry.json"):
        load_catalog(tmp_path)


async def test_unexpected_errors_are_json_500_without_internals() -> None:
    from swarm.registry.config import RegistryConfig
    from swarm.registry.server import create_app

    app = create_app(RegistryConfig(swarm="research", insecure=True, redis_url="redis://127.0.0.1:1/0"))
    registry = app.state.registry

    async def broken() -> None:
        raise RuntimeError("secret internals")

    registry.store.get_catalog = broken
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        r = await http.get("/catalog")
        assert r.status_code == 500
        assert r.json() == {"error": "internal", "detail": "internal server error"}
        assert "secret" not in r.text
        # and a Redis that cannot be reached is 503, not 500
        r = await http.post("/agents/a/heartbeat")
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
    await registry.redis.aclose()
    await registry.reader.aclose()


@pytest.mark.slow  # moved out of the quick suite (CI time budget)
def test_the_prober_logs_changes_of_state_not_every_probe(registry_factory: RegistryFactory) -> None:
    """At INFO, a healthy agent logs its first result once, then ten probe rounds add no line; a dead
    one logs its first failure and its breaker changing state (a few lines), not one line per probe."""
    import time

    from tests.registry.test_sweeper import wait_until
    from tests.support.services import free_port

    reg = registry_factory(extra_args=["--probe-interval", "0.1", "--log-level", "info"])
    reg.push()
    healthy = f"http://127.0.0.1:{reg.port}/health/live"  # the registry's own live endpoint answers 200
    assert reg.register("architect", host="127.0.0.1", port=reg.port, health_url=healthy).status_code == 201
    wait_until(lambda: "health of architect: ok (200)" in reg.log_text(), what="the first probe's line")
    before = reg.log_text()
    time.sleep(1.2)  # about ten probe rounds
    quiet = reg.log_text()[len(before):]
    assert "HTTP Request" not in quiet and "architect" not in quiet, quiet
    assert reg.log_text().count("architect") == reg.log_text().count("health of architect: ok (200)") == 1
    dead_port = free_port()
    assert reg.register("reviewer", host="127.0.0.1", port=dead_port,
                        health_url=f"http://127.0.0.1:{dead_port}/health/live").status_code == 201
    wait_until(lambda: reg.get("/agents/reviewer").json()["status"] == "critical", what="breaker to open")
    time.sleep(1.2)
    lines = [line for line in reg.log_text()[len(before):].splitlines() if "reviewer" in line]
    assert [line for line in lines if "breaker of reviewer is now" not in line] == [
        line for line in lines if "health of reviewer: failing (ConnectError)" in line], lines
    assert sum("health of reviewer: failing" in line for line in lines) == 1, lines
    assert len(lines) < 6, lines  # transitions (open, half-open, open...), never one per probe


async def test_a_request_past_max_concurrency_waits_for_a_slot_then_gets_503_after_queue_timeout() -> None:
    """A free handler slot is taken at once; with none free a request queues, and one that waited
    ``queue_timeout`` is answered 503 with Retry-After; the slot it waited for serves the next."""
    import asyncio

    from swarm.registry.config import RegistryConfig
    from swarm.registry.server import create_app

    app = create_app(RegistryConfig(swarm="research", insecure=True, redis_url="redis://127.0.0.1:1/0",
                                    max_concurrency=1, queue_timeout=0.2))
    registry = app.state.registry
    release = asyncio.Event()

    async def slow(agent_id: str) -> tuple[int, int, int]:
        await release.wait()
        return 1, 60_000, 20_000

    registry.store.heartbeat = slow
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        first = asyncio.create_task(http.post("/agents/a/heartbeat"))
        await asyncio.sleep(0.05)  # `first` holds the one slot
        waited = await http.post("/agents/b/heartbeat")
        assert waited.status_code == 503 and waited.headers["retry-after"] and "busy" in waited.text
        queued = asyncio.create_task(http.post("/agents/c/heartbeat"))
        await asyncio.sleep(0.05)
        release.set()  # the slot is freed: the queued request gets it
        assert (await first).status_code == 200 and (await queued).json()["agent_id"] == "c"
        assert (await http.post("/agents/d/heartbeat")).status_code == 200  # a free slot, at once
    await registry.redis.aclose()
    await registry.reader.aclose()
