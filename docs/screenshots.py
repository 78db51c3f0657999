"""Regenerate the dashboard screenshots in docs/ (dashboard-agents.png, -topics, -acl, -sync).

    PYTHONPATH=. .venv/bin/python docs/screenshots.py

Brings up a redis-server and a registry of its own (free ports, a temporary directory; never
a Redis on 6379), pushes the example spec's catalog (compiled/research/registry.json), applies
its bus, registers some agents, publishes a few messages, opens one breaker and writes a
reconcile status with a spec error (tests/support/dashboard.py), then photographs each view
in headless Chromium (/usr/bin/chromium through the playwright package).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SECRET = "screenshots-secret"
AGENTS = ["architect", "web-researcher", "paper-researcher", "summarizer", "reviewer"]


def main() -> None:
    import redis
    from playwright.sync_api import sync_playwright

    from swarm.registry.auth import admin_token, agent_token, read_token
    from swarm.registry.catalog_push import push_catalog
    from tests.registry.conftest import research_catalog
    from tests.support.dashboard import apply_bus, launch_chromium, open_breaker, publish, register, write_reconcile_state
    from tests.support.services import ProcessServer, RedisServer, free_port, python_cmd

    with tempfile.TemporaryDirectory(prefix="swarm-screenshots-") as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        port = free_port()
        registry = ProcessServer(
            python_cmd("-m", "swarm", "registry", "serve", "--port", str(port), "--redis-url", server.url,
                       "--swarm", "research", "--log-level", "warning", "--no-probe"),
            port=port, env={"SWARM_REGISTRY_SECRET": SECRET, "SWARM_ADMIN_TOKEN": ""}, cwd=REPO,
            log=Path(tmp) / "registry.log")
        registry.start()
        try:
            push_catalog(registry.url, research_catalog(), "3f2a9c1d5e", admin_token(SECRET, "research"))
            apply_bus(server.url, SECRET)
            for agent_id in AGENTS:
                register(registry.url, agent_token(SECRET, "research", agent_id), agent_id,
                         metadata={"team": "research"})
            for n in range(3):
                publish(server.url, SECRET, "tasks.research", {"question": f"survey of agent swarms, part {n + 1}",
                                                                "deadline": "2026-12-05"}, "architect")
            publish(server.url, SECRET, "results.research", {"answer": "see the attached notes", "sources": 12},
                    "web-researcher")
            client = redis.Redis.from_url(server.url)
            open_breaker(client, "research", "summarizer")
            write_reconcile_state(client, "research")
            client.close()
            with sync_playwright() as p:
                context = launch_chromium(p)
                page = context.new_page()
                page.goto(registry.url + "/ui/")
                page.fill("#token", read_token(SECRET, "research"))
                page.click("#login-form button[type=submit]")
                page.wait_for_selector('#agents-table tr[data-agent-id="summarizer"] .breaker-open', timeout=10000)
                page.locator('#agents-table tr[data-agent-id="summarizer"]').click()
                page.wait_for_selector("#detail-breaker:has-text('open')", timeout=10000)
                page.screenshot(path=str(REPO / "docs" / "dashboard-agents.png"), full_page=True)
                page.click("#tabs a[data-view=topics]")
                page.wait_for_selector('#topics-table tr[data-topic="tasks.research"]', timeout=10000)
                page.locator('#topics-table tr[data-topic="tasks.research"] button').click()
                page.wait_for_selector("#messages-table tbody tr", timeout=10000)
                page.screenshot(path=str(REPO / "docs" / "dashboard-topics.png"), full_page=True)
                page.click("#tabs a[data-view=acl]")
                page.wait_for_selector("#acl-matrix span.decision", timeout=10000)
                page.screenshot(path=str(REPO / "docs" / "dashboard-acl.png"), full_page=True)
                page.click("#tabs a[data-view=sync]")
                page.wait_for_selector("#sync-history tbody tr", timeout=10000)
                page.screenshot(path=str(REPO / "docs" / "dashboard-sync.png"), full_page=True)
                context.close()
        finally:
            registry.stop()
            server.stop()
    print("wrote docs/dashboard-{agents,topics,acl,sync}.png")


if __name__ == "__main__":
    main()
