"""The registry's /metrics after real activity on a real registry (its router) and redis-server:
publishes routed, a duplicate, a refused entry, a dead letter, an open breaker, consumer lag."""

from __future__ import annotations

import redis

from swarm.keys import SwarmKeys
from tests.registry.conftest import TEST_SECRET, RegistryFactory
from tests.support.dashboard import apply_bus, open_breaker, publish, swarm_cli
from tests.support.metrics import Samples, scrape, scrape_until

KEYS = SwarmKeys("research")


def test_bus_and_router_series_follow_real_activity(registry_factory: RegistryFactory) -> None:
    registry = registry_factory(extra_args=["--sweep-interval", "3600", "--no-probe"])
    registry.push()
    url = registry.url + "/metrics"
    before = scrape(url)
    assert before.get_value("swarm_bus_up") == 0  # no bus.json yet: nothing else of the bus
    assert not [n for n in before.names() if n.startswith("swarm_bus_consumer")]

    apply_bus(registry.redis.url, TEST_SECRET)
    publish(registry.redis.url, TEST_SECRET, "tasks.research", {"q": 1}, "architect")
    for _ in range(2):  # the second is a duplicate of the first (same message id)
        done = swarm_cli("bus", "publish", "tasks.summarize", '{"q": 2}', "--as", "architect", "--id", "m-dup",
                         "--spec", "specs", "--redis-url", registry.redis.url, "--timeout", "10", secret=TEST_SECRET)
        assert done.returncode == 0, done.stdout + done.stderr
    client = redis.Redis.from_url(registry.redis.url)
    try:
        # what a hostile or buggy agent may write to its own outbox: a topic the spec does not declare
        client.xadd(KEYS.outbox("architect"), {"topic": "no.such.topic", "payload": "{}", "message_id": "m-bad"})
        # what an agent does with an entry it gave up on: its own dead-letter stream
        client.xadd(KEYS.agent_dead_letter("web-researcher"), {"original_entry_id": "1-0", "reason": "test"})
        open_breaker(client, "research", "summarizer", failures=4)

        def routed(s: Samples) -> bool:
            return s.value("swarm_router_refused_total", agent="architect", reason="undeclared_topic") >= 1

        s = scrape_until(url, routed)
        assert s.value("swarm_router_entries_total", agent="architect", outcome="routed") == 2
        assert s.value("swarm_router_entries_total", agent="architect", outcome="duplicate") == 1
        assert s.value("swarm_router_entries_total", agent="architect", outcome="refused") == 1
        assert s.value("swarm_bus_up") == 1 and s.value("swarm_bus_agents") == 6
        assert s.value("swarm_bus_published_total", topic="tasks.research") == 1
        assert s.value("swarm_bus_published_total", topic="tasks.summarize") == 1  # the duplicate was not appended
        assert s.value("swarm_bus_topic_length", topic="tasks.research") == 1
        inbox = {"agent": "web-researcher", "stream": "inbox", "group": "web-researcher"}
        assert s.value("swarm_bus_consumer_lag", **inbox) == 1 and s.get_value("swarm_bus_consumer_pending", **inbox) == 0
        assert s.value("swarm_bus_consumer_lag", agent="summarizer", stream="inbox", group="summarizer") == 1
        assert s.get_value("swarm_bus_consumer_lag", agent="architect", stream="outbox", group="router") == 0
        assert s.value("swarm_bus_dead_lettered_total", agent="web-researcher") == 1
        assert s.value("swarm_bus_dead_letters", agent="web-researcher") == 1
        assert s.get_value("swarm_bus_dead_letters", agent="architect") == 0
        assert s.value("swarm_bus_breaker_state", agent="summarizer", state="open") == 1
        assert s.get_value("swarm_bus_breaker_state", agent="summarizer", state="closed") == 0
        assert s.value("swarm_bus_breaker_state", agent="architect", state="closed") == 1
        assert s.value("swarm_bus_breaker_failures", agent="summarizer") == 4

        # web-researcher takes its entry (delivered, not acked): lag becomes pending
        client.xreadgroup("web-researcher", "c1", {KEYS.inbox("web-researcher"): ">"}, count=10)
        s = scrape_until(url, lambda s: s.value("swarm_bus_consumer_pending", **inbox) == 1)
        assert s.get_value("swarm_bus_consumer_lag", **inbox) == 0
        client.delete(KEYS.breaker("summarizer"))  # `swarm bus breaker --reset` closes it; no hash reads as closed
        s = scrape_until(url, lambda s: s.value("swarm_bus_breaker_state", agent="summarizer", state="closed") == 1)
        assert s.get_value("swarm_bus_breaker_state", agent="summarizer", state="open") == 0
    finally:
        client.close()
