"""GET /agents/watch: Server-Sent Events of registry changes, fanned out from ONE reader.

The server creates one :class:`WatchHub` per process in its lifespan. The hub's
single background task reads ``swarm:{N}:events`` with ``XREAD BLOCK`` on its own
Redis connection (:func:`reader_client`: its socket timeout is the block time plus
a margin, so a long block is not cut short, yet a TCP flow that silently died —
a NAT or firewall losing it — times out and the read reconnects instead of
hanging the hub forever) and hands every entry to each client's bounded buffer.
A client that falls ``queue_size`` events behind is disconnected; it resumes with
Last-Event-ID, so nothing is lost, and a slow client cannot stall the others.

No gap, no repeat: a client subscribes to the hub *before* it reads its backlog
with XRANGE (exclusive start), then skips every live entry whose id it has
already sent; ids are the stream's, strictly increasing. A resume id older than
what the capped stream still holds (``XINFO STREAM`` max-deleted-entry-id is past
it), or one the stream never produced (Redis lost its data and the stream began
anew), gets ``event: reset`` carrying a snapshot of all agents and, as its id, the
stream position it is taken at (:meth:`RegistryStore.snapshot_batches`: the
agents registered at that position, their documents read a batch at a time and
streamed as they are read, so 10,000 agents are never encoded in one piece),
then continues with the events after that position. The same check runs
again after every backlog page, since the stream may be trimmed while a slow
client is still reading its backlog.

Each client sees the events as its token allows: metadata keys the catalog marks
private are removed from other agents' events (the redacted frame is also
encoded once per entry). Filters ``capability`` and ``topic`` apply to events that carry an agent
registration; events without one (catalog-changed, a prober's health events
without those fields) always pass.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from datetime import datetime, timezone
from typing import Any, AsyncIterator, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry

from sse_starlette import ServerSentEvent

from swarm.keys import as_text
from swarm.backoff import Backoff
from swarm.registry.auth import EVERYONE, Reader
from swarm.registry.config import WATCH_BLOCK_MS, WATCH_READ_MARGIN
from swarm.registry.models import Registration, redact_metadata
from swarm.registry.store import REDIS_TROUBLE, RegistryStore, _id_tuple, redis_errors
from swarm.redis_conn import async_client

log = logging.getLogger("swarm.registry.watch")

#: Line separator of the SSE frames (sse-starlette's default); the server passes it too.
SSE_SEP = "\r\n"
_UNPARSED = object()
#: Defaults of the hub's XREAD block time and reader margin (RegistryConfig's).
BLOCK_MS = WATCH_BLOCK_MS
READ_MARGIN = WATCH_READ_MARGIN
#: Entries per XREAD of the hub and per backlog page (XRANGE) of a resuming client.
PAGE = 1000
#: Agents per chunk of the ``reset`` snapshot (one pipeline read and one write each).
SNAPSHOT_BATCH = 500


def reader_socket_timeout(block_ms: int, margin: float = READ_MARGIN) -> float:
    """The socket timeout of the hub's XREAD BLOCK connection."""
    return block_ms / 1000 + margin


def reader_client(url: str, *, block_ms: int = BLOCK_MS, margin: float = READ_MARGIN,
                  retry: Retry | None = None, swarm: str | None = None) -> aioredis.Redis:
    """The hub's own Redis client: a socket timeout past the XREAD block time (:mod:`swarm.redis_conn`)."""
    return async_client(url, swarm=swarm, socket_timeout=reader_socket_timeout(block_ms, margin),
                                   socket_connect_timeout=2, retry=retry)


class Entry:
    """One stream entry, shared by every subscriber: its JSON is parsed and its SSE
    frame encoded at most once, however many clients it fans out to."""

    __slots__ = ("id", "fields", "_data", "_frame", "_redacted")

    def __init__(self, entry_id: str, fields: dict[str, str]) -> None:
        self.id = entry_id
        self.fields = fields
        self._data: Any = _UNPARSED
        self._frame: bytes | None = None
        self._redacted: tuple[frozenset[str], bytes] | None = None

    @property
    def data(self) -> Any:
        if self._data is _UNPARSED:
            try:
                self._data = json.loads(self.fields.get("data", "{}"))
            except ValueError:
                self._data = None
        return self._data

    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = ServerSentEvent(
                id=self.id, event=self.fields.get("type", "message"), data=self.fields.get("data", "{}"), sep=SSE_SEP
            ).encode()
        return self._frame

    def frame_for(self, private: frozenset[str], reader: Reader) -> bytes:
        """The frame ``reader`` may see: without the ``private`` metadata keys unless it
        is the agent of the event or the admin (encoded once per private set)."""
        if not private or reader.sees_private_of(self.fields.get("agent", "")):
            return self.frame()
        cached = self._redacted
        if cached is None or cached[0] != private:
            data = self.data
            redacted = redact_metadata(data, private) if isinstance(data, dict) else data
            if redacted is data:
                frame = self.frame()
            else:
                frame = ServerSentEvent(id=self.id, event=self.fields.get("type", "message"),
                                        data=json.dumps(redacted, separators=(",", ":")), sep=SSE_SEP).encode()
            cached = self._redacted = (private, frame)
        return cached[1]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Entry) and (self.id, self.fields) == (other.id, other.fields)

    def __repr__(self) -> str:
        return f"Entry({self.id!r}, {self.fields!r})"


