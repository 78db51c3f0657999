"""The bus's state as Prometheus series, read from Redis at scrape time (``swarm_bus_*``).

The registry app registers one :class:`BusCollector` on its metrics registry and awaits
:meth:`BusCollector.refresh` in its /metrics handler, right before rendering; ``collect()``
(synchronous, called by prometheus_client) only turns the last snapshot into metric
families. So every registry process reports the swarm's bus as Redis holds it (the work
of every router replica and every agent), not only what it saw itself, and series of an
agent or topic removed from the spec disappear with it (a labelled Gauge would keep them).

What one refresh reads, in ONE pipeline (no per-agent round trip): per topic XINFO STREAM
of its log (length, entries ever added = published); per declared agent XINFO GROUPS of
its inbox and of its outbox (lag and pending per consumer group), XINFO STREAM of its own
dead-letter stream (length, entries ever added = dead-lettered) and HMGET of its breaker
hash (state, consecutive failures). ``bus.json`` is re-read only when its head (swarm name
+ spec digest) changes. The cost is bounded: 4 commands per agent plus 1 per topic (and an
XLEN per group whose lag Redis cannot give), at most one refresh per ``min_interval``
seconds however often /metrics is scraped; bench/bench_bus_metrics.py measures it.

A consumer group's ``lag`` is Redis' own (XINFO GROUPS, Redis 7); when Redis cannot say
(deleted entries after the group's last-delivered id) it is the stream's length minus the
group's pending count, which is exact for inboxes and outboxes: their owners delete what
they ack (see :mod:`swarm.bus.bus` and :mod:`swarm.bus.router`), so a stream holds only
pending and undelivered entries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from swarm.bus.breaker import BreakerState
from swarm.desired import BusPlan
from swarm.foreign import REDIS_ERRORS
from swarm.keys import ROUTER_GROUP, SwarmKeys, as_text

log = logging.getLogger("swarm.bus.metrics")

#: bus.json starts {"swarm":<name>,"spec_digest":<digest>,...: its first bytes hold both (as the router reads it).
HEAD_BYTES = 192
BREAKER_STATES = tuple(s.value for s in BreakerState)

#: Every family :class:`BusCollector` yields: name -> (type, labels, help). docs/metrics.md lists them.
FAMILIES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "swarm_bus_up": ("gauge", (), "1 when the bus (bus.json) and its streams could be read from Redis at this scrape, else 0."),
    "swarm_bus_scrape_duration_seconds": ("gauge", (), "Seconds the last read of the bus state from Redis took."),
    "swarm_bus_agents": ("gauge", (), "Agents declared in the installed bus plan."),
    "swarm_bus_published": ("counter", ("topic",), "Entries ever appended to a topic's log (XINFO STREAM entries-added): the messages published."),
    "swarm_bus_topic_length": ("gauge", ("topic",), "Entries in a topic's log now (capped at the topic's max_len)."),
    "swarm_bus_consumer_lag": ("gauge", ("agent", "stream", "group"), "Entries of an agent's inbox or outbox not yet delivered to a consumer group."),
    "swarm_bus_consumer_pending": ("gauge", ("agent", "stream", "group"), "Entries delivered to a consumer group and not acked yet."),
    "swarm_bus_dead_lettered": ("counter", ("agent",), "Inbox entries ever moved to an agent's dead-letter stream (XINFO STREAM entries-added)."),
    "swarm_bus_dead_letters": ("gauge", ("agent",), "Entries in an agent's dead-letter stream now."),
    "swarm_bus_breaker_state": ("gauge", ("agent", "state"), "1 for the state the agent's circuit breaker is in (closed, open, half_open), 0 for the others."),
    "swarm_bus_breaker_failures": ("gauge", ("agent",), "Consecutive failed health checks counted by the agent's breaker."),
}


@dataclass(frozen=True)
class GroupRow:
    agent: str
    stream: str  # "inbox" or "outbox"
    group: str
    lag: int
    pending: int


@dataclass
class BusSnapshot:
    """What one refresh read; ``up`` False when the bus could not be read (nothing else is set then)."""

    up: bool = False
    seconds: float = 0.0
    agents: int = 0
    topics: dict[str, tuple[int, int]] = field(default_factory=dict)  # topic -> (length, entries added)
    groups: list[GroupRow] = field(default_factory=list)
    dead_letters: dict[str, tuple[int, int]] = field(default_factory=dict)  # agent -> (length, entries added)
    breakers: dict[str, tuple[str, int]] = field(default_factory=dict)  # agent -> (state, failures)


def _stream_info(reply: Any) -> tuple[int, int]:
    """(length, entries-added) of an XINFO STREAM reply; (0, 0) for a missing key or another type."""
    if isinstance(reply, Exception) or not isinstance(reply, dict):
        return 0, 0
    length = int(reply.get("length") or 0)
    added = reply.get("entries-added")
    return length, int(added) if added is not None else length


def _groups(agent: str, stream: str, reply: Any) -> list[tuple[GroupRow, bool]]:
    """The rows of an XINFO GROUPS reply, each with whether Redis knew its lag (else 0 for now)."""
    if isinstance(reply, Exception):
        return []
    rows = []
    for g in reply:
        lag = g.get("lag")
        rows.append((GroupRow(agent, stream, as_text(g.get("name")), int(lag or 0), int(g.get("pending") or 0)),
                     lag is not None))
    return rows


async def read_bus(client: Any, plan: BusPlan) -> BusSnapshot:
    """Read the state of ``plan``'s streams and breakers from Redis (raises Redis errors).

    One pipeline of 4 commands per agent and 1 per topic; a second one, of XLEN, only for the
    groups whose lag Redis cannot compute (see the module docstring)."""
    keys = SwarmKeys(plan.swarm)
    topics = sorted(plan.topics)
    agents = sorted(plan.agents)
    pipe = client.pipeline(transaction=False)
    for name in topics:
        pipe.xinfo_stream(plan.topics[name].stream)
    for agent in agents:
        rights = plan.agents[agent]
        pipe.xinfo_groups(rights.inbox)
        pipe.xinfo_groups(rights.outbox)
        pipe.xinfo_stream(rights.dead_letter_stream)
        pipe.hmget(keys.breaker(agent), ["state", "failures"])
    # a missing key or one of another type answers an error in its slot; a lost connection raises
    replies = await pipe.execute(raise_on_error=False)
    snap = BusSnapshot(up=True, agents=len(agents))
    for i, name in enumerate(topics):
        snap.topics[name] = _stream_info(replies[i])
    base = len(topics)
    unknown: list[tuple[int, str]] = []  # (row index, stream key) of the groups without a lag from Redis
    for j, agent in enumerate(agents):
        inbox_groups, outbox_groups, dlq, breaker = replies[base + 4 * j: base + 4 * j + 4]
        rights = plan.agents[agent]
        rows = [(r, known, rights.inbox) for r, known in _groups(agent, "inbox", inbox_groups)]
        rows += [(r, known, rights.outbox) for r, known in _groups(agent, "outbox", outbox_groups)
                 if r.group == ROUTER_GROUP]
        for row, known, key in rows:
            if not known:
                unknown.append((len(snap.groups), key))
            snap.groups.append(row)
        snap.dead_letters[agent] = _stream_info(dlq)
        state, failures = ("closed", 0) if isinstance(breaker, Exception) else (
            as_text(breaker[0]) if breaker[0] is not None else "closed", _int(breaker[1]) or 0)
        snap.breakers[agent] = (state if state in BREAKER_STATES else "closed", failures)
    if unknown:
        pipe = client.pipeline(transaction=False)
        for _, key in unknown:
            pipe.xlen(key)
        lengths = await pipe.execute(raise_on_error=False)
        for (index, _), length in zip(unknown, lengths):
            row = snap.groups[index]
            snap.groups[index] = GroupRow(row.agent, row.stream, row.group,
                                          max(0, (_int(length) or 0) - row.pending), row.pending)
    return snap


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, Exception):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class BusCollector(Collector):
    """``swarm_bus_*`` families of one swarm from the last :meth:`refresh` (see the module docstring)."""

    def __init__(self, redis: Any, swarm: str, *, min_interval: float = 1.0) -> None:
        self.redis = redis
        self.keys = SwarmKeys(swarm)
        self.min_interval = min_interval
        self.snapshot = BusSnapshot()
        self._plan: BusPlan | None = None
        self._head = b""
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    async def _load_plan(self) -> BusPlan | None:
        head = await self.redis.getrange(self.keys.bus, 0, HEAD_BYTES - 1)
        head = head.encode() if isinstance(head, str) else (head or b"")
        if self._plan is not None and head == self._head:
            return self._plan
        raw = await self.redis.get(self.keys.bus)
        if raw is None:
            self._plan, self._head = None, b""
            return None
        plan = BusPlan.model_validate_json(raw)
        if plan.swarm != self.keys.swarm:
            return None
        self._plan, self._head = plan, head
        return plan

    async def refresh(self) -> BusSnapshot:
        """Read the bus again unless the last read is under ``min_interval`` old; never raises for Redis trouble."""
        async with self._lock:
            if time.monotonic() - self._read_at < self.min_interval:
                return self.snapshot
            started = time.perf_counter()
            try:
                plan = await self._load_plan()
                snap = await read_bus(self.redis, plan) if plan is not None else BusSnapshot()
            except REDIS_ERRORS + (ValueError,) as exc:
                log.debug("bus metrics: cannot read the bus of swarm %s: %s", self.keys.swarm, exc)
                snap = BusSnapshot()
            snap.seconds = time.perf_counter() - started
            self.snapshot, self._read_at = snap, time.monotonic()
            return snap

    def describe(self) -> Iterable[Metric]:
        return list(self._families(BusSnapshot()))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self.snapshot))

    def _families(self, snap: BusSnapshot) -> Iterator[Metric]:
        fam: dict[str, Any] = {}
        for name, (kind, labels, text) in FAMILIES.items():
            # a counter family's name goes without _total: prometheus_client appends it to the samples
            cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            fam[name] = cls(name, text, labels=list(labels))
        fam["swarm_bus_up"].add_metric([], 1.0 if snap.up else 0.0)
        fam["swarm_bus_scrape_duration_seconds"].add_metric([], snap.seconds)
        if snap.up:
            fam["swarm_bus_agents"].add_metric([], snap.agents)
        for topic, (length, added) in sorted(snap.topics.items()):
            fam["swarm_bus_published"].add_metric([topic], added)
            fam["swarm_bus_topic_length"].add_metric([topic], length)
        for g in snap.groups:
            fam["swarm_bus_consumer_lag"].add_metric([g.agent, g.stream, g.group], g.lag)
            fam["swarm_bus_consumer_pending"].add_metric([g.agent, g.stream, g.group], g.pending)
        for agent, (length, added) in sorted(snap.dead_letters.items()):
            fam["swarm_bus_dead_lettered"].add_metric([agent], added)
            fam["swarm_bus_dead_letters"].add_metric([agent], length)
        for agent, (state, failures) in sorted(snap.breakers.items()):
            for s in BREAKER_STATES:
                fam["swarm_bus_breaker_state"].add_metric([agent, s], 1.0 if s == state else 0.0)
            fam["swarm_bus_breaker_failures"].add_metric([agent], failures)
        yield from fam.values()
