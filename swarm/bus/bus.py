"""EventBus: one agent's side of the mediated bus (its outbox, its inbox, its receipts).

Generated agent servers, the ``swarm bus`` CLI and tests use it. The agent is not
trusted, so it touches only its own keys (see :mod:`swarm.keys`): it XADDs to
``outbox:<id>``, reads ``inbox:<id>`` with the consumer group ``<id>``, reads the
router's verdicts on ``receipts:<id>``, its breaker hash and the swarm's ``bus``/``acl``
documents, and writes its own dead letters to ``dlq:@<id>``. Every command is a plain
Redis command (no scripts), so any language's Redis client can be an agent. The
trusted router (:mod:`swarm.bus.router`) is the authority: it checks each outbox
entry again, dedups it and delivers it to the topic's log and to every
subscriber's inbox. Why the agent side is built this way:

* ``publish`` fails fast with the same distinct errors the router would give, from
  the documents cached in process: :class:`~swarm.errors.UndeclaredTopicError`
  (topic not declared in the swarm), :class:`~swarm.errors.AclDeniedError` (the topic
  is not in this agent's effective rights ``BusPlan.agents[id].publish``, i.e. the
  topics it declares AND its role permits; the message says which of the two is
  missing and names the rule), :class:`~swarm.errors.PayloadTooLargeError`,
  :class:`~swarm.errors.InvalidRequestError` (not JSON, not UTF-8, a bad message
  id) and :class:`~swarm.errors.BreakerOpenError` (from a cached read of its own
  breaker hash, at most every ``breaker_refresh_seconds``). Then it sends ONE
  plain XADD to the outbox: the hot path is one round trip, like a raw XADD.
* **What publish returns.** Without ``wait`` it returns as soon as Redis holds the
  entry: status ``accepted``, ``entry_id`` the outbox entry id. The entry is then
  durable and routed at least once; a duplicate (same sender and message id inside
  the topic's window) is *accepted* too, and the router reports it in the receipt
  and delivers nothing: a subscriber still gets one copy per (sender, message id)
  per window. With ``wait=True`` it waits up to ``timeout`` for the router's receipt
  (``receipts:<id>``, matched by outbox id, read from the stream's last id taken in
  the same round trip as the XADD) and returns status ``routed`` or ``duplicate``
  with the topic entry id (the original one for a duplicate), raises the matching
  BusError for a refusal, and :class:`~swarm.errors.RouterUnavailableError` when no
  receipt arrives in time (the entry stays in the outbox until a router runs).
  Without a message id the router names the message ``<agent id>:<outbox id>``.
* ``subscribe`` reads the inbox with XREADGROUP BLOCK on its own connection whose
  socket timeout is BLOCK + 10 s (redis-py 8 defaults to 5 s, which a blocking read
  would trip). The router delivers only the topics the agent subscribes to, so the
  inbox is not filtered again. Entries not acked within the visibility timeout are
  reclaimed with XAUTOCLAIM, one page of ``read_count`` entries per call (the cursor
  kept between calls): claiming restarts an entry's idle clock, and entries claimed
  far ahead of the handler would time out again and be claimed by another consumer,
  inflating delivery counts. Once delivered ``max_deliveries`` times an entry moves
  to ``dlq:@<id>`` and is acked in the same MULTI, never dropped.
* **Ack deletes.** ``ack`` (and the dead-letter move) XACKs and XDELs the entry in one
  MULTI: the router never trims an inbox (a length cap let a flooding sender evict
  what its victims had not read yet), so the agent removes what it has finished and
  its inbox holds only unfinished work. The router stops delivering to an inbox that
  holds ``inbox_max_len`` entries (the sender's receipt lists it in ``undelivered``,
  :attr:`PublishResult.undelivered`), so an agent that never acks only starves itself. Entries trimmed
  while pending (Redis 7 reports them from XAUTOCLAIM) are counted in
  :attr:`EventBus.stats` and recorded (id only: the content is gone) there too.
* Replies are read as bytes and decoded here, so an entry with bytes that are not
  UTF-8 (or a payload that is not JSON, or missing fields) can never crash the reader
  or loop: it is dead-lettered with the reason at its first delivery.
* Redis errors are mapped by :func:`swarm.foreign.redis_error`; the subscribe loop
  retries the transient ones with :class:`swarm.backoff.Backoff`, and the client
  reconnects on the next call, so a Redis restart needs no restart of the agent.
* Settings and ACL table loaded from Redis are re-read when ``swarm bus apply`` or
  the reconciler replaced them, so a running agent follows a spec change: at most
  every ``refresh_seconds`` a publish or subscribe first reads the head of
  ``bus.json`` (GETRANGE, ~200 bytes: swarm name and spec digest, which determines
  both documents) and fetches the two documents only when it differs. The router
  and the Redis users enforce new rights at once in any case.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, AsyncIterator, Iterable, Literal, Mapping, Sequence

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from swarm.acl import AclTable, Action, Decision
from swarm.backoff import Backoff
from swarm.bus.routing import CONTENT_TYPE, MAX_MESSAGE_ID, REASONS, valid_message_id
from swarm.bus.routing import refusal_error as route_refusal
from swarm.desired import AclDocument, AgentRights, BusPlan, TopicPlan
from swarm.errors import (
    AclDeniedError,
    BreakerOpenError,
    BusError,
    InvalidRequestError,
    NotDeclaredError,
    PayloadTooLargeError,
    RedisRefusedError,
    RouterUnavailableError,
    TransientError,
    UndeclaredTopicError,
)
from swarm.foreign import REDIS_ERRORS, raise_if_cancelled, redis_error, redis_retry
from swarm.keys import SwarmKeys
from swarm.redis_conn import async_client

log = logging.getLogger("swarm.bus")

#: bus.json starts {"swarm":<name>,"spec_digest":<digest>,...: its first 192 bytes hold
#: both (at most ~165 bytes). Same spec digest, same documents.
_HEAD_BYTES = 192
#: Fields of the breaker hash the publish check needs.
_BREAKER_FIELDS = ("state", "opened_at_ms", "cooldown_ms")
#: Fields every inbox entry has (keys.py "Entry formats").
_INBOX_FIELDS = ("topic", "message_id", "sender", "payload")

PublishStatus = Literal["accepted", "routed", "duplicate"]
#: Compact strict JSON, made once: ``json.dumps`` with options builds an encoder per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _head(raw: str | bytes) -> bytes:
    return (raw.encode() if isinstance(raw, str) else raw)[:_HEAD_BYTES]


def _text(value: object) -> str:
    """A reply value as text; bytes that are not UTF-8 are shown escaped, never raised on."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return str(value)