class Subscriber:
    """One SSE client's bounded buffer of entries."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: deque[Entry] = deque()
        self.wakeup = asyncio.Event()
        self.overflowed = False
        self.closed = False

    def close(self) -> None:
        """End this client's stream at its next wait (the server is shutting down)."""
        self.closed = True
        self.wakeup.set()

    def offer(self, entry: Entry) -> None:
        if len(self.items) >= self.limit:
            self.overflowed = True
        else:
            self.items.append(entry)
        self.wakeup.set()

    async def next(self, timeout: float | None = None) -> Entry | None:
        """The next entry; None on overflow, close or timeout."""
        while not self.items and not self.overflowed and not self.closed:
            self.wakeup.clear()
            try:
                await asyncio.wait_for(self.wakeup.wait(), timeout)
            except asyncio.TimeoutError:
                return None
        if self.overflowed or self.closed:
            return None
        return self.items.popleft()


class WatchHub:
    """One XREAD BLOCK reader per process, fanning out to every subscriber."""

    def __init__(self, reader: aioredis.Redis, store: RegistryStore, *, queue_size: int = 1000,
                 block_ms: int = BLOCK_MS) -> None:
        self.reader = reader
        self.store = store
        self.queue_size = queue_size
        self.block_ms = block_ms
        self.subscribers: set[Subscriber] = set()
        self.position: str | None = None
        self.reads = 0

    def subscribe(self) -> Subscriber:
        sub = Subscriber(self.queue_size)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    async def run(self, stop_event: asyncio.Event) -> None:
        key = self.store.keys.events
        backoff = Backoff(base=0.1, cap=2.0)
        while not stop_event.is_set():
            try:
                if self.position is None:
                    self.position = await self.store.last_event_id()
                async with redis_errors("watch read"):
                    reply = cast(
                        "list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None",
                        await self.reader.xread({key: self.position}, count=PAGE, block=self.block_ms),
                    )
            except REDIS_TROUBLE as exc:
                log.warning("watch reader: %s; retrying", exc)
                await _sleep_or_stop(stop_event, backoff.next_delay())
                continue
            except Exception:  # a bug or an odd reply must not stop every watch for good
                log.exception("watch reader failed; retrying")
                await _sleep_or_stop(stop_event, backoff.next_delay())
                continue
            backoff.reset()
            self.reads += 1
            for _stream, entries in reply or []:
                for raw_id, fields in entries:
                    entry_id = as_text(raw_id)
                    entry = Entry(entry_id, {as_text(k): as_text(v) for k, v in fields.items()})
                    self.position = entry_id
                    for sub in list(self.subscribers):
                        sub.offer(entry)


