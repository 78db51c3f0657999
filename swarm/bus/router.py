"""The trusted router of a swarm's mediated bus: outboxes in, topic logs and inboxes out.

Run by ``swarm bus route`` (its own process; several replicas may share the work) and
inside the registry's lifespan next to the health prober. Agents are not trusted: each
writes only its own outbox ``swarm:{N}:outbox:<id>`` and reads only its own inbox.
The router reads every declared agent's outbox with XREADGROUP in the consumer group
:data:`~swarm.keys.ROUTER_GROUP` (one consumer name per process), checks each entry
with :func:`swarm.bus.routing.check_entry` (sender = outbox owner, fields, UTF-8, size,
JSON, topic declared and permitted) and then, per sender and batch, runs ONE script
(``lua/route.lua``) that checks the sender's breaker, dedups (the mark
``dedup:<topic>:<sender>:<mid>``, SET NX PX on Redis' clock), appends to the topic's
log and to every subscriber's inbox, writes the receipt and XACKs + XDELs the outbox
entry. Why it is built this way:

* One script per batch makes each entry's effects all-or-nothing: a router killed
  before the script leaves the entry pending in the outbox group (another replica, or
  this one restarted, reclaims it with XAUTOCLAIM once idle ``reclaim_idle_ms``; past
  :data:`UPKEEP_SLICE` agents the sweep goes a slice of outboxes a round, so a big fleet
  waits ``agents / UPKEEP_SLICE`` rounds of ``reclaim_idle_ms / 2`` at most); killed
  after, it is routed and acked. The script's XACK is the fence: an entry another
  replica already routed comes back as ``gone`` and is not appended again, so no id is
  delivered twice even when two replicas race on a reclaimed entry.
* Validation happens in Python on raw bytes (the clients have no ``decode_responses``),
  so a non-UTF-8, huge or malformed entry is refused (``refused`` stream with reason,
  size and a short escaped preview; a ``refused`` receipt) and never crashes a decoder
  or stops the entries behind it.
* The blocking reader has its own connection whose socket timeout is BLOCK + a margin
  (redis-py 8's default 5 s would trip on a long BLOCK; none at all would hang on a
  vanished server).
* ``bus.json`` is re-read when its head (swarm name + spec digest) changes, like the
  agents do, so a spec change reaches the router within ``refresh_seconds``.
* The router never creates an outbox, an inbox or a topic log: those are the bus
  apply's (the reconciler's), which writes the new settings first and then deletes the
  streams of an agent or topic it removed. Until the router reloads the settings it
  routes with the old plan, which still names them (a batch it read and checked before
  the prune, its group check over the old agents), and any create-if-missing (XGROUP
  CREATE MKSTREAM, an XADD) would bring a pruned agent's streams back for good. So its
  group check has no MKSTREAM: a missing outbox is *absent*, not read, and checked
  again at every refresh tick (an agent's own XADD re-creates a declared agent's outbox
  deleted by hand, and its group then starts at id 0, so nothing written is lost); the
  route script skips a subscriber whose inbox does not exist (``inbox_missing`` in
  ``refused``, named in the receipt's ``undelivered``, like ``inbox_full``) and refuses
  an entry whose topic log does not exist (``topic_missing``, payload kept).
* Inboxes are never trimmed. A length cap (XADD MAXLEN) on them let a sender that floods
  valid messages evict what its victims had not read yet (Redis 7 even drops trimmed
  entries from the pending list, so delivered-but-unacked ones vanished too). Instead
  the agent deletes each entry from its own inbox when it acks it (XACK + XDEL, see
  :mod:`swarm.bus.bus`), so an inbox holds only its owner's unfinished work, and the
  script refuses to grow an inbox past ``inbox_max_len``: it checks XLEN in the same run
  as the append, skips that one inbox (the topic log and every other subscriber still
  get the entry), records the skip in ``refused`` (reason ``inbox_full``, field
  ``subscriber``, the ``topic_entry_id`` to replay from) and lists the subscriber in the
  sender's receipt (field ``undelivered``). Nothing already in an inbox is ever
  removed by the router; the cost of a slow or stuck subscriber falls on itself. Each
  skip is counted per subscriber (``swarm_router_inbox_full_total``), housekeeping
  measures the inboxes (``swarm_router_inbox_length``: each one a sweep of
  :data:`UPKEEP_SLICE` a round, and at once those a routed sender may have grown), and an inbox past half of
  ``inbox_max_len``, or one that refused a delivery, logs an ALARM once per crossing.
* Outboxes are trimmed to about ``outbox_max_len`` (Redis has no per-user quota: a
  flooding agent loses its own oldest unrouted entries, counted per agent), and an
  outbox whose backlog passes ``backlog_alarm`` logs a warning (the alarm) once per
  crossing.
* Counters per agent and outcome/reason in :attr:`Router.stats`, and as Prometheus
  series when given a ``metrics`` registry (the registry app passes its own, so its
  ``/metrics`` shows them; ``swarm bus route --metrics-port`` serves them).
* Transient Redis errors are retried with :mod:`swarm.backoff`; nothing an entry
  contains can end :meth:`Router.run`, only its stop event can.

>>> # router = Router(redis_url="redis://127.0.0.1:6379/0", swarm="research")
>>> # task = asyncio.create_task(router.run(stop)); ...; stop.set(); await task
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import socket
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence, cast

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter as PromCounter, Gauge
from redis.exceptions import NoScriptError, ResponseError

from swarm.backoff import Backoff
from swarm.bus.dedup import window_ms
from swarm.bus.routing import CONTENT_TYPE, Accepted, check_entry
from swarm.bus.scripts import load_script
from swarm.desired import BusPlan
from swarm.errors import SwarmError, TransientError
from swarm.foreign import REDIS_ERRORS, is_transient_redis, redis_error
from swarm.keys import ROUTER_GROUP, SwarmKeys, as_text
from swarm.redis_conn import async_client

log = logging.getLogger("swarm.bus.router")

#: bus.json starts {"swarm":<name>,"spec_digest":<digest>,...: its first 192 bytes hold both.
HEAD_BYTES = 192
#: Payload bytes per script call: bounds how long one run holds Redis.
CHUNK_BYTES = 4 * 1024 * 1024
#: A router consumer idle this long (ms) with nothing pending belongs to a dead replica.
DEAD_CONSUMER_MS = 60_000
#: Agents per pipeline of the per-outbox upkeep (groups, reclaim, trims, lengths).
PIPELINE_AGENTS = 1000

#: Upkeep that only watches (reclaiming a dead replica's entries, forgetting dead consumers,
#: measuring inboxes) covers at most this many agents a round, round-robin, plus the agents
#: with activity since the last round: a big idle fleet costs a bounded share of a core (at
#: 10,000 agents every outbox every 2.5 s took ~45 % of one, and held up the registry's
#: requests in the same process). The trims (outboxes, dead letters) still cover every agent
#: every round: they bound what a hostile agent can make Redis hold.
UPKEEP_SLICE = 1000
#: Fault points a test may ask for (``SWARM_FAULT_ROUTER``, read by the CLI): the process
#: SIGKILLs itself there, once, in the first batch of at least two script calls.
FAULT_POINTS = ("before-script", "mid-batch", "after-script")


@dataclass
class RouterStats:
    """What the router did, in total, per refusal reason and per agent (also logged)."""

    routed: int = 0
    duplicates: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    gone: int = 0  # entries another replica routed first
    reclaimed: int = 0
    trimmed: int = 0  # unrouted entries dropped by the outbox cap
    trimmed_while_pending: int = 0
    errors: int = 0
    batches: int = 0
    per_agent: dict[str, Counter[str]] = field(default_factory=dict)
    backlog: dict[str, int] = field(default_factory=dict)
    #: deliveries skipped because the subscriber's inbox held ``inbox_max_len`` entries, per subscriber
    inbox_full: Counter[str] = field(default_factory=Counter)
    #: entries in each agent's inbox at the last housekeeping (its unfinished work)
    inbox_length: dict[str, int] = field(default_factory=dict)
    #: deliveries skipped because the subscriber's inbox did not exist (pruned while the plan was stale)
    inbox_missing: Counter[str] = field(default_factory=Counter)

    def count(self, agent: str, what: str, n: int = 1) -> None:
        self.per_agent.setdefault(agent, Counter())[what] += n

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())


class _Metrics:
    """Prometheus series of the router (per agent: its outbox is the unit an operator watches)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.entries = PromCounter("swarm_router_entries_total", "Outbox entries handled, by sender and outcome.",
                                   ["agent", "outcome"], registry=registry)
        self.refused = PromCounter("swarm_router_refused_total", "Outbox entries refused, by sender and reason.",
                                   ["agent", "reason"], registry=registry)
        self.backlog = Gauge("swarm_router_outbox_backlog", "Unrouted entries in an agent's outbox.", ["agent"],
                             registry=registry)
        self.inbox_full = PromCounter("swarm_router_inbox_full_total",
                                      "Deliveries skipped because the subscriber's inbox was full (inbox_max_len).",
                                      ["agent"], registry=registry)
        self.inbox_length = Gauge("swarm_router_inbox_length", "Unfinished (unacked) entries in an agent's inbox.",
                                  ["agent"], registry=registry)
        self.reclaimed = PromCounter("swarm_router_reclaimed_total",
                                     "Outbox entries taken over from a router replica that left them pending.",
                                     registry=registry)
        self.errors = PromCounter("swarm_router_errors_total",
                                  "Router errors: failed routing rounds (retried with backoff) and chunks a script refused.",
                                  registry=registry)


