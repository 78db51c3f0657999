"""The dashboard's read endpoints (/ui/api/*) on a real registry and redis-server: auth, the CSP
of the pages, the ACL matrix equal to compiled/research/acl.json, topics, messages, sync."""

from __future__ import annotations

import json

import httpx
import redis

from swarm.registry.ui import CSP
from tests.registry.conftest import REPO, TEST_SECRET, RegistryFactory, RegistryProcess
from tests.support.dashboard import apply_bus, open_breaker, publish, write_reconcile_state

API = ["/ui/api/overview", "/ui/api/topics", "/ui/api/acl", "/ui/api/sync", "/ui/api/agents/architect",
       "/ui/api/topics/tasks.research/messages"]


def test_pages_are_open_with_a_strict_csp_and_data_needs_the_read_token(registry: RegistryProcess) -> None:
    page = httpx.get(registry.url + "/ui/", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert page.headers["content-security-policy"] == CSP and "default-src 'self'" in CSP
    assert "<script src=\"app.js\"" in page.text and "<script>" not in page.text
    assert httpx.get(registry.url + "/ui/app.js", timeout=10).headers["content-security-policy"] == CSP
    script = httpx.get(registry.url + "/ui/app.js", timeout=10).text
    assert not [w for w in (".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write", "eval(") if w in script]
    assert httpx.get(registry.url + "/ui", timeout=10, follow_redirects=False).headers["location"] == "/ui/"
    assert httpx.get(registry.url + "/ui/nothing-here", timeout=10).status_code == 404
    for path in API:
        refused = httpx.get(registry.url + path, timeout=10)
        assert refused.status_code == 401, (path, refused.text)
        assert refused.headers["www-authenticate"] == "Bearer"
        # an agent's token reads GET /agents, but not payloads nor the whole ACL table
        agent = httpx.get(registry.url + path, headers=registry.agent_headers("architect"), timeout=10)
        assert agent.status_code == 403, (path, agent.text)
        wrong = httpx.get(registry.url + path, headers={"Authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 403
        for headers in (registry.read_headers(), registry.admin_headers()):
            assert registry.get(path, headers=headers).status_code in (200, 404), path


def test_public_reads_do_not_open_the_dashboard_data(registry: RegistryProcess) -> None:
    from tests.registry.conftest import research_catalog

    catalog = research_catalog()
    registry.push(catalog.model_copy(update={"settings": catalog.settings.model_copy(update={"public_reads": True})}))
    assert httpx.get(registry.url + "/agents", timeout=10).status_code == 200
    assert httpx.get(registry.url + "/ui/api/topics", timeout=10).status_code == 401


def test_acl_matrix_equals_the_compiled_table(registry: RegistryProcess) -> None:
    before = registry.get("/ui/api/acl").json()
    assert before["installed"] is False and "swarm bus apply" in before["detail"]
    apply_bus(registry.redis.url, TEST_SECRET)
    doc = registry.get("/ui/api/acl").json()
    compiled = json.loads((REPO / "compiled" / "research" / "acl.json").read_text())
    assert doc["installed"] is True
    assert doc["matrix"] == compiled["table"]
    assert {a: {k: v[k] for k in ("role", "publish", "subscribe")} for a, v in doc["agents"].items()} == compiled["agents"]
    assert doc["roles"] == compiled["roles"]


def test_topics_messages_agent_detail_and_sync(registry_factory: RegistryFactory) -> None:
    # no sweep during the test: a sweep clears a protection flag that no mass expiry justifies
    registry = registry_factory(extra_args=["--sweep-interval", "3600"])
    registry.push()
    assert registry.get("/ui/api/topics").json()["installed"] is False
    apply_bus(registry.redis.url, TEST_SECRET)
    publish(registry.redis.url, TEST_SECRET, "tasks.research", {"q": "x" * 2000}, "architect")
    topics = registry.get("/ui/api/topics").json()
    by = {t["topic"]: t for t in topics["topics"]}
    assert by["tasks.research"]["length"] == 1 and by["results.research"]["length"] == 0
    assert by["tasks.research"]["publishers"] == ["architect"]
    assert {i["agent"]: i["waiting"] for i in topics["inboxes"]}["web-researcher"] == 1
    messages = registry.get("/ui/api/topics/tasks.research/messages", params={"count": "5"}).json()
    [m] = messages["messages"]
    assert m["sender"] == "architect" and m["truncated"] is True and len(m["payload"]) == 500 and m["size"] > 2000
    assert registry.get("/ui/api/topics/no.such/messages").status_code == 404
    assert registry.get("/ui/api/topics/tasks.research/messages", params={"count": "101"}).status_code == 422
    assert registry.get("/ui/api/topics/Bad..Topic/messages").status_code == 422

    assert registry.register("architect", metadata={"api_key": "hidden", "team": "a"}).status_code in (200, 201)
    client = redis.Redis.from_url(registry.redis.url)
    open_breaker(client, "research", "architect")
    detail = registry.get("/ui/api/agents/architect").json()
    assert detail["breaker"]["state"] == "open" and detail["breaker"]["failures"] == "4"
    assert detail["breaker_transitions"][0]["type"] == "breaker-opened"
    assert detail["registration"]["status"] == "critical"
    assert detail["registration"]["metadata"] == {"team": "a"}  # private to the agent and the admin
    assert detail["rights"]["publish"] == ["tasks.research", "tasks.summarize"]
    admin = registry.get("/ui/api/agents/architect", headers=registry.admin_headers()).json()
    assert admin["registration"]["metadata"]["api_key"] == "hidden"
    assert registry.get("/ui/api/agents/nobody").status_code == 404
    overview = registry.get("/ui/api/overview").json()
    assert overview["breakers_open"] == ["architect"] and overview["protection"] is False
    client.set("swarm:{research}:protection", "1")
    assert registry.get("/ui/api/overview").json()["protection"] is True

    write_reconcile_state(client, "research")
    sync = registry.get("/ui/api/sync").json()
    assert sync["status"]["state"] == "invalid-spec"
    assert sync["status"]["last_error"]["issues"][0]["line"] == 12
    assert [h["result"] for h in sync["history"]] == ["invalid-spec", "applied"]
    assert sync["lease"]["owner"] == "laptop-4f2a" and sync["lease"]["ttl_ms"] > 0
    client.close()