async def _sleep_or_stop(stop_event: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop_event.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass




def matches(data: Any, capability: str | None, topic: str | None) -> bool:
    """Whether an event's data passes the capability/topic filters."""
    if not isinstance(data, dict):
        return True
    if capability is not None and "capabilities" in data:
        if capability not in (data.get("capabilities") or []):
            return False
    if topic is not None and isinstance(data.get("topics"), dict):
        topics = data["topics"]
        if topic not in (topics.get("publish") or []) and topic not in (topics.get("subscribe") or []):
            return False
    return True


def _snapshot_json(agent: Registration, capability: str | None, topic: str | None,
                   private: frozenset[str], reader: Reader) -> bytes | None:
    """One agent of the snapshot as ``reader`` may see it (None: filtered out).

    The filters and the redaction of :func:`matches` and :func:`redact_metadata`,
    on the model; encoded by pydantic (the same compact JSON as ``json.dumps`` of
    its dump for ASCII text; other text is sent as UTF-8 rather than ``\\u``
    escapes, the same JSON value).
    """
    if capability is not None and capability not in agent.capabilities:
        return None
    if topic is not None and topic not in agent.topics.publish and topic not in agent.topics.subscribe:
        return None
    if private and private & agent.metadata.keys() and not reader.sees_private_of(agent.agent_id):
        agent = agent.model_copy(update={"metadata": {k: v for k, v in agent.metadata.items() if k not in private}})
    return agent.model_dump_json().encode()


def sse_event(entry: Entry, capability: str | None, topic: str | None,
              private: frozenset[str] = frozenset(), reader: Reader = EVERYONE) -> bytes | None:
    """The encoded SSE frame of a stream entry as ``reader`` may see it, or None when filtered out."""
    if (capability is not None or topic is not None) and not matches(entry.data, capability, topic):
        return None
    return entry.frame_for(private, reader)


async def event_stream(
    hub: WatchHub,
    sub: Subscriber,
    *,
    start_after: str,
    reset: bool,
    capability: str | None,
    topic: str | None,
    private: frozenset[str] = frozenset(),
    reader: Reader = EVERYONE,
    ping_interval: float | None = None,
) -> AsyncIterator[dict[str, str] | bytes]:
    """Yield backlog then live events for one subscribed client; unsubscribes at the end.

    Private metadata keys (``private``) are removed from every event and snapshot
    entry ``reader`` may not see them in (another agent's, for an agent's token).

    ``ping_interval``: while no event comes for that long, a keep-alive comment
    (``: ping - <time>``, sse-starlette's) is yielded. The pings are this
    generator's, not sse-starlette's own task, because the ``reset`` snapshot is
    one SSE event written in several chunks (:data:`SNAPSHOT_BATCH` agents each, as
    they are read): a ping from another task between two chunks would end the
    event half-way. Nothing else writes to the response, so every event arrives whole.
    """
    store = hub.store
    sent = start_after

    async def snapshot() -> AsyncIterator[bytes]:
        """The ``reset`` event: one SSE event, streamed a batch of agents at a time.

        Its data is ``{"agents":[...]}`` as before, the batches on ``data:`` lines of
        their own (a reader joins them with newlines, which JSON ignores between
        values); a snapshot of one batch is byte for byte the old single frame. Its
        id is the stream position the snapshot is taken at: the events after it
        follow the snapshot (:meth:`RegistryStore.snapshot_batches`).
        """
        nonlocal sent
        catalog_state = await store.get_catalog()
        last_id, batches = await store.snapshot_batches(catalog_state.catalog if catalog_state else None,
                                                        SNAPSHOT_BATCH)
        sent = last_id
        lead = f"id: {last_id}{SSE_SEP}event: reset{SSE_SEP}data: {{\"agents\":[".encode()
        more = f"{SSE_SEP}data: ,".encode()
        pending: bytes | None = None
        try:
            async for part in batches:
                encoded = (_snapshot_json(a, capability, topic, private, reader) for a in part)
                items = [i for i in encoded if i is not None]
                if not items:
                    continue
                if pending is not None:
                    yield pending
                pending = lead + b",".join(items)
                lead = more
        finally:
            await batches.aclose()
        yield (lead if pending is None else pending) + f"]}}{SSE_SEP}{SSE_SEP}".encode()

    def ping() -> bytes:
        return ServerSentEvent(comment=f"ping - {datetime.now(timezone.utc)}", sep=SSE_SEP).encode()

    try:
        if reset:
            async for chunk in snapshot():
                yield chunk
        while True:  # backlog, page by page
            before = sent
            page = [Entry(i, f) for i, f in await store.events_after(before, count=PAGE)]
            # The capped stream may have been trimmed past `before` since the last check
            # (a slow client reading a long backlog): XRANGE then silently starts at the
            # oldest kept entry. Checking after the read is race-free, as trimming only
            # ever removes the oldest entries: not trimmed now means not trimmed then.
            if page and await store.trimmed_past(before):
                async for chunk in snapshot():
                    yield chunk
                continue
            for entry in page:
                sent = entry.id
                event = sse_event(entry, capability, topic, private, reader)
                if event is not None:
                    yield event
            if len(page) < PAGE:
                break
        while True:
            live = await sub.next(ping_interval)
            if live is None and sub.closed:
                return  # shutting down: end the response cleanly; the client resumes elsewhere
            if live is None and not sub.overflowed:
                yield ping()  # nothing for ping_interval seconds
                continue
            if live is None:
                log.warning("watch client fell %d events behind; disconnecting it (it resumes by Last-Event-ID)",
                            sub.limit)
                return
            if _id_tuple(live.id) <= _id_tuple(sent):
                continue
            sent = live.id
            event = sse_event(live, capability, topic, private, reader)
            if event is not None:
                yield event
    except REDIS_TROUBLE as exc:
        log.warning("watch client ended: %s", exc)
    finally:
        hub.unsubscribe(sub)