@dataclass(frozen=True)
class _Topic:
    stream: bytes
    window_ms: bytes
    max_len: bytes
    inboxes: tuple[bytes, ...]


@dataclass(frozen=True)
class _Sender:
    outbox: bytes
    breaker: bytes
    receipts: bytes


try:  # hiredis packs a route call's long argument list ~7x faster than redis-py's asyncio packer
    from redis.connection import HiredisRespSerializer
    from redis.utils import HIREDIS_AVAILABLE
except ImportError:  # pragma: no cover - other redis-py versions
    HIREDIS_AVAILABLE = False


class _HiredisPackedConnection(aioredis.Connection):
    """A connection that packs commands with hiredis (the parser is hiredis' already)."""

    # through Any: redis-py 8.2 left the serializer's __init__ unannotated (8.1 had it typed)
    _packer = cast(Any, HiredisRespSerializer)() if HIREDIS_AVAILABLE else None

    def pack_command(self, *args: Any) -> list[bytes]:
        if self._packer is None:  # pragma: no cover
            return super().pack_command(*args)
        return self._packer.pack(*args)  # type: ignore[no-any-return]


def _head(raw: bytes | str | None) -> bytes:
    if raw is None:
        return b""
    return (raw.encode() if isinstance(raw, str) else raw)[:HEAD_BYTES]


