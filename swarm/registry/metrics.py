"""Prometheus metrics of one registry app, on a per-app CollectorRegistry.

The server creates one :class:`RegistryMetrics` per app (so several apps in one
process, e.g. in tests, never collide on the global registry) and serves it on
/metrics; handlers, the sweeper and the watch hub update it. The agents-by-status
gauge and the bus's series (:mod:`swarm.bus.metrics`, ``swarm_bus_*``) are read
from Redis at scrape time, so every process reports the swarm's state, not only
what it saw itself; the router of the app adds its ``swarm_router_*`` series to
the same registry. docs/metrics.md lists every series.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from swarm.registry.models import AGENT_STATUSES

if TYPE_CHECKING:
    from swarm.bus.metrics import BusCollector

__all__ = ["CONTENT_TYPE_LATEST", "RegistryMetrics"]


class RegistryMetrics:
    """The named metrics; ``render()`` gives the exposition text."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.agents = Gauge("swarm_registry_agents", "Registered agents by status.", ["status"], registry=r)
        self.registrations = Counter(
            "swarm_registry_registrations_total", "Register requests by outcome.", ["result"], registry=r
        )
        self.heartbeats = Counter("swarm_registry_heartbeats_total", "Heartbeats by outcome.", ["result"], registry=r)
        self.evictions = Counter("swarm_registry_evictions_total", "Leases evicted by this process.", registry=r)
        self.deregistrations = Counter(
            "swarm_registry_deregistrations_total", "Deregistrations that removed an agent.", registry=r
        )
        self.protection = Gauge(
            "swarm_registry_protection_mode", "1 while mass-eviction protection holds.", registry=r
        )
        self.watchers = Gauge("swarm_registry_watchers", "Connected SSE watch clients.", registry=r)
        self.sweeps = Counter("swarm_registry_sweeps_total", "Sweeps by outcome.", ["result"], registry=r)
        self.request_latency = Histogram(
            "swarm_registry_request_duration_seconds",
            "Request latency by route.",
            ["route", "method"],
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        for status in AGENT_STATUSES:
            self.agents.labels(status=status).set(0)

    def set_agent_counts(self, counts: dict[str, int]) -> None:
        for status in AGENT_STATUSES:
            self.agents.labels(status=status).set(counts.get(status, 0))

    def add_bus(self, redis: Any, swarm: str) -> "BusCollector":
        """Register the bus's scrape-time series (``swarm_bus_*``) of ``swarm``; the /metrics
        handler awaits the collector's ``refresh()`` before :meth:`render`."""
        from swarm.bus.metrics import BusCollector

        collector = BusCollector(redis, swarm)
        self.registry.register(collector)
        return collector

    def render(self) -> bytes:
        return generate_latest(self.registry)
