"""EventBus: publish and subscribe on Redis Streams for one agent identity.

Generated agent servers, the ``swarm bus`` CLI and tests use it. One stream per
topic, one consumer group per subscribing agent (group id = agent id), explicit
ack. Why it is built this way:

* ``publish`` checks the topic is declared, the role's ACL (the compiled table,
  cached per topic in-process) and the payload size in Python, then does the
  breaker check, the dedup check, the XADD and the mark in ONE Lua script
  (``lua/publish.lua``; see :mod:`swarm.bus.dedup`): one round trip, and never a mark
  without an entry.
* ``subscribe`` reads with XREADGROUP BLOCK on its own connection whose socket
  timeout is BLOCK + 10 s (redis-py 8 defaults to 5 s, which a blocking read would
  trip). Entries not acked within the visibility timeout are reclaimed with
  XAUTOCLAIM, one page of ``read_count`` entries per call (the cursor kept between
  calls), so a consumer never holds more claimed-but-unhandled entries than one
  batch: claiming restarts an entry's idle clock, and entries claimed far ahead of
  the handler would pass the timeout again and be claimed by another consumer,
  inflating delivery counts. They are delivered again; once delivered
  ``max_deliveries`` times an entry moves to the topic's dead-letter stream and is
  acked there, never dropped. Entries trimmed away while pending (Redis 7 reports
  them from XAUTOCLAIM) are counted in :attr:`EventBus.stats` and recorded (id only:
  the content is gone) in the dead-letter stream.
* Connection errors become :class:`~swarm.errors.RedisUnavailableError`; the
  subscribe loop retries them with backoff, and the client reconnects on the next
  call, so a Redis restart needs no restart of the agent.
* Settings and ACL table loaded from Redis are re-read when ``swarm bus apply`` or
  the reconciler replaced them, so a running agent follows a spec change: at most
  every ``refresh_seconds`` a publish or subscribe first reads the head of
  ``bus.json`` (GETRANGE, ~200 bytes: swarm name and spec digest, which determines
  both documents) and fetches the two documents only when it differs. Redis users
  enforce the new rights at once in any case.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, AsyncIterator, Iterable, Sequence

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from swarm.acl import AclTable, Action, Decision
from swarm.bus.dedup import window_ms
from swarm.bus.scripts import load_script
from swarm.desired import AclDocument, BusPlan, TopicPlan
from swarm.errors import (
    AclDeniedError,
    BreakerOpenError,
    BusError,
    InvalidRequestError,
    NotDeclaredError,
    PayloadTooLargeError,
    RedisUnavailableError,
    TransientError,
    UndeclaredTopicError,
)
from swarm.keys import SwarmKeys, as_text

log = logging.getLogger("swarm.bus")

_CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
CONTENT_TYPE = "application/json"
_CT = CONTENT_TYPE.encode()
MAX_MESSAGE_ID = 200
#: Messages per script call in publish_many (bounds how long one call holds Redis).
BATCH = 100
#: bus.json starts {"swarm":<name>,"spec_digest":<digest>,...: its first 192 bytes hold
#: both (at most ~165 bytes). Same spec digest, same documents.
_HEAD_BYTES = 192




def _head(raw: str | bytes) -> bytes:
    return (raw.encode() if isinstance(raw, str) else raw)[:_HEAD_BYTES]


@dataclass(frozen=True, slots=True)
class PublishResult:
    """The stream entry id of a publish and whether it was a duplicate (then: the original id)."""

    entry_id: str
    message_id: str
    duplicate: bool


@dataclass
class Message:
    """One delivered entry; call :meth:`ack` once handled, or it is delivered again."""

    topic: str
    entry_id: str
    message_id: str
    sender: str
    payload: Any
    content_type: str = CONTENT_TYPE
    deliveries: int = 1
    _bus: "EventBus | None" = field(default=None, repr=False, compare=False)

    async def ack(self) -> None:
        if self._bus is None:
            raise BusError("message is not bound to a bus")
        await self._bus.ack(self.topic, self.entry_id)


@dataclass
class BusStats:
    """Counters of what the subscribe loop saw (also logged)."""

    delivered: int = 0
    redelivered: int = 0
    dead_lettered: int = 0
    trimmed_while_pending: int = 0
    reconnects: int = 0


def _wrap(exc: Exception, what: str) -> Exception:
    if isinstance(exc, _CONNECTION_ERRORS):
        return RedisUnavailableError(f"{what}: Redis unreachable: {exc}", delay=0.5)
    return BusError(f"{what}: Redis error: {exc}")


class EventBus:
    """The bus as seen by one agent (``agent_id`` with ``role``) of one swarm.

    Without ``plan``/``acl`` the bus settings and ACL table are loaded from Redis on
    :meth:`connect` (written there by ``swarm bus apply``); ``role=None`` takes the
    agent's role from that plan, and both are re-read when they change in Redis
    (checked at most every ``refresh_seconds``; 0 turns it off).
    ``dedup_window_seconds``, ``visibility_timeout`` and ``max_deliveries`` override
    the plan (tests, tooling).
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
        dedup_window_seconds: float | None = None,
        visibility_timeout: float | None = None,
        max_deliveries: int | None = None,
        refresh_seconds: float = 2.0,
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
        self.consumer_name = consumer_name or f"{agent_id}@{socket.gethostname()}:{os.getpid()}"
        self.block_ms = block_ms
        self.read_count = read_count
        self._window_override = dedup_window_seconds
        self._visibility_override = visibility_timeout
        self._max_deliveries_override = max_deliveries
        self._decisions: dict[tuple[Action, str], Decision] = {}
        self._publish_sha = b""
        self._sender = agent_id.encode()
        self._targets: dict[str, tuple[bytes, str, bytes, bytes]] = {}
        self._breaker_key = self.keys.breaker(agent_id).encode()
        self._max_payload = 0
        self.stats = BusStats()
        self.refresh_seconds = refresh_seconds
        self._refreshes = plan is None and acl is None and refresh_seconds > 0
        self._role_from_plan = role is None
        self._version = b""  # head of the bus.json last loaded (see _refresh)
        self._next_refresh = float("inf")  # monotonic time of the next check; inf: never
        self._reclaim_cursors: dict[str, str] = {}  # stream -> XAUTOCLAIM cursor of the next page
        self._reclaim_more = False  # the last reclaim stopped short of the end of a pending list

    # -- lifecycle -------------------------------------------------------------------

    def _client(self, *, blocking: bool) -> aioredis.Redis:
        assert self.redis_url is not None
        return aioredis.Redis.from_url(
            self.redis_url,
            decode_responses=True,
            socket_connect_timeout=2.0,
            # A blocking XREADGROUP must not trip the socket timeout (redis-py 8: 5 s), yet a
            # silently vanished server must not hang the reader forever: BLOCK plus a margin.
            socket_timeout=self.block_ms / 1000 + 10.0 if blocking else 5.0,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )

    async def connect(self) -> "EventBus":
        """Open the connection and load bus settings + ACL table unless given."""
        if self._redis is None:
            self._redis = self._client(blocking=False)
        try:
            return await self._load()
        except BaseException:
            await self.close()  # `async with` never reaches __aexit__ when connect fails
            raise

    async def _load(self) -> "EventBus":
        assert self._redis is not None
        if self.plan is None or self._table is None:
            try:
                bus_raw, acl_raw = await self._redis.mget([self.keys.bus, self.keys.acl])
            except (RedisError, OSError) as exc:
                raise _wrap(exc, "loading bus settings") from exc
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
        if self.role is None:
            rights = self.plan.agents.get(self.agent_id)
            if rights is None:
                raise NotDeclaredError(f"agent {self.agent_id!r} is not declared in swarm {self.swarm!r}")
            self.role = rights.role
        self._max_payload = self.plan.settings.max_payload_bytes
        self._publish_sha = hashlib.sha1(load_script("publish").encode()).hexdigest().encode()
        return self

    async def _refresh(self) -> None:
        """Swap in new settings and ACL table if Redis holds another revision; errors keep the old.

        A failure here never fails the caller: the publish or subscribe that follows
        reports an unreachable Redis itself, and an uninstalled or invalid bus keeps
        the last good revision (as the reconciler keeps the last good spec)."""
        self._next_refresh = time.monotonic() + self.refresh_seconds
        redis = self.redis
        try:
            try:
                head: Any = await redis.getrange(self.keys.bus, 0, _HEAD_BYTES - 1)
            # a Redis user written before GETRANGE was granted; a multi-byte character cut
            # at the end of the range (a non-ASCII redis_url): compare the whole document
            except (NoPermissionError, UnicodeDecodeError):
                head = None
            if head is not None and _head(head) == self._version:
                return
            bus_raw, acl_raw = await redis.mget([self.keys.bus, self.keys.acl])
        except (RedisError, OSError):
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
        role = self.role
        if self._role_from_plan:
            rights = plan.agents.get(self.agent_id)
            if rights is None:
                log.warning("agent %s is no longer declared in swarm %s; keeping its last rights", self.agent_id, self.swarm)
                return
            role = rights.role
        self.plan, self._table, self.role = plan, table, role
        self._version = _head(bus_raw)
        self._max_payload = plan.settings.max_payload_bytes
        self._decisions.clear()
        self._targets.clear()
        log.info("bus settings and ACL table of swarm %s reloaded (spec %s)", self.swarm, plan.spec_digest)

    async def close(self) -> None:
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

    # -- ACL -------------------------------------------------------------------------

    def decide(self, action: Action, topic: str) -> Decision:
        """This agent's ACL decision and the rule that made it (cached per topic)."""
        key = (action, topic)
        decision = self._decisions.get(key)
        if decision is None:
            if self._table is None or self.role is None:
                raise BusError("EventBus is not connected: call `await bus.connect()` first")
            decision = self._decisions[key] = self._table.decide(self.role, action, topic)
        return decision

    def blocking_client(self) -> aioredis.Redis:
        """A new client whose socket timeout outlasts BLOCK, for blocking reads; the caller closes it."""
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

    def _topic(self, topic: str, action: Action) -> TopicPlan:
        plan = self.plan
        if plan is None:
            raise BusError("EventBus is not connected: call `await bus.connect()` first")
        tp = plan.topics.get(topic)
        if tp is None:
            raise UndeclaredTopicError(
                f"topic {topic!r} is not declared in swarm {self.swarm!r} (declared: {', '.join(sorted(plan.topics))})"
            )
        decision = self.decide(action, topic)
        if not decision.allow:
            raise AclDeniedError(
                f"agent {self.agent_id!r} (role {self.role!r}) may not {action} to {topic!r}: {decision.rule}"
            )
        return tp

    # -- publish ---------------------------------------------------------------------

    def _target(self, topic: str) -> tuple[bytes, str, bytes, bytes]:
        """(stream, dedup key prefix, window ms, max_len) of a topic this agent may publish to, cached.

        The constant arguments are pre-encoded: publish is the hot path, and redis-py
        passes bytes through without encoding them again."""
        target = self._targets.get(topic)
        if target is None:
            tp = self._topic(topic, "publish")
            seconds = self._window_override if self._window_override is not None else tp.dedup_window_seconds
            target = (tp.stream.encode(), self.keys.dedup(topic, ""), str(window_ms(seconds)).encode(),
                      str(tp.max_len).encode())
            self._targets[topic] = target
        return target

    def _prepare(self, topic: str, payload: Any, message_id: str | None) -> tuple[str, bytes, str, list[Any]]:
        """(message id, stream, dedup mark, script arguments) of one publish: every check but the breaker."""
        stream, dedup_prefix, window, max_len = self._target(topic)
        try:
            body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError(f"payload for {topic!r} is not JSON-serialisable: {exc}") from exc
        limit = self._max_payload
        if len(body) * 4 > limit:  # a str of n chars is at most 4n UTF-8 bytes: encode only when it matters
            size = len(body.encode("utf-8"))
            if size > limit:
                raise PayloadTooLargeError(f"payload for {topic!r} is {size} bytes, over the limit of {limit} bytes")
        if message_id is None:
            message_id = str(uuid.uuid4())
        elif not message_id or len(message_id) > MAX_MESSAGE_ID or any(c.isspace() for c in message_id):
            raise InvalidRequestError(
                f"message id {message_id!r} must be 1-{MAX_MESSAGE_ID} characters without whitespace"
            )
        return message_id, stream, dedup_prefix + message_id, [window, max_len, message_id, body]

    async def _load_publish_script(self) -> None:
        self._publish_sha = (await self.redis.script_load(load_script("publish"))).encode()

    def _result(self, topic: str, message_id: str, kind: str, entry_id: str, raw: Sequence[Any]) -> PublishResult:
        if kind == "ok":
            return PublishResult(entry_id, message_id, False)
        if kind == "dup":
            return PublishResult(entry_id, message_id, True)
        state, retry_at, now = raw[1], int(raw[2]), int(raw[3])
        if retry_at > 0:
            when = datetime.fromtimestamp(retry_at / 1000, tz=timezone.utc).isoformat(timespec="seconds")
            hint = f"a health probe is allowed after {when} ({max(0, retry_at - now) / 1000:.1f}s); publishing resumes once it succeeds"
        else:
            hint = "a health probe is in progress; publishing resumes once it succeeds"
        raise BreakerOpenError(
            f"agent {self.agent_id!r} may not publish to {topic!r}: its circuit breaker is {state} "
            f"after failed health checks; {hint} (or `swarm bus breaker {self.agent_id} --reset`)"
        )

    async def publish(self, topic: str, payload: Any, *, message_id: str | None = None) -> PublishResult:
        """Append one message; a message id seen inside the topic's window is a duplicate."""
        redis = self.redis
        if time.monotonic() >= self._next_refresh:
            await self._refresh()
        mid, stream, mark, args = self._prepare(topic, payload, message_id)
        command = (b"EVALSHA", self._publish_sha, b"3", self._breaker_key, stream, mark, self._sender, _CT, *args)
        try:
            try:
                raw = await redis.execute_command(*command)  # type: ignore[no-untyped-call]
            except NoScriptError:  # a restarted or flushed Redis forgot the script
                await self._load_publish_script()
                raw = await redis.execute_command(b"EVALSHA", self._publish_sha, *command[2:])  # type: ignore[no-untyped-call]
        except (RedisError, OSError) as exc:
            raise _wrap(exc, f"publish to {topic!r}") from exc
        return self._result(topic, mid, raw[0], raw[1], raw)

    async def publish_many(self, items: Iterable[tuple[Any, ...]]) -> list[PublishResult]:
        """Publish ``(topic, payload)`` or ``(topic, payload, message_id)`` items in one round trip.

        Every item is checked before anything is sent; then each chunk of
        :data:`BATCH` items is one script call (breaker checked once per chunk) and all
        chunks go in one pipeline. If the breaker refuses, BreakerOpenError is raised;
        retrying the batch with the same message ids is safe (what was appended comes
        back as duplicates).
        """
        redis = self.redis
        if time.monotonic() >= self._next_refresh:
            await self._refresh()
        prepared = [
            (item[0], self._prepare(item[0], item[1], item[2] if len(item) > 2 else None)) for item in items
        ]
        if not prepared:
            return []
        chunks = [prepared[i:i + BATCH] for i in range(0, len(prepared), BATCH)]

        async def send() -> list[Any]:
            async with redis.pipeline(transaction=False) as pipe:
                for chunk in chunks:
                    keys: list[Any] = [self._breaker_key]
                    args: list[Any] = [self._sender, _CT]
                    for _, (_, stream, mark, item_args) in chunk:
                        keys += (stream, mark)
                        args += item_args
                    pipe.execute_command(b"EVALSHA", self._publish_sha, len(keys), *keys, *args)
                return await pipe.execute()

        try:
            try:
                replies = await send()
            except NoScriptError:  # nothing ran: every call of the batch failed alike
                await self._load_publish_script()
                replies = await send()
        except (RedisError, OSError) as exc:
            raise _wrap(exc, "publish_many") from exc
        results: list[PublishResult] = []
        for chunk, raw in zip(chunks, replies):
            for i, (topic, (mid, _, _, _)) in enumerate(chunk):
                results.append(self._result(topic, mid, raw[2 * i], raw[2 * i + 1], raw))
        return results

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

    async def ack(self, topic: str, entry_id: str) -> None:
        try:
            await self.redis.xack(self.keys.topic(topic), self.agent_id, entry_id)
        except (RedisError, OSError) as exc:
            raise _wrap(exc, f"ack {entry_id} on {topic!r}") from exc

    def _message(self, topic: str, entry_id: str, fields: dict[str, str], deliveries: int) -> Message:
        raw = fields.get("payload", "null")
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = raw  # written by hand with a raw XADD; hand it over as text
        return Message(
            topic=topic,
            entry_id=entry_id,
            message_id=fields.get("message_id", entry_id),
            sender=fields.get("sender", ""),
            payload=payload,
            content_type=fields.get("content_type", CONTENT_TYPE),
            deliveries=deliveries,
            _bus=self,
        )

    def _dead_letter_stream(self, topic: str) -> str:
        """The plan's dead-letter stream of ``topic``; the key layout's if a refresh dropped the topic."""
        tp = self.plan.topics.get(topic) if self.plan else None
        return tp.dead_letter_stream if tp else self.keys.dead_letter(topic)

    async def _dead_letter(self, topic: str, entry_id: str, fields: dict[str, str], deliveries: int) -> None:
        dlq = self._dead_letter_stream(topic)
        extra = {
            "original_entry_id": entry_id,
            "topic": topic,
            "group": self.agent_id,
            "deliveries": str(deliveries),
            "reason": f"not acked after {deliveries - 1} deliveries (max_deliveries {self.max_deliveries})",
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            entry: dict[Any, Any] = {**fields, **extra}
            pipe.xadd(dlq, entry)
            pipe.xack(self.keys.topic(topic), self.agent_id, entry_id)
            await pipe.execute()
        self.stats.dead_lettered += 1
        log.warning("dead-lettered %s on %s for group %s after %d deliveries", entry_id, topic, self.agent_id, deliveries - 1)

    async def _record_trimmed(self, topic: str, entry_ids: list[str]) -> None:
        """Entries trimmed (max_len) while pending: Redis 7 drops them from the pending list on
        claim. Their content is gone, but each leaves a record in the dead-letter stream, so
        the loss is visible where operators look for undelivered messages, not only in a log."""
        dlq = self._dead_letter_stream(topic)
        self.stats.trimmed_while_pending += len(entry_ids)
        log.warning("%d pending entries of %s were trimmed before being acked: %s", len(entry_ids), topic, entry_ids)
        async with self.redis.pipeline(transaction=False) as pipe:
            for eid in entry_ids:
                pipe.xadd(dlq, {"original_entry_id": eid, "topic": topic, "group": self.agent_id,
                                "reason": "trimmed from the stream (max_len) before it was acked; content lost"})
            await pipe.execute()

    async def reclaim(self, topics: Sequence[str]) -> list[Message]:
        """Claim entries of this agent's group idle longer than the visibility timeout.

        One XAUTOCLAIM page per topic, at most ``read_count`` entries (the COUNT of
        XREADGROUP), continuing from where the previous call stopped and starting over
        once Redis reports the end (cursor 0-0). Claiming restarts an entry's idle clock:
        claiming more than the caller handles before the timeout would let other
        consumers claim them again, inflating delivery counts up to dead letters.
        """
        out: list[Message] = []
        idle_ms = max(1, int(self.visibility_timeout * 1000))
        more = False
        for topic in topics:
            stream = self.keys.topic(topic)
            reply = await self.redis.xautoclaim(
                stream,
                self.agent_id,
                self.consumer_name,
                min_idle_time=idle_ms,
                start_id=self._reclaim_cursors.get(stream, "0-0"),
                count=self.read_count,
            )
            cursor, claimed = as_text(reply[0]), reply[1]
            # A client without decode_responses answers b"0-0": compared as text, or the
            # cursor would never be seen to end.
            self._reclaim_cursors[stream] = "0-0" if cursor in ("0-0", "0") else cursor
            more = more or self._reclaim_cursors[stream] != "0-0"
            deleted = reply[2] if len(reply) > 2 else []
            if deleted:
                await self._record_trimmed(topic, [as_text(d) for d in deleted])
            if claimed:
                counts = await self._delivery_counts(stream, [eid for eid, _ in claimed])
                for eid, fields in claimed:
                    n = counts.get(eid, 1)
                    if n > self.max_deliveries:
                        await self._dead_letter(topic, eid, fields or {}, n)
                    else:
                        self.stats.redelivered += 1
                        out.append(self._message(topic, eid, fields or {}, n))
        self._reclaim_more = more
        return out

    async def _delivery_counts(self, stream: str, ids: list[str]) -> dict[str, int]:
        rows: Any = await self.redis.xpending_range(
            stream, self.agent_id, min=ids[0], max=ids[-1], count=len(ids) + 1000, consumername=self.consumer_name
        )
        return {row["message_id"]: int(row["times_delivered"]) for row in rows}

    async def subscribe(self, topics: Sequence[str]) -> AsyncIterator[Message]:
        """Messages of ``topics`` for this agent's consumer group, at least once; ack each."""
        if isinstance(topics, str):
            raise InvalidRequestError(f"subscribe takes a list of topics, not the string {topics!r}")
        topics = list(dict.fromkeys(topics))
        if not topics:
            raise InvalidRequestError("subscribe needs at least one topic")
        if time.monotonic() >= self._next_refresh:
            await self._refresh()
        for topic in topics:
            self._topic(topic, "subscribe")
        reader = self._client(blocking=True) if self.redis_url else self.redis
        streams = {self.keys.topic(t): t for t in topics}
        block = max(1, min(self.block_ms, int(self.visibility_timeout * 500)))
        reclaim_every = self.visibility_timeout / 2
        last_reclaim = float("-inf")
        backoff = 0.05
        loop = asyncio.get_running_loop()
        try:
            while True:
                batch: list[Message] = []
                try:
                    # The next page at once while a pending list is only partly scanned.
                    if self._reclaim_more or loop.time() - last_reclaim >= reclaim_every:
                        last_reclaim = loop.time()
                        batch.extend(await self.reclaim(topics))
                    if not batch:
                        reply: Any = await reader.xreadgroup(
                            self.agent_id, self.consumer_name, {s: ">" for s in streams}, count=self.read_count, block=block
                        )
                        for stream, entries in reply or []:
                            for eid, fields in entries:
                                batch.append(self._message(streams[stream], eid, fields or {}, 1))
                    backoff = 0.05
                except ResponseError as exc:
                    if "NOGROUP" in str(exc):
                        raise NotDeclaredError(
                            f"agent {self.agent_id!r} has no consumer group on {list(streams.values())}: "
                            f"run `swarm bus apply compiled/{self.swarm}` ({exc})"
                        ) from exc
                    raise _wrap(exc, "subscribe") from exc
                except (RedisError, OSError) as exc:
                    if not isinstance(exc, _CONNECTION_ERRORS):
                        raise _wrap(exc, "subscribe") from exc
                    self.stats.reconnects += 1
                    log.warning("subscribe on %s: Redis unreachable (%s); retrying in %.2fs", topics, exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                for message in batch:
                    self.stats.delivered += 1
                    yield message
        finally:
            if reader is not self._redis:
                await reader.aclose()