class Router:
    """Routes every declared agent's outbox of one swarm; see the module docstring.

    ``block_ms`` bounds both a read's wait and how long a stop takes; ``max_batch``
    entries of one sender go in one script run; entries pending longer than
    ``reclaim_idle_ms`` are taken over; ``backlog_alarm`` (default half of
    ``outbox_max_len``) is the backlog that logs the alarm; ``dedup_window_seconds``
    overrides every topic's window (tests, tooling); ``fault`` is a test hook
    (:data:`FAULT_POINTS`).
    """

    def __init__(
        self,
        *,
        redis_url: str,
        swarm: str,
        consumer: str | None = None,
        block_ms: int = 1000,
        read_count: int = 500,
        max_batch: int = 100,
        reclaim_idle_ms: int = 5000,
        refresh_seconds: float = 2.0,
        housekeeping_seconds: float = 5.0,
        backlog_alarm: int | None = None,
        dedup_window_seconds: float | None = None,
        metrics: CollectorRegistry | None = None,
        fault: str | None = None,
    ) -> None:
        if fault is not None and fault not in FAULT_POINTS:
            raise ValueError(f"unknown router fault point {fault!r} (one of {FAULT_POINTS})")
        self.redis_url = redis_url
        self.swarm = swarm
        self.keys = SwarmKeys(swarm)
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.block_ms = max(1, block_ms)
        self.read_count = max(1, read_count)
        self.max_batch = max(1, min(max_batch, 1000))  # the script unpacks a batch's ids in one call
        self.reclaim_idle_ms = max(1, reclaim_idle_ms)
        self.refresh_seconds = refresh_seconds
        self.housekeeping_seconds = housekeeping_seconds
        self._backlog_alarm = backlog_alarm
        #: a consumer idle this long (ms) with nothing pending is a dead replica's: forgotten
        self.dead_consumer_ms = max(DEAD_CONSUMER_MS, 10 * self.reclaim_idle_ms)
        self._window_override = dedup_window_seconds  # tests and tooling: sub-second windows
        self._fault = fault
        self._metrics = _Metrics(metrics) if metrics is not None else None
        self.plan: BusPlan | None = None
        self.stats = RouterStats()
        self._redis: aioredis.Redis | None = None
        self._reader: aioredis.Redis | None = None
        self._sha = ""
        self._version = b""
        self._senders: dict[str, _Sender] = {}
        self._by_outbox: dict[bytes, str] = {}
        self._topics: dict[str, _Topic] = {}
        self._refused_key = self.keys.refused.encode()
        self._next_refresh = 0.0
        self._next_reclaim = 0.0
        self._reclaim_cursors: dict[str, bytes] = {}  # agent -> XAUTOCLAIM cursor of its next page
        self._reclaim_more = False  # a cursor stopped short of the end of a pending list
        self._upkeep_at: dict[str, int] = {}  # upkeep name -> where its next slice starts
        self._active: set[str] = set()  # senders whose outbox gave entries since the last housekeeping
        self._next_housekeeping = 0.0
        self._alarmed: set[str] = set()
        self._drop_script: Any = None  # drop_consumer.lua, registered on first use
        self._trim_script: Any = None  # trim.lua, registered on first use
        self._inbox_alarmed: set[str] = set()  # agents whose inbox passed the inbox alarm
        self._broken: set[str] = set()  # agents whose outbox key is not a stream
        self._absent: set[str] = set()  # agents whose outbox does not exist (never created here)
        self._ready_logged = False
        self._prefetch: asyncio.Task[list[tuple[str, tuple[list[bytes], list[Any], int]]]] | None = None

    # -- lifecycle -------------------------------------------------------------------

    def _client(self, socket_timeout: float) -> aioredis.Redis:
        # No decode_responses: entries are bytes until check_entry has looked at them.
        extra: dict[str, Any] = {"connection_class": _HiredisPackedConnection} if self.redis_url.startswith("redis://") else {}
        return async_client(self.redis_url, swarm=self.keys.swarm, socket_timeout=socket_timeout, socket_connect_timeout=2.0, **extra)

    async def connect(self) -> "Router":
        """Open the clients and load the plan (TransientError while the bus is not installed)."""
        if self._redis is None:
            self._redis = self._client(5.0)
            self._reader = self._client(self.block_ms / 1000 + 10.0)
            self._sha = hashlib.sha1(load_script("route").encode()).hexdigest()
        if self.plan is None:
            await self._refresh(force=True)
        return self

    async def close(self) -> None:
        if self._prefetch is not None:  # its entries stay pending: the next router reclaims them
            self._prefetch.cancel()
            await asyncio.gather(self._prefetch, return_exceptions=True)
            self._prefetch = None
        for client in (self._reader, self._redis):
            if client is not None:
                await client.aclose()
        self._redis = self._reader = None
        self._drop_script = self._trim_script = None  # bound to the closed client

    async def __aenter__(self) -> "Router":
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise SwarmError("Router is not connected: call `await router.connect()` first")
        return self._redis

    # -- plan --------------------------------------------------------------------------

    async def _refresh(self, *, force: bool = False) -> None:
        """Load bus.json when its head differs from the loaded one; keep the last good plan on errors."""
        loop = asyncio.get_running_loop()
        self._next_refresh = loop.time() + self.refresh_seconds
        redis = self.redis
        if not force:
            head = await redis.getrange(self.keys.bus, 0, HEAD_BYTES - 1)
            if _head(head) == self._version:
                return
        raw = await redis.get(self.keys.bus)
        if raw is None:
            if self.plan is None:
                raise TransientError(f"the bus of swarm {self.swarm!r} is not installed in Redis (no {self.keys.bus}): "
                                     f"run `swarm bus apply`", delay=1.0)
            return
        if _head(raw) == self._version and self.plan is not None:
            return
        try:
            # in a thread: at 10,000 agents bus.json is 3 MB (~0.1 s to validate), and this loop
            # may share its process with the registry's HTTP handlers
            plan = await asyncio.to_thread(BusPlan.model_validate_json, raw)
        except ValueError as exc:
            if self.plan is None:
                raise TransientError(f"bus settings in Redis ({self.keys.bus}) are not valid: {exc}", delay=2.0) from exc
            log.warning("bus settings of swarm %s in Redis are not valid (%s); routing with the last good ones",
                        self.swarm, exc)
            return
        if plan.swarm != self.swarm:
            raise TransientError(f"{self.keys.bus} holds the plan of swarm {plan.swarm!r}", delay=2.0)
        known = None if self.plan is None else set(self._senders)
        self._install(plan)
        self._version = _head(raw)
        # the group on every outbox at the first load; after that on the new agents' only: the
        # others have theirs (or are absent or broken, and checked again at every tick), and a
        # group deleted by hand fails the next read with NOGROUP, which checks them all again
        await self.ensure_groups(None if known is None else [a for a in self._senders if a not in known])
        log.info("router %s: bus of swarm %s loaded (spec %s, %d agents, %d topics)",
                 self.consumer, self.swarm, plan.spec_digest, len(plan.agents), len(plan.topics))

    def _install(self, plan: BusPlan) -> None:
        self.plan = plan
        self._senders = {
            agent: _Sender(r.outbox.encode(), self.keys.breaker(agent).encode(), r.receipts.encode())
            for agent, r in plan.agents.items()
        }
        self._by_outbox = {s.outbox: agent for agent, s in self._senders.items()}
        self._absent &= set(self._senders)
        self._broken &= set(self._senders)
        self._topics = {
            name: _Topic(
                tp.stream.encode(),
                str(window_ms(self._window_override or tp.dedup_window_seconds)).encode(),
                str(tp.max_len).encode(),
                tuple(plan.agents[a].inbox.encode() for a in tp.subscribers if a in plan.agents),
            )
            for name, tp in plan.topics.items()
        }

    async def _per_agent(self, agents: Sequence[str], add: Callable[[Any, str], object], *,
                         raise_on_error: bool = False) -> list[Any]:
        """Pipelined commands of every agent (``add(pipe, agent)`` queues them), their replies in
        order: :data:`PIPELINE_AGENTS` agents a round trip, and the loop free between round trips.
        At 10,000 agents one pipeline's replies take ~0.1 s to parse, and this loop may share its
        process with the registry's HTTP handlers, which would wait that long."""
        replies: list[Any] = []
        for start in range(0, len(agents), PIPELINE_AGENTS):
            if start:
                await asyncio.sleep(0)
            async with self.redis.pipeline(transaction=False) as pipe:
                for agent in agents[start:start + PIPELINE_AGENTS]:
                    add(pipe, agent)
                replies.extend(await pipe.execute(raise_on_error=raise_on_error))
        return replies

    async def _trimmed(self, keys: Sequence[bytes], cap: int, *, lengths: bool) -> list[Any]:
        """XTRIM MAXLEN ~``cap`` of every stream of ``keys`` (and, with ``lengths``, its XLEN):
        per key the number trimmed and the length (0 when not asked), in order, two items a key;
        a ResponseError in both for a key that is not a stream. One call of ``trim.lua`` a
        :data:`PIPELINE_AGENTS` keys, the loop free in between."""
        if self._trim_script is None:
            self._trim_script = self.redis.register_script(load_script("trim"))
        out: list[Any] = []
        for start in range(0, len(keys), PIPELINE_AGENTS):
            if start:
                await asyncio.sleep(0)
            reply = await self._trim_script(keys=list(keys[start:start + PIPELINE_AGENTS]),
                                            args=[cap, "1" if lengths else "0"])
            for trimmed, length in reply:
                if int(trimmed) < 0:
                    error = ResponseError(as_text(length))
                    out += [error, error]
                else:
                    out += [int(trimmed), int(length)]
        return out

    async def ensure_groups(self, agents: Sequence[str] | None = None) -> None:
        """Create the router group (at id 0) on every declared outbox (or those of ``agents``) that lacks it.

        Never creates an outbox (no MKSTREAM): the plan may be older than the prune that
        just deleted one (see the module docstring). A missing outbox is *absent*: not
        read until it exists, checked again at every refresh tick. An outbox key that is
        not a stream (an operator's mistake: agents can only XADD) would fail every read
        of every outbox: it is set aside with an error, and checked again at each
        housekeeping until it is fixed."""
        agents = list(self._senders) if agents is None else [a for a in agents if a in self._senders]
        replies = await self._per_agent(
            agents, lambda pipe, agent: pipe.xgroup_create(self._senders[agent].outbox, ROUTER_GROUP, id="0"))
        failed = [(a, r) for a, r in zip(agents, replies) if isinstance(r, Exception) and "BUSYGROUP" not in str(r)]
        for _, reply in failed:
            if is_transient_redis(reply):
                raise reply
        types: list[Any] = []
        if failed:  # missing (XGROUP CREATE needs the key) or of another type
            async with self.redis.pipeline(transaction=False) as pipe:
                for agent, _ in failed:
                    pipe.type(self._senders[agent].outbox)
                types = await pipe.execute()
        missing = {a for (a, _), t in zip(failed, types) if as_text(t) == "none"}
        broken = {a: r for a, r in failed if a not in missing}
        for agent in agents:
            if agent in missing:
                if agent not in self._absent:
                    log.info("router %s: the outbox of %s does not exist (its agent was just removed, or it was "
                             "deleted): not routed until it exists again", self.consumer, agent)
                self._absent.add(agent)
                self._broken.discard(agent)
            elif agent in broken:
                if agent not in self._broken:
                    log.error("router %s: the outbox of %s cannot be routed (%s); skipping it until fixed",
                              self.consumer, agent, broken[agent])
                self._broken.add(agent)
                self._absent.discard(agent)
            else:
                if agent in self._broken or agent in self._absent:
                    log.info("router %s: the outbox of %s is routable again", self.consumer, agent)
                self._broken.discard(agent)
                self._absent.discard(agent)

    def _upkeep_slice(self, name: str, agents: list[str], hot: Iterable[str] = ()) -> list[str]:
        """The agents one round of upkeep ``name`` covers, in the order of ``agents``: all of them
        up to :data:`UPKEEP_SLICE`; else the next slice of that many (round-robin: every agent
        once in ``len(agents) / UPKEEP_SLICE`` rounds) and those of ``hot`` among them."""
        if len(agents) <= UPKEEP_SLICE:
            return agents
        start = self._upkeep_at.get(name, 0) % len(agents)
        self._upkeep_at[name] = start + UPKEEP_SLICE
        picked = set(agents[start:start + UPKEEP_SLICE]).union(agents[:max(0, start + UPKEEP_SLICE - len(agents))])
        picked.update(hot)
        return [a for a in agents if a in picked]

    @property
    def _routable(self) -> list[str]:
        return [a for a in self._senders if a not in self._broken and a not in self._absent]

    @property
    def backlog_alarm(self) -> int:
        if self._backlog_alarm is not None:
            return self._backlog_alarm
        return max(1, self.plan.settings.outbox_max_len // 2) if self.plan else 5000

    # -- routing -----------------------------------------------------------------------

    async def route_batch(self) -> int:
        """Reclaim, read and route one batch (blocking up to ``block_ms``); returns entries handled."""
        if self._redis is None or self.plan is None:
            await self.connect()
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_refresh:
            await self._refresh()
            if self._absent:  # an agent's XADD may have created its outbox since
                await self.ensure_groups(sorted(self._absent))
        if loop.time() >= self._next_housekeeping:
            self._next_housekeeping = loop.time() + self.housekeeping_seconds
            await self.housekeeping()
        if not self._ready_logged:
            self._ready_logged = True
            log.info("router %s ready: swarm %s, %d outboxes", self.consumer, self.swarm, len(self._senders))
        try:
            return await self._read_and_route(loop.time())
        except ResponseError as exc:
            if "NOGROUP" not in str(exc) and "WRONGTYPE" not in str(exc):
                raise
            # an outbox deleted (and maybe re-created by an XADD) or replaced by hand. Redis >= 7.2
            # and Valkey fail a blocked read the moment its stream is deleted, so this runs right
            # after the reconciler deletes the outbox of an agent it removed: the bus settings are
            # reloaded first, or the groups of the old ones would re-create that outbox
            log.warning("router %s: %s; checking the router groups", self.consumer, exc)
            await self._refresh()
            await self.ensure_groups()
            return 0

    async def _read_and_route(self, now: float) -> int:
        handled = 0
        due = now >= self._next_reclaim
        if due or self._reclaim_more:
            # a due sweep goes on while a backlog is paged in between: the pages never put it off
            if due:
                self._next_reclaim = now + self.reclaim_idle_ms / 2000
            claimed = await self.reclaim(sweep=due)
            if claimed:
                handled += await self.route(claimed)
        if self._prefetch is not None:
            task, self._prefetch = self._prefetch, None
            calls = await task
        else:
            calls = await self._read_prepared()
        if calls:
            # Under load, read and check the next batch while Redis runs this one's scripts:
            # the Python work overlaps Redis' instead of waiting for it. The scripts still
            # run one batch after the other, so entries keep their order.
            self._prefetch = asyncio.create_task(self._read_prepared(), name="router-prefetch")
            handled += await self._send(calls)
        return handled

    async def _read_prepared(self) -> list[tuple[str, tuple[list[bytes], list[Any], int]]]:
        """XREADGROUP new entries of every routable outbox (blocking up to ``block_ms``); their script calls."""
        streams = {self._senders[a].outbox: b">" for a in self._routable}
        if not streams:
            await asyncio.sleep(self.block_ms / 1000)
            return []
        assert self._reader is not None
        reply: Any = await self._reader.xreadgroup(ROUTER_GROUP, self.consumer, streams,  # type: ignore[arg-type]
                                                   count=self.read_count, block=self.block_ms)
        entries: list[tuple[str, str, dict[bytes, bytes]]] = []
        for stream, items in reply or []:
            agent = self._by_outbox.get(stream if isinstance(stream, bytes) else str(stream).encode())
            if agent is None:
                continue
            entries.extend((agent, as_text(eid), fields or {}) for eid, fields in items)
        return self._prepare(entries)

    async def _finish_prefetch(self) -> None:
        """Route what a prefetch already read (a clean stop leaves nothing pending behind)."""
        task, self._prefetch = self._prefetch, None
        if task is not None:
            try:
                await self._send(await task)
            except (Exception, asyncio.CancelledError):  # reclaimed by the next router instead
                log.debug("router %s: prefetched batch left pending", self.consumer, exc_info=True)

    async def reclaim(self, *, sweep: bool = True) -> list[tuple[str, str, dict[bytes, bytes]]]:
        """Claim outbox entries pending longer than ``reclaim_idle_ms`` (a dead replica's).

        ``sweep``: the next slice of the outboxes (:meth:`_upkeep_slice`) and those whose cursor
        is unfinished; else only the unfinished ones (a large backlog taken over page by page).

        One XAUTOCLAIM page of ``read_count`` per outbox and call, continuing from the
        cursor the previous call stopped at (and from the start once Redis reports
        0-0), so a large backlog of a dead replica is taken over a page at a time
        instead of all at once; :meth:`route_batch` calls again at once while a cursor
        is unfinished. Entries trimmed away while pending (Redis 7 reports their ids)
        are counted and recorded."""
        out: list[tuple[str, str, dict[bytes, bytes]]] = []
        more = False
        routable = self._routable
        cursors = self._reclaim_cursors
        unfinished = {a for a, c in cursors.items() if c != b"0-0"}
        agents = (self._upkeep_slice("reclaim", routable, unfinished) if sweep
                  else [a for a in routable if a in unfinished])
        replies = await self._per_agent(agents, lambda pipe, agent: pipe.xautoclaim(
            self._senders[agent].outbox, ROUTER_GROUP, self.consumer, min_idle_time=self.reclaim_idle_ms,
            start_id=self._reclaim_cursors.get(agent, b"0-0"), count=self.read_count), raise_on_error=True)
        for agent, reply in zip(agents, replies):
            cursor = reply[0]
            done = as_text(cursor) in ("0-0", "0")  # bytes b"0-0" from this client: compare as text
            self._reclaim_cursors[agent] = b"0-0" if done else cursor
            more = more or not done
            out.extend((agent, as_text(eid), fields or {}) for eid, fields in reply[1])
            deleted = reply[2] if len(reply) > 2 else []
            if deleted:
                await self._record_trimmed(agent, [as_text(d) for d in deleted])
        self._reclaim_more = more
        if out:
            self.stats.reclaimed += len(out)
            if self._metrics is not None:
                self._metrics.reclaimed.inc(len(out))
            log.warning("router %s reclaimed %d outbox entries idle over %d ms", self.consumer, len(out),
                        self.reclaim_idle_ms)
        return out

    async def _record_trimmed(self, agent: str, ids: list[str]) -> None:
        """Pending entries trimmed from an outbox (Redis 7 drops them from the pending list on
        claim): their content is gone; each leaves a refused record so the loss is visible."""
        self.stats.trimmed_while_pending += len(ids)
        self.stats.count(agent, "trimmed", len(ids))
        log.warning("%d pending entries of the outbox of %s were trimmed before being routed", len(ids), agent)
        assert self.plan is not None
        async with self.redis.pipeline(transaction=False) as pipe:
            for oid in ids:
                pipe.xadd(self._refused_key, {"sender": agent, "outbox_id": oid, "reason": "trimmed",
                                              "detail": "trimmed from the outbox (outbox_max_len) before it was routed"},
                          maxlen=self.plan.settings.refused_max_len, approximate=True)
            await pipe.execute()

    def _calls(self, agent: str, entries: Sequence[tuple[str, dict[bytes, bytes]]]) -> list[tuple[list[bytes], list[Any], int]]:
        """The script calls (keys, args, item count) routing ``entries`` of ``agent`` (see route.lua)."""
        assert self.plan is not None
        s = self._senders[agent]
        settings = self.plan.settings
        head_keys = [s.outbox, s.breaker, s.receipts, self._refused_key]
        head_args: list[Any] = [agent, ROUTER_GROUP, settings.receipts_max_len, settings.refused_max_len, CONTENT_TYPE,
                                settings.inbox_max_len]
        calls: list[tuple[list[bytes], list[Any], int]] = []
        table: dict[str, int] = {}
        topic_keys: list[bytes] = []
        topic_args: list[Any] = []
        marks: list[bytes] = []
        items: list[Any] = []
        count = size = 0

        def flush() -> None:
            calls.append((head_keys + topic_keys + marks, head_args + [len(table)] + topic_args + items, count))

        for oid, fields in entries:
            verdict = check_entry(self.plan, agent, oid, fields)
            if isinstance(verdict, Accepted):
                index = table.get(verdict.topic)
                if index is None:
                    t = self._topics[verdict.topic]
                    index = table[verdict.topic] = len(table) + 1
                    topic_keys += [t.stream, *t.inboxes]
                    topic_args += [verdict.topic, t.window_ms, t.max_len, len(t.inboxes)]
                marks.append(self.keys.dedup(verdict.topic, agent, verdict.message_id).encode())
                items += [b"r", oid, verdict.message_id, index, verdict.payload]
                size += len(verdict.payload)
            else:
                items += [b"x", oid, verdict.message_id, verdict.topic, verdict.reason, verdict.detail,
                          verdict.size, verdict.preview]
            count += 1
            if count >= self.max_batch or size >= CHUNK_BYTES:
                flush()
                table, topic_keys, topic_args, marks, items, count, size = {}, [], [], [], [], 0, 0
        if count:
            flush()
        return calls

    async def route(self, entries: Sequence[tuple[str, str, dict[bytes, bytes]]]) -> int:
        """Route (agent, outbox id, fields) entries: one script call per sender and chunk, pipelined."""
        return await self._send(self._prepare(entries))

    def _prepare(self, entries: Sequence[tuple[str, str, dict[bytes, bytes]]]) -> list[tuple[str, tuple[list[bytes], list[Any], int]]]:
        """Check ``entries`` and group them into script calls, per sender and chunk."""
        by_agent: dict[str, list[tuple[str, dict[bytes, bytes]]]] = {}
        for agent, oid, fields in entries:
            if agent in self._senders:  # a plan refresh may have dropped it since the read
                by_agent.setdefault(agent, []).append((oid, fields))
        self._active.update(by_agent)
        return [(agent, call) for agent, items in by_agent.items() for call in self._calls(agent, items)]

    async def _send(self, calls: list[tuple[str, tuple[list[bytes], list[Any], int]]]) -> int:
        if not calls:
            return 0
        self.stats.batches += 1
        if self._fault is not None and len(calls) >= 2:
            return await self._route_with_fault(calls)
        replies = await self._run([call for _, call in calls])
        handled = 0
        for (agent, call), reply in zip(calls, replies):
            if isinstance(reply, Exception):
                if is_transient_redis(reply):
                    raise redis_error(reply, f"routing the outbox of {agent!r}") from reply
                reply = self._chunk_failed(agent, call, reply)
            handled += self._account(agent, reply)
        return handled

    async def _run(self, calls: Sequence[tuple[list[bytes], list[Any], int]]) -> list[Any]:
        """Run the route script once per call, pipelined; replies (or errors) in order.

        EVALSHA by hand rather than redis-py's Script: its pipelines ask SCRIPT EXISTS
        on every execute, one more round trip per batch. A Redis that forgot the script
        (restart, SCRIPT FLUSH) answers NOSCRIPT without running anything: load and
        re-run those calls."""
        async def send(todo: Sequence[tuple[list[bytes], list[Any], int]]) -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for keys, args, _ in todo:
                    pipe.execute_command("EVALSHA", self._sha, len(keys), *keys, *args)
                return list(await pipe.execute(raise_on_error=False))

        replies = await send(calls)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:
            await self.redis.script_load(load_script("route"))
            for i, reply in zip(missing, await send([calls[i] for i in missing])):
                replies[i] = reply
        return replies

    def _chunk_failed(self, agent: str, call: tuple[list[bytes], list[Any], int], error: Exception) -> list[Any]:
        """A chunk the script refused as a whole (a wrong-typed key): log it; its entries stay
        pending and are retried on reclaim, so an operator's fix lets them through."""
        self._error()
        self.stats.count(agent, "errors")
        log.error("router %s: routing %d entries of %s failed: %s (they stay pending and are retried)",
                  self.consumer, call[2], agent, error)
        return []

    async def _route_with_fault(self, calls: list[tuple[str, tuple[list[bytes], list[Any], int]]]) -> int:
        """Test hook: one script call at a time, SIGKILLing this process at the fault point."""
        handled = 0
        for i, (agent, (keys, args, _)) in enumerate(calls):
            if self._fault == "before-script" or (self._fault == "mid-batch" and i == 1):
                os.kill(os.getpid(), signal.SIGKILL)
            (reply,) = await self._run([(keys, args, 0)])
            if isinstance(reply, Exception):
                raise reply
            handled += self._account(agent, reply)
        if self._fault == "after-script":
            os.kill(os.getpid(), signal.SIGKILL)
        return handled

    def _account(self, agent: str, reply: list[Any]) -> int:
        st = self.stats
        outcomes: Counter[str] = Counter()
        for i in range(0, len(reply), 2):
            status, value = as_text(reply[i]), as_text(reply[i + 1])
            if status == "undelivered":  # follows its routed pair: ``value`` is the full inbox's owner
                self._inbox_full(agent, value)
                continue
            if status == "missing":  # follows its routed pair: ``value``'s inbox does not exist
                self.stats.inbox_missing[value] += 1
                self.stats.count(value, "inbox_missing")
                continue
            if status == "routed":
                st.routed += 1
            elif status == "duplicate":
                st.duplicates += 1
            elif status == "refused":
                st.refused[value] += 1
                if self._metrics is not None:
                    self._metrics.refused.labels(agent, value).inc()
                log.info("refused an outbox entry of %s: %s", agent, value)
            else:
                st.gone += 1
            outcomes[status] += 1
        for status, n in outcomes.items():
            st.count(agent, status, n)
            if self._metrics is not None:
                self._metrics.entries.labels(agent, status).inc(n)
        return sum(outcomes.values())

    def _error(self) -> None:
        self.stats.errors += 1
        if self._metrics is not None:
            self._metrics.errors.inc()

    def _inbox_full(self, sender: str, subscriber: str) -> None:
        self.stats.inbox_full[subscriber] += 1
        self.stats.count(subscriber, "inbox_full")
        if self._metrics is not None:
            self._metrics.inbox_full.labels(subscriber).inc()
        if subscriber not in self._inbox_alarmed:
            self._inbox_alarmed.add(subscriber)
            cap = self.plan.settings.inbox_max_len if self.plan else 0
            log.warning("ALARM: inbox of %s is full (%d unfinished entries): deliveries to it are refused "
                        "(first: an entry of %s); it must ack what it has", subscriber, cap, sender)

    # -- housekeeping ----------------------------------------------------------------

    @property
    def inbox_alarm(self) -> int:
        """Inbox length that logs the ALARM: half of ``inbox_max_len`` (deliveries stop at it)."""
        return max(1, self.plan.settings.inbox_max_len // 2) if self.plan else 50000

    async def _measure_inboxes(self, active: Iterable[str] = ()) -> None:
        """XLEN of the inboxes: the gauge, and the ALARM once per crossing of :attr:`inbox_alarm`.

        A round measures a slice of them (:meth:`_upkeep_slice`), the inboxes in alarm, and those
        of the subscribers of every topic an ``active`` sender may publish to (the only inboxes
        that can have grown since the last round)."""
        assert self.plan is not None
        plan = self.plan
        hot = set(self._inbox_alarmed)
        for sender in active:
            rights = plan.agents.get(sender)
            for name in rights.publish if rights is not None else ():
                topic = plan.topics.get(name)
                if topic is not None:
                    hot.update(topic.subscribers)
        agents = self._upkeep_slice("inboxes", list(plan.agents), hot)
        replies = await self._per_agent(agents, lambda pipe, agent: pipe.xlen(plan.agents[agent].inbox))
        alarm, cap = self.inbox_alarm, self.plan.settings.inbox_max_len
        for agent, reply in zip(agents, replies):
            if isinstance(reply, Exception):
                continue  # not a stream: the route script refuses its deliveries as route_failed
            length = int(reply)
            self.stats.inbox_length[agent] = length
            if self._metrics is not None:
                self._metrics.inbox_length.labels(agent).set(length)
            if length > alarm and agent not in self._inbox_alarmed:
                self._inbox_alarmed.add(agent)
                log.warning("ALARM: inbox of %s holds %d unfinished entries (alarm at %d; deliveries to it stop "
                            "at inbox_max_len %d)", agent, length, alarm, cap)
            elif length <= alarm and agent in self._inbox_alarmed:
                self._inbox_alarmed.discard(agent)
                log.info("inbox of %s is back to %d unfinished entries", agent, length)

    async def housekeeping(self) -> None:
        """Trim every outbox to ~outbox_max_len, then measure the backlogs and inboxes (the alarms)."""
        if self.plan is None or not self._senders:
            return
        if self._broken:
            await self.ensure_groups()
        cap = self.plan.settings.outbox_max_len
        agents = self._routable

        replies = await self._trimmed([self._senders[agent].outbox for agent in agents], cap, lengths=True)
        failed = [r for r in replies if isinstance(r, Exception)]
        if failed:
            if any(is_transient_redis(r) for r in failed):
                raise failed[0]
            await self.ensure_groups()  # a key replaced by hand: set aside until fixed
        active, self._active = self._active, set()
        await self._drop_dead_consumers(self._upkeep_slice("consumers", agents))
        await self._trim_dead_letters(agents)
        await self._measure_inboxes(active)
        alarm = self.backlog_alarm
        for i, agent in enumerate(agents):
            if isinstance(replies[2 * i], Exception) or isinstance(replies[2 * i + 1], Exception):
                continue
            trimmed, backlog = int(replies[2 * i]), int(replies[2 * i + 1])
            self.stats.backlog[agent] = backlog
            if self._metrics is not None:
                self._metrics.backlog.labels(agent).set(backlog)
                if trimmed:
                    self._metrics.entries.labels(agent, "trimmed").inc(trimmed)
            if trimmed:
                self.stats.trimmed += trimmed
                self.stats.count(agent, "trimmed", trimmed)
                log.warning("outbox of %s was over ~%d entries: its %d oldest unrouted entries were dropped",
                            agent, cap, trimmed)
            if backlog > alarm and agent not in self._alarmed:
                self._alarmed.add(agent)
                log.warning("ALARM: outbox of %s holds %d unrouted entries (alarm at %d)", agent, backlog, alarm)
            elif backlog <= alarm and agent in self._alarmed:
                self._alarmed.discard(agent)
                log.info("outbox of %s is back to %d unrouted entries", agent, backlog)

    async def _trim_dead_letters(self, agents: Sequence[str]) -> None:
        """Cap every agent's own dead-letter stream (``dlq:@<id>``) at ~refused_max_len entries.

        An agent may XADD there (its own dead letters), and Redis has no per-user quota:
        without this an agent could grow it without bound. The cap costs only that agent
        its oldest dead letters."""
        assert self.plan is not None
        plan = self.plan
        cap = plan.settings.refused_max_len
        replies = await self._trimmed([plan.agents[a].dead_letter_stream.encode() for a in agents if a in plan.agents],
                                      cap, lengths=False)
        for reply in replies:
            if isinstance(reply, Exception) and is_transient_redis(reply):
                raise reply
            # a key of another type, put there by hand: left as it is (the agent's loss only)

    async def _drop_dead_consumers(self, agents: Sequence[str]) -> None:
        """Forget router consumers (of dead replicas) idle for long with nothing pending: every
        restart adds a consumer name, and the group would list them forever otherwise."""
        idle_limit = self.dead_consumer_ms
        infos = await self._per_agent(
            agents, lambda pipe, agent: pipe.xinfo_consumers(self._senders[agent].outbox, ROUTER_GROUP))
        for agent, consumers in zip(agents, infos):
            if isinstance(consumers, Exception):
                continue  # NOGROUP: the next read re-creates the group
            for c in consumers:
                name = as_text(c["name"])
                if name != self.consumer and int(c["pending"]) == 0 and int(c["idle"]) > idle_limit:
                    await self._drop_consumer(self._senders[agent].outbox, name)

    async def _drop_consumer(self, outbox: bytes, name: str) -> None:
        if self._drop_script is None:  # registered once: EVALSHA after the first call, not the source each time
            self._drop_script = self.redis.register_script(load_script("drop_consumer"))
        await self._drop_script(keys=[outbox], args=[ROUTER_GROUP, name])

    async def _leave(self) -> None:
        """On a clean stop: remove this process's consumer from every outbox group it has nothing pending in."""
        for agent in self._routable:
            try:
                await self._drop_consumer(self._senders[agent].outbox, self.consumer)
            except REDIS_ERRORS:
                return  # Redis gone: the next router's housekeeping forgets it

    # -- the loop --------------------------------------------------------------------

    async def run(self, stop_event: asyncio.Event) -> None:
        """Route until ``stop_event`` is set; every error is logged and retried with backoff."""
        backoff = Backoff(base=0.1, cap=2.0)
        try:
            while not stop_event.is_set():
                try:
                    await self.route_batch()
                    backoff.reset()
                    continue
                except TransientError as exc:
                    (log.warning if backoff.failures == 0 else log.debug)("router %s: %s", self.consumer, exc)
                except REDIS_ERRORS as exc:
                    err = redis_error(exc, "routing")
                    level = logging.WARNING if isinstance(err, TransientError) else logging.ERROR
                    log.log(level if backoff.failures == 0 else logging.DEBUG, "router %s: %s", self.consumer, err)
                except SwarmError as exc:
                    log.error("router %s: %s", self.consumer, exc)
                except Exception:  # a router that dies silently stops the whole swarm's bus
                    log.exception("router %s: unexpected error; continuing", self.consumer)
                self._error()
                if backoff.failures == 0:
                    log.info("router %s: retrying with backoff (repeats of this error are logged at debug level)",
                             self.consumer)
                try:
                    await asyncio.wait_for(stop_event.wait(), timeout=backoff.next_delay())
                except asyncio.TimeoutError:
                    pass
        finally:
            if self._redis is not None:
                await self._finish_prefetch()
                await self._leave()
            await self.close()
            log.info("router %s stopped: %d routed, %d duplicates, %d refused", self.consumer,
                     self.stats.routed, self.stats.duplicates, self.stats.refused_total)