def _printable(text: str, limit: int = 80) -> str:
    """``text`` cut and with control characters escaped, for error messages and logs."""
    cut = text[:limit] + ("..." if len(text) > limit else "")
    return cut.encode("unicode_escape").decode("ascii") if not cut.isprintable() else cut


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What became of a publish.

    ``accepted``: the entry is in the outbox (``entry_id`` = outbox id), the router
    has not answered (``publish(wait=False)``). ``routed`` / ``duplicate``: the
    router's receipt; ``entry_id`` is the entry's id in the topic's log (for a
    duplicate, the original's). ``undelivered``: subscribers whose inbox was full
    (``inbox_max_len`` unfinished entries), so the router did not deliver this entry to
    them (the topic log and the other subscribers have it; ``refused`` records each
    skip with reason ``inbox_full``)."""

    entry_id: str
    message_id: str
    status: PublishStatus
    outbox_id: str
    undelivered: tuple[str, ...] = ()

    @property
    def duplicate(self) -> bool:
        return self.status == "duplicate"


@dataclass
class Message:
    """One inbox entry; call :meth:`ack` once handled, or it is delivered again.

    ``entry_id`` is the inbox entry id (what ack names), ``topic_entry_id`` the id of
    the same message in the topic's log (what the publisher's receipt names)."""

    topic: str
    entry_id: str
    message_id: str
    sender: str
    payload: Any
    content_type: str = CONTENT_TYPE
    deliveries: int = 1
    topic_entry_id: str = ""
    _bus: "EventBus | None" = field(default=None, repr=False, compare=False)

    async def ack(self) -> None:
        if self._bus is None:
            raise BusError("message is not bound to a bus")
        await self._bus.ack(self.entry_id)


@dataclass
class BusStats:
    """Counters of what the subscribe loop saw (also logged)."""

    delivered: int = 0
    redelivered: int = 0
    dead_lettered: int = 0
    unreadable: int = 0
    trimmed_while_pending: int = 0
    reconnects: int = 0


def parse_inbox_entry(fields: Mapping[Any, Any]) -> tuple[dict[str, str], Any] | str:
    """An inbox entry's fields as text and its decoded payload, or why it cannot be handed over."""
    text: dict[str, str] = {}
    for key, value in fields.items():
        try:
            name = key.decode("utf-8") if isinstance(key, bytes) else str(key)
            text[name] = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        except UnicodeDecodeError:
            return f"field {_printable(_text(key))!r} is not valid UTF-8"
    missing = [f for f in _INBOX_FIELDS if f not in text]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    try:
        payload = json.loads(text["payload"])
    except ValueError as exc:
        return f"payload is not JSON ({exc})"
    return text, payload


