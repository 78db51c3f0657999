"""The Redis key layout of a swarm (pure; a contract between registry, bus, router and reconciler).

Every key of a swarm starts with ``swarm:{<name>}:``. The braces are a Redis Cluster
hash tag: all keys of one swarm live in one slot, so every Lua script and MULTI
block may touch any of them (registry lease + event stream, dedup mark + stream
entry + inboxes) and the layout works unchanged on Redis Cluster. Several swarms
share one Redis without seeing each other's keys.

=====================================  ======  ==============================================
key                                    type    holds (writer)
=====================================  ======  ==============================================
swarm:{N}:catalog                      string  JSON catalog pushed by the reconciler
swarm:{N}:agent:<id>                   hash    one registration (fields of the register body)
swarm:{N}:leases                       zset    agent id -> lease expiry (ms, Redis clock)
swarm:{N}:events                       stream  registry watch events (capped, MAXLEN ~)
swarm:{N}:sweeper                      string  lock: one sweeper acts on each expiry
swarm:{N}:protection                   string  "1" while mass-eviction protection holds
swarm:{N}:status                       string  JSON reconcile status
swarm:{N}:applied-spec                 string  JSON files of the last applied spec (restart recovery)
swarm:{N}:history                      stream  one entry per applied revision (reconciler; capped)
swarm:{N}:git-hook                     string  counter: git webhook deliveries (registry; reconciler fetches)
swarm:{N}:pin                          string  JSON rollback pin: commit to enforce until the branch moves
swarm:{N}:lease                        string  reconcile lease: JSON owner + fencing token (PX TTL)
swarm:{N}:fence                        string  counter: the fencing token of the last lease taken
swarm:{N}:standby                      hash    reconcilers standing by: owner -> JSON (since, pid, host)
swarm:{N}:breaker:<id>                 hash    circuit breaker of one agent (prober; agent may read)
swarm:{N}:acl                          string  JSON ACL table (reconciler; agents may read)
swarm:{N}:bus                          string  JSON bus settings (reconciler; agents may read)
swarm:{N}:outbox:<id>                  stream  what agent <id> publishes (only <id> writes; router reads)
swarm:{N}:inbox:<id>                   stream  what agent <id> has not finished (router appends; <id> reads, acks+deletes)
swarm:{N}:receipts:<id>                stream  router's verdict on each outbox entry of <id> (capped)
swarm:{N}:topic:<topic>                stream  the topic's canonical log (router only)
swarm:{N}:dlq:<topic>                  stream  legacy/operator dead letters of a topic
swarm:{N}:dlq:@<id>                    stream  inbox entries of <id> delivered max_deliveries times (<id>)
swarm:{N}:refused                      stream  outbox entries the router refused, with the reason (capped)
swarm:{N}:dedup:<topic>:<sender>:<mid> string  dedup mark -> topic entry id (PX window; router only)
=====================================  ======  ==============================================

The bus is mediated: an agent writes only its outbox and reads only its inbox. A
trusted router (consumer group :data:`ROUTER_GROUP` on every outbox) checks each
entry against the compiled rules and, in one script, dedups it, appends it to the
topic's log and to every subscriber's inbox, writes a receipt and deletes the
outbox entry. The sender of an entry is the owner of the outbox it was read from;
nothing in the entry can claim otherwise. Dedup marks are scoped by sender, so no
agent can make another agent's future message id a "duplicate".

Entry formats (field names; all values UTF-8 text):

* outbox (written by any Redis client of an agent): ``topic``, ``payload`` (JSON),
  optionally ``message_id`` (1-200 non-whitespace characters; default
  ``<agent id>:<outbox entry id>``) and ``content_type`` (``application/json``).
  Any other field, a ``sender`` other than the owner, invalid UTF-8 or JSON, or a
  payload over ``max_payload_bytes`` is refused.
* inbox: ``topic``, ``message_id``, ``sender``, ``payload``, ``content_type``,
  ``topic_entry_id`` (the entry's id in the topic's log). Never trimmed: a length cap
  would let a flooding sender evict entries the owner has not read (Redis 7 drops
  trimmed entries from the pending list too). The owner deletes an entry when it acks
  it (XACK + XDEL in one MULTI), so the inbox holds only unfinished work, and the router
  does not append to an inbox already holding ``inbox_max_len`` entries (reason
  ``inbox_full`` in ``refused``, the subscriber in the receipt's ``undelivered``), nor
  to one that does not exist (``inbox_missing``: the router never creates an inbox).
* topic log: ``message_id``, ``sender``, ``payload``, ``content_type``.
* receipts: ``outbox_id``, ``message_id``, ``status`` (``routed`` | ``duplicate`` |
  ``refused``), ``entry_id`` (topic entry id, the original one for a duplicate),
  ``reason`` (refused only: a code of ``swarm.bus.routing.REASONS``), ``undelivered``
  (routed only, when some inbox was full or missing: the subscribers' ids, comma-separated).
* refused: ``sender``, ``outbox_id``, ``message_id``, ``topic``, ``reason``, ``detail``,
  ``size`` and ``preview`` (escaped, cut); ``payload`` only for a valid entry refused by
  the breaker, a broken key or a missing topic log (it can be replayed). An
  ``inbox_full`` or ``inbox_missing`` record is one subscriber's skipped delivery of a
  routed entry: ``subscriber`` and ``topic_entry_id`` (replay it from the topic's log)
  instead of a payload.

Redis ACL users are named ``swarm.<N>.<agent id>``: ``.`` is outside the charset of
swarm names and agent ids, so no two (swarm, agent) pairs share a user name (with
``-`` as separator ``research``/``x-w`` and ``research-x``/``w`` collided).
Ids and names have no ``:``, ``{``, ``@`` or ``.``, so no key of one swarm or agent
can be spelled inside another's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

#: Consumer group of the router(s) on every outbox.
ROUTER_GROUP = "router"
#: Start of every Redis ACL user swarm creates (``swarm.<swarm>.<agent>``).
REDIS_USER_PREFIX = "swarm."


@dataclass(frozen=True)
class SwarmKeys:
    """Key names for one swarm; ``SwarmKeys("research").topic("tasks.a")``."""

    swarm: str

    @property
    def prefix(self) -> str:
        return f"swarm:{{{self.swarm}}}:"

    @property
    def catalog(self) -> str:
        return self.prefix + "catalog"

    def agent(self, agent_id: str) -> str:
        return f"{self.prefix}agent:{agent_id}"

    @property
    def agent_pattern(self) -> str:
        return self.prefix + "agent:*"

    @property
    def leases(self) -> str:
        return self.prefix + "leases"

    @property
    def events(self) -> str:
        return self.prefix + "events"

    @property
    def sweeper(self) -> str:
        return self.prefix + "sweeper"

    @property
    def protection(self) -> str:
        return self.prefix + "protection"

    @property
    def status(self) -> str:
        return self.prefix + "status"

    @property
    def applied_spec(self) -> str:
        return self.prefix + "applied-spec"

    @property
    def history(self) -> str:
        return self.prefix + "history"

    @property
    def git_hook(self) -> str:
        return self.prefix + "git-hook"

    @property
    def pin(self) -> str:
        return self.prefix + "pin"

    def breaker(self, agent_id: str) -> str:
        return f"{self.prefix}breaker:{agent_id}"

    @property
    def breaker_pattern(self) -> str:
        return self.prefix + "breaker:*"

    @property
    def acl(self) -> str:
        return self.prefix + "acl"

    @property
    def bus(self) -> str:
        return self.prefix + "bus"

    def topic(self, topic: str) -> str:
        return f"{self.prefix}topic:{topic}"

    @property
    def topic_pattern(self) -> str:
        return self.prefix + "topic:*"

    def dead_letter(self, topic: str) -> str:
        return f"{self.prefix}dlq:{topic}"

    def agent_dead_letter(self, agent_id: str) -> str:
        return f"{self.prefix}dlq:@{agent_id}"

    def outbox(self, agent_id: str) -> str:
        return f"{self.prefix}outbox:{agent_id}"

    @property
    def outbox_pattern(self) -> str:
        return self.prefix + "outbox:*"

    def inbox(self, agent_id: str) -> str:
        return f"{self.prefix}inbox:{agent_id}"

    @property
    def inbox_pattern(self) -> str:
        return self.prefix + "inbox:*"

    def receipts(self, agent_id: str) -> str:
        return f"{self.prefix}receipts:{agent_id}"

    @property
    def refused(self) -> str:
        return self.prefix + "refused"

    @property
    def lease(self) -> str:
        return self.prefix + "lease"

    @property
    def fence(self) -> str:
        return self.prefix + "fence"

    @property
    def standby(self) -> str:
        return self.prefix + "standby"

    def dedup(self, topic: str, sender: str, message_id: str) -> str:
        return f"{self.prefix}dedup:{topic}:{sender}:{message_id}"

    def redis_user(self, agent_id: str) -> str:
        return f"{REDIS_USER_PREFIX}{self.swarm}.{agent_id}"

    @property
    def redis_user_prefix(self) -> str:
        """Every Redis user of this swarm starts with this (and no other swarm's does)."""
        return f"{REDIS_USER_PREFIX}{self.swarm}."


def event_data(data: str) -> dict[str, Any]:
    """The JSON object of an event's ``data`` field (``swarm:{N}:events``); {} when it is none."""
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def as_text(value: object) -> str:
    """A Redis reply value as text: bytes with a client made without
    ``decode_responses``, str with one made with it."""
    return value.decode() if isinstance(value, bytes) else str(value)
