"""The dashboard in a real headless Chromium against a real registry and redis-server.

Debian's /usr/bin/chromium driven by the ``playwright`` package (``tests/support/dashboard.py``);
marked ``browser`` and ``slow``. Waits are bounded waits for an element, never timing assertions.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator

import pytest
import redis

from tests.registry.conftest import REPO, TEST_SECRET, RegistryProcess, make_catalog
from tests.support.dashboard import CHROMIUM, apply_bus, launch_chromium, open_breaker, publish, write_reconcile_state

pytestmark = [pytest.mark.slow, pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"needs {CHROMIUM} (apt-get install chromium)")]


@pytest.fixture
def browser_page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = launch_chromium(p)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.errors = errors  # type: ignore[attr-defined]
        try:
            yield page
        finally:
            context.close()


def log_in(page: Any, registry: RegistryProcess, token: str | None = None) -> None:
    page.goto(registry.url + "/ui/")
    page.wait_for_selector("#login-form", state="visible", timeout=5000)
    page.fill("#token", token or registry.read_token())
    page.click("#login-form button[type=submit]")


def row(page: Any, agent_id: str) -> Any:
    return page.locator(f'#agents-table tbody tr[data-agent-id="{agent_id}"]')


def test_live_agents_breakers_protection_acl_topics_sync(registry: RegistryProcess, browser_page: Any) -> None:
    page = browser_page
    apply_bus(registry.redis.url, TEST_SECRET)
    publish(registry.redis.url, TEST_SECRET, "tasks.research", {"q": "what is a swarm"}, "architect")
    registry.register("reviewer")
    client = redis.Redis.from_url(registry.redis.url)

    # an agent's token is refused: the login form says so
    log_in(page, registry, registry.agent_token("architect"))
    page.wait_for_selector("#login-error:has-text('refused')", timeout=5000)
    assert page.locator("#main").is_hidden()

    log_in(page, registry)
    page.wait_for_selector("#main", state="visible", timeout=5000)
    row(page, "reviewer").wait_for(timeout=5000)
    page.wait_for_selector("#conn.live", timeout=5000)

    # a registration through the API appears without a reload
    registry.register("web-researcher")
    row(page, "web-researcher").wait_for(timeout=2000)
    assert row(page, "web-researcher").locator(".c-role").text_content() == "worker"
    assert row(page, "web-researcher").locator(".c-status").text_content() == "healthy"
    # deregistration removes it
    import httpx
    httpx.delete(registry.url + "/agents/web-researcher", headers=registry.agent_headers("web-researcher"), timeout=10)
    row(page, "web-researcher").wait_for(state="detached", timeout=5000)

    # a breaker opening shows in the row and in a banner
    open_breaker(client, "research", "reviewer")
    page.wait_for_selector('#agents-table tr[data-agent-id="reviewer"] .c-breaker.breaker-open', timeout=5000)
    page.wait_for_selector('#agents-table tr[data-agent-id="reviewer"] .c-status.status-critical', timeout=5000)
    page.wait_for_selector("#banner-breakers:has-text('reviewer')", timeout=5000)

    # filters
    page.select_option("#f-status", "healthy")
    row(page, "reviewer").wait_for(state="detached", timeout=5000)
    page.select_option("#f-status", "")
    row(page, "reviewer").wait_for(timeout=5000)

    # detail view: breaker fields and topics
    row(page, "reviewer").click()
    page.wait_for_selector("#detail-breaker:has-text('\"state\": \"open\"')", timeout=5000)
    assert "reviews.verdict" in page.locator("#detail-topics").text_content()
    assert "breaker-opened" in page.locator("#detail-transitions").text_content()

    # the ACL matrix equals compiled/research/acl.json
    page.click("#tabs a[data-view=acl]")
    page.wait_for_selector("#acl-matrix span.decision", timeout=5000)
    cells = page.eval_on_selector_all("#acl-matrix span.decision", "els => els.map(e => ({...e.dataset, title: e.title}))")
    compiled = json.loads((REPO / "compiled" / "research" / "acl.json").read_text())
    shown = {(c["role"], c["topic"], c["action"]): (c["allow"] == "true", c["rule"]) for c in cells}
    expected = {(r["role"], r["topic"], a): (r[a]["allow"], r[a]["rule"]) for r in compiled["table"]
                for a in ("publish", "subscribe")}
    assert shown == expected
    assert all(c["title"] == f"{c['action']}: {c['rule']}" for c in cells)  # the deciding rule on hover

    # the topic view shows the log length of the topic published into
    page.click("#tabs a[data-view=topics]")
    page.wait_for_selector('#topics-table tr[data-topic="tasks.research"] .c-length:text-is("1")', timeout=5000)
    assert page.locator('#topics-table tr[data-topic="results.research"] .c-length').text_content() == "0"
    page.locator('#topics-table tr[data-topic="tasks.research"] button').click()
    page.wait_for_selector("#messages-table:has-text('what is a swarm')", timeout=5000)

    # the sync view: the error at file:line:col, the history, the lease holder
    write_reconcile_state(client, "research")
    page.click("#tabs a[data-view=sync]")
    page.wait_for_selector("#sync-issues:has-text('specs/agents/workers.yaml:12:5')", timeout=5000)
    assert "laptop-4f2a" in page.locator('#sync-summary dd[data-key="reconcile lease"]').text_content()
    assert "invalid-spec" in page.locator("#sync-history").text_content()
    assert "1 action(s) planned" in page.locator('#sync-summary dd[data-key="next pass"]').text_content()
    assert page.locator("#sync-pending").text_content() == "create inbox group of summarizer"
    assert page.errors == []  # type: ignore[attr-defined]
    client.close()


def test_protection_mode_banner(registry_factory: Any, browser_page: Any) -> None:
    """Real protection mode: every lease (ttl 1 s, no heartbeats) expires in one sweep."""
    registry = registry_factory(extra_args=["--sweep-interval", "0.2", "--min-protect", "2"])
    ids = ["a1", "a2", "a3"]
    registry.push(make_catalog(ids, ttl_seconds=1))
    page = browser_page
    log_in(page, registry)
    page.wait_for_selector("#conn.live", timeout=5000)
    for agent_id in ids:
        assert registry.register(agent_id).status_code == 201
    row(page, "a3").wait_for(timeout=5000)
    page.wait_for_selector("#banner-protection", timeout=10000)
    assert registry.get("/status").json()["protection"] is True
    # the agents protection kept (a sweep may have caught one lease alone just before the rest
    # expired, and evicted it): each shown, as expiring
    kept = sorted(a["agent_id"] for a in registry.get("/agents").json()["agents"])
    assert len(kept) >= 2, kept
    for agent_id in kept:
        page.wait_for_selector(f'#agents-table tr[data-agent-id="{agent_id}"] .c-status.status-expiring', timeout=5000)


HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'


def test_agent_controlled_strings_are_shown_literally(registry_factory: Any, browser_page: Any) -> None:
    registry = registry_factory()
    registry.push(make_catalog(["mallory"], allow_undeclared=True, capabilities=[HOSTILE]))
    response = registry.register("mallory", agent_name=HOSTILE, capabilities=[HOSTILE],
                                 metadata={"note": HOSTILE, HOSTILE: "key"})
    assert response.status_code in (200, 201), response.text
    page = browser_page
    log_in(page, registry)
    row(page, "mallory").wait_for(timeout=5000)
    assert row(page, "mallory").locator(".c-capabilities").text_content() == HOSTILE
    row(page, "mallory").click()
    page.wait_for_selector("#detail-registration:has-text('onerror')", timeout=5000)
    assert HOSTILE.replace('"', '\\"') in page.locator("#detail-registration").text_content()
    page.fill("#f-text", "onerror")
    row(page, "mallory").wait_for(timeout=5000)
    assert page.locator("img").count() == 0 and page.locator("body script:not([src])").count() == 0
    assert page.evaluate("window.__pwned") is None