def refusal_error(agent_id: str, topic: str, receipt: Mapping[str, str]) -> BusError:
    """The BusError of a ``refused`` receipt: the class is chosen from the router's reason code
    by :func:`swarm.bus.routing.refusal_error` (one mapping for every runtime)."""
    reason = receipt.get("reason", "") or "unknown"
    meaning = REASONS.get(reason, "no explanation known for this reason")
    text = (f"the router refused {agent_id!r}'s message {_printable(receipt.get('message_id', ''))!r} to {topic!r} "
            f"(outbox entry {receipt.get('outbox_id', '')}): {reason}: {meaning}")
    if reason.startswith("breaker_"):
        text += f" (`swarm bus breaker {agent_id}` shows it)"
    return route_refusal(reason, text)


class EventBus:
    """The bus as seen by one agent (``agent_id``) of one swarm.

    Without ``plan``/``acl`` the bus settings and ACL table are loaded from Redis on
    :meth:`connect` (written there by ``swarm bus apply``) and re-read when they
    change in Redis (checked at most every ``refresh_seconds``; 0 turns it off).
    The agent's role and rights are those of ``plan.agents[agent_id]``; ``role``, if
    given, is only compared with it (a mismatch is logged: the plan is what the
    router enforces). ``visibility_timeout`` and ``max_deliveries`` override the
    plan (tests, tooling). ``redis`` (instead of ``redis_url``) should be a client
    made without ``decode_responses``: replies are decoded here, defensively.
    """

    def __init__(
        self,
        *,
        redis_url: str | None = None,
        swarm: str,
        agent_id: str,
        role: str | None = None,
        plan: BusPlan | None = None,
        acl: AclTable | AclDocument | None = None,
        redis: aioredis.Redis | None = None,
        consumer_name: str | None = None,
        block_ms: int = 2000,
        read_count: int = 32,
        visibility_timeout: float | None = None,
        max_deliveries: int | None = None,
        refresh_seconds: float = 2.0,
        breaker_refresh_seconds: float = 1.0,
    ) -> None:
        if redis_url is None and redis is None:
            raise InvalidRequestError("EventBus needs redis_url or a redis client")
        self.redis_url = redis_url
        self.swarm = swarm
        self.agent_id = agent_id
        self.role = role
        self.keys = SwarmKeys(swarm)
        self.plan = plan
        self._table = acl.to_table() if isinstance(acl, AclDocument) else acl
        self._redis = redis
        self._owns_redis = redis is None
        self._receipt_reader: aioredis.Redis | None = None
        self.consumer_name = consumer_name or f"{agent_id}@{socket.gethostname()}:{os.getpid()}"
        self.block_ms = block_ms
        self.read_count = read_count
        self._visibility_override = visibility_timeout
        self._max_deliveries_override = max_deliveries
        self._decisions: dict[tuple[Action, str], Decision] = {}
        self._publishable: dict[str, bytes] = {}  # topic -> its name encoded, once checked
        self._outbox = self.keys.outbox(agent_id).encode()
        self._inbox = self.keys.inbox(agent_id)
        self._receipts = self.keys.receipts(agent_id)
        self._dlq = self.keys.agent_dead_letter(agent_id)
        self._breaker_key = self.keys.breaker(agent_id)
        self._max_payload = 0
        self.stats = BusStats()
        self.refresh_seconds = refresh_seconds
        self.breaker_refresh_seconds = breaker_refresh_seconds
        self._refreshes = plan is None and acl is None and refresh_seconds > 0
        self._version = b""  # head of the bus.json last loaded (see _refresh)
        self._next_refresh = float("inf")  # monotonic time of the next bus.json check; inf: never
        self._next_breaker = 0.0  # monotonic time of the next breaker read
        self._next_check = 0.0  # the earlier of the two
        self._breaker: tuple[str, int, int] | None = None  # (state, opened_at_ms, cooldown_ms) unless closed
        self._reclaim_cursor = "0-0"  # XAUTOCLAIM cursor of the next page
        self._reclaim_more = False  # the last reclaim stopped short of the end of the pending list

    # -- lifecycle -------------------------------------------------------------------

    def _client(self, *, blocking: bool) -> aioredis.Redis:
        assert self.redis_url is not None
        return async_client(
            self.redis_url, swarm=self.swarm,
            decode_responses=False,  # decoded here: a non-UTF-8 entry must not crash the reader
            socket_connect_timeout=2.0,
            # A blocking XREADGROUP must not trip the socket timeout (redis-py 8: 5 s), yet a
            # silently vanished server must not hang the reader forever: BLOCK plus a margin.
            socket_timeout=self.block_ms / 1000 + 10.0 if blocking else 5.0,
            retry=redis_retry(3, base=0.05, cap=0.5),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )

    async def connect(self) -> "EventBus":
        """Open the connection, load bus settings + ACL table unless given, read the breaker."""
        if self._redis is None:
            self._redis = self._client(blocking=False)
        try:
            await self._load()
            await self._checks(time.monotonic(), plan=False)
            return self
        except BaseException:
            await self.close()  # `async with` never reaches __aexit__ when connect fails
            raise

    async def _load(self) -> None:
        assert self._redis is not None
        if self.plan is None or self._table is None:
            try:
                bus_raw, acl_raw = await self._redis.mget([self.keys.bus, self.keys.acl])
            except REDIS_ERRORS as exc:
                raise redis_error(exc, "loading bus settings") from exc
            if bus_raw is None or acl_raw is None:
                raise TransientError(
                    f"the bus of swarm {self.swarm!r} is not installed in Redis (no {self.keys.bus} / "
                    f"{self.keys.acl}): run `swarm bus apply compiled/{self.swarm}`",
                    delay=2.0,
                )
            try:
                self.plan = self.plan or BusPlan.model_validate_json(bus_raw)
                if self._table is None:
                    self._table = AclDocument.model_validate_json(acl_raw).to_table()
                if self._refreshes:
                    self._version = _head(bus_raw)
                    self._next_refresh = time.monotonic() + self.refresh_seconds
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                raise BusError(
                    f"bus settings or ACL table in Redis ({self.keys.bus}, {self.keys.acl}) are not valid: {exc}; "
                    f"run `swarm bus apply compiled/{self.swarm}` again"
                ) from exc
        if self.plan.swarm != self.swarm:
            raise InvalidRequestError(f"bus plan is for swarm {self.plan.swarm!r}, not {self.swarm!r}")
        rights = self.plan.agents.get(self.agent_id)
        if rights is None:
            raise NotDeclaredError(f"agent {self.agent_id!r} is not declared in swarm {self.swarm!r}")
        self._adopt(rights)
        self._max_payload = self.plan.settings.max_payload_bytes

    def _adopt(self, rights: AgentRights) -> None:
        if self.role is not None and self.role != rights.role:
            log.warning("agent %s was started with role %r but the bus plan gives it %r; the plan's applies",
                        self.agent_id, self.role, rights.role)
        self.role = rights.role

    async def _checks(self, now: float, *, plan: bool = True, breaker: bool = True) -> None:
        """Read the breaker and the head of bus.json, those that are due, in one round trip.

        A failure here never fails the caller: the publish or subscribe that follows
        reports an unreachable Redis itself, and an uninstalled or invalid bus keeps
        the last good revision (as the reconciler keeps the last good spec)."""
        breaker_due = breaker and now >= self._next_breaker
        plan_due = plan and self._refreshes and now >= self._next_refresh
        if breaker_due:
            self._next_breaker = now + self.breaker_refresh_seconds
        if plan_due:
            self._next_refresh = now + self.refresh_seconds
        self._next_check = min(self._next_breaker, self._next_refresh)
        if not (breaker_due or plan_due):
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                if breaker_due:
                    pipe.hmget(self._breaker_key, list(_BREAKER_FIELDS))
                if plan_due:
                    pipe.getrange(self.keys.bus, 0, _HEAD_BYTES - 1)
                replies = await pipe.execute(raise_on_error=False)
        except REDIS_ERRORS:
            return
        if breaker_due and not isinstance(replies[0], BaseException):
            self._note_breaker(replies[0])
        if plan_due:
            head = replies[-1]
            # a Redis user without GETRANGE: compare the whole document instead
            await self._refresh(None if isinstance(head, BaseException) else head)

    def _note_breaker(self, values: Sequence[Any]) -> None:
        state = _text(values[0]) if values[0] is not None else "closed"
        if state == "closed":
            self._breaker = None
            return
        try:
            self._breaker = (state, int(values[1] or 0), int(values[2] or 0))
        except ValueError:
            self._breaker = (state, 0, 0)

    async def _refresh(self, head: Any) -> None:
        """Swap in new settings and ACL table if Redis holds another revision; errors keep the old."""
        if head is not None and _head(head) == self._version:
            return
        try:
            bus_raw, acl_raw = await self.redis.mget([self.keys.bus, self.keys.acl])
        except REDIS_ERRORS:
            return
        if bus_raw is None or acl_raw is None or _head(bus_raw) == self._version:
            return
        try:
            plan = BusPlan.model_validate_json(bus_raw)
            table = AclDocument.model_validate_json(acl_raw).to_table()
        except ValueError as exc:
            log.warning("bus settings or ACL table of swarm %s in Redis are not valid (%s); keeping the last good ones",
                        self.swarm, exc)
            return
        if plan.swarm != self.swarm:
            return
        rights = plan.agents.get(self.agent_id)
        if rights is None:
            log.warning("agent %s is no longer declared in swarm %s; keeping its last rights", self.agent_id, self.swarm)
            return
        self.plan, self._table, self.role = plan, table, rights.role
        self._version = _head(bus_raw)
        self._max_payload = plan.settings.max_payload_bytes
        self._decisions.clear()
        self._publishable.clear()
        log.info("bus settings and ACL table of swarm %s reloaded (spec %s)", self.swarm, plan.spec_digest)

    async def close(self) -> None:
        if self._receipt_reader is not None and self._receipt_reader is not self._redis:
            await self._receipt_reader.aclose()
        self._receipt_reader = None
        if self._redis is not None and self._owns_redis:
            await self._redis.aclose()
            self._redis = None

    async def __aenter__(self) -> "EventBus":
        return await self.connect()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None or self.plan is None:
            raise BusError("EventBus is not connected: call `await bus.connect()` first")
        return self._redis

    @property
    def rights(self) -> AgentRights:
        """This agent's effective rights (declared topics its role permits) and its keys."""
        plan = self.plan
        if plan is None:
            raise BusError("EventBus is not connected: call `await bus.connect()` first")
        return plan.agents[self.agent_id]

    # -- rights ----------------------------------------------------------------------

    def decide(self, action: Action, topic: str) -> Decision:
        """This agent's role's ACL decision and the rule that made it (cached per topic)."""
        key = (action, topic)
        decision = self._decisions.get(key)
        if decision is None:
            if self._table is None or self.role is None:
                raise BusError("EventBus is not connected: call `await bus.connect()` first")
            decision = self._decisions[key] = self._table.decide(self.role, action, topic)
        return decision

    def blocking_client(self) -> aioredis.Redis:
        """A new client (bytes replies) whose socket timeout outlasts BLOCK; the caller closes it."""
        return self._client(blocking=True)

    def can_publish(self, role: str, topic: str) -> bool:
        """Whether ``role`` may publish to ``topic``, from the compiled table (swarm.acl's matcher)."""
        return self._acl_table().can_publish(role, topic)

    def can_subscribe(self, role: str, topic: str) -> bool:
        """Whether ``role`` may subscribe to ``topic``, from the compiled table."""
        return self._acl_table().can_subscribe(role, topic)

    def _acl_table(self) -> AclTable:
        if self._table is None:
            raise BusError("EventBus is not connected: call `await bus.connect()` first")
        return self._table

    def check_topic(self, topic: str, action: Action) -> TopicPlan:
        """The topic's plan if this agent may ``action`` it; else the refusal, saying why."""
        plan = self.plan
        if plan is None:
            raise BusError("EventBus is not connected: call `await bus.connect()` first")
        tp = plan.topics.get(topic)
        if tp is None:
            raise UndeclaredTopicError(
                f"topic {topic!r} is not declared in swarm {self.swarm!r} (declared: {', '.join(sorted(plan.topics))})"
            )
        rights = self.rights
        if topic in (rights.publish if action == "publish" else rights.subscribe):
            return tp
        decision = self.decide(action, topic)
        verb = "publishes" if action == "publish" else "subscribes"
        why = (f"the agent does not declare it in its {verb} (its role alone would allow it: {decision.rule}); "
               f"add it to the agent's spec" if decision.allow else decision.rule)
        raise AclDeniedError(f"agent {self.agent_id!r} (role {self.role!r}) may not {action} to {topic!r}: {why}")

    # -- publish ---------------------------------------------------------------------

    def _fields(self, topic: str, payload: Any, message_id: str | None) -> list[bytes]:
        """The outbox entry's fields of one publish after every check but the breaker."""
        name = self._publishable.get(topic)
        if name is None:
            self.check_topic(topic, "publish")
            name = self._publishable[topic] = topic.encode()
        try:
            body = _ENCODER.encode(payload).encode()
        except (TypeError, ValueError) as exc:  # UnicodeEncodeError (a lone surrogate) is a ValueError
            raise InvalidRequestError(f"payload for {topic!r} is not JSON-serialisable as UTF-8: {exc}") from exc
        if len(body) > self._max_payload:
            raise PayloadTooLargeError(
                f"payload for {topic!r} is {len(body)} bytes, over the limit of {self._max_payload} bytes"
            )
        if message_id is None:
            return [b"topic", name, b"payload", body]
        if not valid_message_id(message_id):  # the router's rule, so both refuse the same ids
            raise InvalidRequestError(
                f"message id {_printable(message_id)!r} must be 1-{MAX_MESSAGE_ID} characters without whitespace"
            )
        try:
            mid = message_id.encode()
        except UnicodeEncodeError as exc:
            raise InvalidRequestError(f"message id {_printable(message_id)!r} is not valid UTF-8") from exc
        return [b"topic", name, b"payload", body, b"message_id", mid]

    def _check_breaker(self, topic: str) -> None:
        if self._breaker is None:
            return
        state, opened_at, cooldown = self._breaker
        if state == "open":
            retry_at = opened_at + cooldown
            when = datetime.fromtimestamp(retry_at / 1000, tz=timezone.utc).isoformat(timespec="seconds")
            left = max(0.0, retry_at / 1000 - time.time())
            hint = f"a health probe is allowed after {when} ({left:.1f}s); publishing resumes once it succeeds"
        else:
            hint = "a health probe is in progress; publishing resumes once it succeeds"
        raise BreakerOpenError(
            f"agent {self.agent_id!r} may not publish to {topic!r}: its circuit breaker is {state} "
            f"after failed health checks; {hint} (or `swarm bus breaker {self.agent_id} --reset`)"
        )

    async def publish(
        self, topic: str, payload: Any, *, message_id: str | None = None, wait: bool = False, timeout: float = 2.0
    ) -> PublishResult:
        """Check, then XADD one message to this agent's outbox; see the module docstring for what
        comes back (``accepted``, or with ``wait`` the router's ``routed``/``duplicate``)."""
        redis = self.redis
        now = time.monotonic()
        if now >= self._next_check:
            await self._checks(now)
        fields = self._fields(topic, payload, message_id)
        self._check_breaker(topic)
        if wait:
            return (await self._send_and_wait([(topic, message_id, fields)], timeout))[0]
        try:
            raw = await redis.execute_command(b"XADD", self._outbox, b"*", *fields)  # type: ignore[no-untyped-call]
        except REDIS_ERRORS as exc:
            raise redis_error(exc, f"publish to {topic!r}") from exc
        return self._accepted(message_id, raw)

    def _accepted(self, message_id: str | None, raw: Any) -> PublishResult:
        oid = _text(raw)
        return PublishResult(oid, message_id or f"{self.agent_id}:{oid}", "accepted", oid)

    async def publish_many(
        self, items: Iterable[tuple[Any, ...]], *, wait: bool = False, timeout: float = 2.0
    ) -> list[PublishResult]:
        """Publish ``(topic, payload)`` or ``(topic, payload, message_id)`` items in one round trip.

        Every item is checked before anything is sent; then the XADDs go in one
        pipeline, in order. Retrying a batch with the same message ids is safe: the
        router reports what it already routed as duplicates and delivers it once.
        With ``wait``, keep a batch below ``receipts_max_len`` (the receipts stream's cap).
        """
        redis = self.redis
        now = time.monotonic()
        if now >= self._next_check:
            await self._checks(now)
        prepared = [(item[0], mid, self._fields(item[0], item[1], mid))
                    for item in items for mid in [item[2] if len(item) > 2 else None]]
        if not prepared:
            return []
        self._check_breaker(prepared[0][0])
        if wait:
            return await self._send_and_wait(prepared, timeout)
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for _, _, fields in prepared:
                    pipe.execute_command(b"XADD", self._outbox, b"*", *fields)
                replies = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise redis_error(exc, "publish_many") from exc
        return [self._accepted(mid, raw) for (_, mid, _), raw in zip(prepared, replies)]

    async def _send_and_wait(
        self, prepared: list[tuple[str, str | None, list[bytes]]], timeout: float
    ) -> list[PublishResult]:
        """XADD the entries after noting the receipts stream's last id (one round trip), then
        wait for a receipt of each; a refusal raises (the first one, in publish order)."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xrevrange(self._receipts, count=1)
                for _, _, fields in prepared:
                    pipe.execute_command(b"XADD", self._outbox, b"*", *fields)
                replies = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise redis_error(exc, "publish (waiting for the router)") from exc
        after = _text(replies[0][0][0]) if replies[0] else "0-0"
        accepted = [self._accepted(mid, raw) for (_, mid, _), raw in zip(prepared, replies[1:])]
        receipts = await self.wait_for_receipts([a.outbox_id for a in accepted], after=after, timeout=timeout)
        results = []
        for (topic, _, _), a in zip(prepared, accepted):
            receipt = receipts[a.outbox_id]
            status = receipt.get("status", "")
            if status == "refused":
                if receipt.get("reason", "").startswith("breaker_"):
                    self._next_check = self._next_breaker = 0.0  # read the breaker before the next publish
                raise refusal_error(self.agent_id, topic, receipt)
            if status not in ("routed", "duplicate"):
                raise BusError(f"the router answered {status!r} for outbox entry {a.outbox_id}: {receipt}")
            verdict: PublishStatus = "routed" if status == "routed" else "duplicate"
            mid = receipt.get("message_id") or a.message_id
            undelivered = tuple(s for s in receipt.get("undelivered", "").split(",") if s)
            if undelivered:
                log.warning("outbox entry %s of %s on %s was not delivered to %s: their inbox is full",
                            a.outbox_id, self.agent_id, topic, ", ".join(undelivered))
            results.append(PublishResult(receipt.get("entry_id", ""), mid, verdict, a.outbox_id, undelivered))
        return results

    async def wait_for_receipts(self, outbox_ids: Sequence[str], *, after: str, timeout: float) -> dict[str, dict[str, str]]:
        """The router's receipts of ``outbox_ids`` (fields as text), read after entry id ``after``
        of this agent's receipts stream; RouterUnavailableError if one is missing at ``timeout``."""
        if self._receipt_reader is None:
            self._receipt_reader = self._client(blocking=True) if self.redis_url else self.redis
        reader = self._receipt_reader
        wanted = set(outbox_ids)
        found: dict[str, dict[str, str]] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(found) < len(wanted):
            left = deadline - loop.time()
            if left <= 0:
                missing = len(wanted) - len(found)
                raise RouterUnavailableError(
                    f"no receipt from the bus router for {missing} outbox entr{'y' if missing == 1 else 'ies'} of "
                    f"{self.agent_id!r} within {timeout:g}s: is a router running? Start one with `swarm bus route` "
                    f"(or `swarm registry serve`, which routes by default). The entries stay in the outbox and are "
                    f"routed once a router runs; publishing again with the same message id is safe.",
                    delay=1.0,
                )
            try:
                reply: Any = await reader.xread({self._receipts: after}, count=1000, block=max(1, int(left * 1000)))
            except REDIS_ERRORS as exc:
                raise redis_error(exc, "waiting for the router's receipt") from exc
            for _, entries in reply or []:
                for eid, raw in entries:
                    after = _text(eid)
                    receipt = {_text(k): _text(v) for k, v in (raw or {}).items()}
                    oid = receipt.get("outbox_id", "")
                    if oid in wanted:
                        found[oid] = receipt
        return found

    # -- subscribe -------------------------------------------------------------------

    @property
    def visibility_timeout(self) -> float:
        if self._visibility_override is not None:
            return self._visibility_override
        assert self.plan is not None
        return self.plan.settings.visibility_timeout_seconds

    @property
    def max_deliveries(self) -> int:
        if self._max_deliveries_override is not None:
            return self._max_deliveries_override
        assert self.plan is not None
        return self.plan.settings.max_deliveries

    async def ack(self, entry_id: str) -> None:
        """Acknowledge inbox entry ``entry_id`` (:attr:`Message.entry_id`) and delete it from the inbox.

        XACK + XDEL in one MULTI (Redis 7.0 has no XACKDEL): the router never trims an
        inbox (a trim would let a flood evict unread entries), so the inbox holds only what
        this agent has not finished, and the router stops delivering to it at
        ``inbox_max_len`` entries. A crash before the MULTI leaves the entry pending and it
        is delivered again; after it, the entry is gone and done."""
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xack(self._inbox, self.agent_id, entry_id)
                pipe.xdel(self._inbox, entry_id)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            raise redis_error(exc, f"ack {entry_id} on {self._inbox}") from exc

    async def _message(self, entry_id: Any, fields: Mapping[Any, Any] | None, deliveries: int) -> Message | None:
        """The entry as a Message, or None after dead-lettering it if it cannot be read."""
        eid = _text(entry_id)
        parsed = parse_inbox_entry(fields or {})
        if isinstance(parsed, str):
            self.stats.unreadable += 1
            await self._dead_letter(eid, fields or {}, deliveries, f"unreadable entry: {parsed}")
            return None
        text, payload = parsed
        return Message(
            topic=text["topic"],
            entry_id=eid,
            message_id=text["message_id"],
            sender=text["sender"],
            payload=payload,
            content_type=text.get("content_type", CONTENT_TYPE),
            deliveries=deliveries,
            topic_entry_id=text.get("topic_entry_id", ""),
            _bus=self,
        )

    async def _dead_letter(self, entry_id: str, fields: Mapping[Any, Any], deliveries: int, reason: str) -> None:
        """Move one inbox entry (its fields as they were, bytes and all) to ``dlq:@<id>``, ack it
        and delete it from the inbox, in one MULTI: it is never both dead and pending, nor neither,
        and a dead letter does not count against ``inbox_max_len``."""
        extra = {
            "original_entry_id": entry_id,
            "inbox": self._inbox,
            "group": self.agent_id,
            "deliveries": str(deliveries),
            "reason": reason,
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            entry: dict[Any, Any] = {**fields, **extra}
            pipe.xadd(self._dlq, entry)
            pipe.xack(self._inbox, self.agent_id, entry_id)
            pipe.xdel(self._inbox, entry_id)
            await pipe.execute()
        self.stats.dead_lettered += 1
        log.warning("dead-lettered inbox entry %s of %s to %s: %s", entry_id, self.agent_id, self._dlq, reason)

    async def _record_trimmed(self, entry_ids: list[str]) -> None:
        """Entries trimmed while pending: Redis 7 drops them from the pending list on claim.
        Their content is gone, but each leaves a record in the dead-letter stream, so the
        loss is visible where operators look for undelivered messages, not only in a log."""
        self.stats.trimmed_while_pending += len(entry_ids)
        log.warning("%d pending entries of %s were trimmed before being acked: %s", len(entry_ids), self._inbox, entry_ids)
        async with self.redis.pipeline(transaction=False) as pipe:
            for eid in entry_ids:
                pipe.xadd(self._dlq, {"original_entry_id": eid, "inbox": self._inbox, "group": self.agent_id,
                                      "reason": "trimmed from the inbox before it was acked; content lost"})
            await pipe.execute()

    async def reclaim(self) -> list[Message]:
        """Claim inbox entries idle longer than the visibility timeout.

        One XAUTOCLAIM page, at most ``read_count`` entries (the COUNT of XREADGROUP),
        continuing from where the previous call stopped and starting over once Redis
        reports the end (cursor 0-0). Entries delivered more than ``max_deliveries``
        times are dead-lettered instead of returned."""
        out: list[Message] = []
        idle_ms = max(1, int(self.visibility_timeout * 1000))
        reply: Any = await self.redis.xautoclaim(
            self._inbox, self.agent_id, self.consumer_name, min_idle_time=idle_ms,
            start_id=self._reclaim_cursor, count=self.read_count,
        )
        cursor, claimed = _text(reply[0]), reply[1]
        self._reclaim_cursor = "0-0" if cursor in ("0-0", "0") else cursor
        self._reclaim_more = self._reclaim_cursor != "0-0"
        deleted = reply[2] if len(reply) > 2 else []
        if deleted:
            await self._record_trimmed([_text(d) for d in deleted])
        if claimed:
            counts = await self._delivery_counts([_text(eid) for eid, _ in claimed])
            for eid, fields in claimed:
                n = counts.get(_text(eid), 1)
                if n > self.max_deliveries:
                    await self._dead_letter(_text(eid), fields or {}, n,
                                            f"not acked after {n - 1} deliveries (max_deliveries {self.max_deliveries})")
                    continue
                message = await self._message(eid, fields, n)
                if message is not None:
                    self.stats.redelivered += 1
                    out.append(message)
        return out

    async def _delivery_counts(self, ids: list[str]) -> dict[str, int]:
        rows: Any = await self.redis.xpending_range(
            self._inbox, self.agent_id, min=ids[0], max=ids[-1], count=len(ids) + 1000, consumername=self.consumer_name
        )
        return {_text(row["message_id"]): int(row["times_delivered"]) for row in rows}

    async def subscribe(self, topics: Sequence[str] | None = None) -> AsyncIterator[Message]:
        """This agent's inbox, at least once: every topic it subscribes to; ack each message.

        ``topics``, if given, is checked (declared, in this agent's rights) so a typo
        fails at once; it does not filter: the router delivers only subscribed topics."""
        if isinstance(topics, str):
            raise InvalidRequestError(f"subscribe takes a list of topics, not the string {topics!r}")
        if topics is not None:
            topics = list(dict.fromkeys(topics))
            if not topics:
                raise InvalidRequestError("subscribe needs at least one topic (or None for the whole inbox)")
            for topic in topics:
                self.check_topic(topic, "subscribe")
        reader = self._client(blocking=True) if self.redis_url else self.redis
        loop = asyncio.get_running_loop()
        last_reclaim = float("-inf")
        backoff = Backoff(base=0.05, cap=2.0)
        try:
            while True:
                raise_if_cancelled()  # redis-py may have swallowed a cancel in the last read
                now = time.monotonic()
                if now >= self._next_refresh:  # the breaker only matters to publish
                    await self._checks(now, breaker=False)
                block = max(1, min(self.block_ms, int(self.visibility_timeout * 500)))
                batch: list[Message] = []
                try:
                    # The next page at once while a pending list is only partly scanned.
                    if self._reclaim_more or loop.time() - last_reclaim >= self.visibility_timeout / 2:
                        last_reclaim = loop.time()
                        batch.extend(await self.reclaim())
                    if not batch:
                        reply: Any = await reader.xreadgroup(
                            self.agent_id, self.consumer_name, {self._inbox: ">"}, count=self.read_count, block=block
                        )
                        for _, entries in reply or []:
                            for eid, fields in entries:
                                message = await self._message(eid, fields, 1)
                                if message is not None:
                                    batch.append(message)
                    backoff.reset()
                except REDIS_ERRORS as exc:
                    error = redis_error(exc, f"subscribe on {self._inbox}")
                    if isinstance(error, RedisRefusedError):
                        if error.code == "NOGROUP":
                            raise NotDeclaredError(
                                f"agent {self.agent_id!r} has no consumer group on its inbox {self._inbox}: "
                                f"run `swarm bus apply compiled/{self.swarm}` ({exc})"
                            ) from exc
                        raise error from exc
                    self.stats.reconnects += 1
                    delay = backoff.next_delay()
                    log.warning("subscribe on %s: %s; retrying in %.2fs", self._inbox, error, delay)
                    await asyncio.sleep(delay)
                    continue
                for message in batch:
                    self.stats.delivered += 1
                    yield message
        finally:
            if reader is not self._redis:
                await reader.aclose()
