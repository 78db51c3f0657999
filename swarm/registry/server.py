"""The agent registry HTTP service: a Starlette app factory.

``swarm registry serve`` calls :func:`create_app` with a
:class:`~swarm.registry.config.RegistryConfig` and runs it under uvicorn; tests
do the same in a subprocess. The app's lifespan owns everything long-lived —
the Redis clients, the :class:`~swarm.registry.store.RegistryStore`, the lease
sweeper, the watch hub, the bus's health prober (``--no-probe`` turns it off) and the
bus's trusted router (``--no-route``) —
so nothing is global and several apps can share one process.

Handlers are thin: validate (pydantic models; 413 over 64 KiB, 422 with field
errors), authorize (``auth.py``), admit against the catalog (``admission.py``),
then one atomic store call.

Reads (GET /agents, /agents/{id}, /agents/watch, /catalog, /status) need a bearer
token when the registry has a secret (an agent's, the admin or the read token),
unless the pushed catalog says ``public_reads``; before any catalog is pushed they
need one too. Metadata keys the catalog marks private are removed from what any
reader but the agent itself and the admin gets. /health, /health/live,
/health/ready, /openapi.json and /metrics stay open: probes and scrapers carry no
token, and none of them returns metadata. /metrics has counts by status, request
latencies by route and the bus's series (``swarm_bus_*``, ``swarm_router_*``), which
are labelled by agent id and topic name (docs/metrics.md): keep the port off networks
that must not learn the swarm's ids.

Bursts: Redis commands go through a blocking connection pool (a request waits
for a free connection up to ``redis_pool_timeout`` instead of failing at once),
and at most ``max_concurrency`` requests run their handler at a time; the others
queue, and only one that waited ``queue_timeout`` gets 503 with Retry-After.
/health/live, /metrics and /openapi.json are not queued. Errors are typed and mapped in one place
(:meth:`RegistryApp.error_response`): Redis trouble is 503 with Retry-After, never a 500
traceback; anything unexpected is a JSON 500 without internals.

Several processes may serve one swarm: all state, including the catalog, is
read from Redis on every request (the parsed catalog is cached per stored value).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import re
import threading
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Mapping

import anyio
import redis.exceptions as rexc
from pydantic import BaseModel, ValidationError
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from swarm.desired import AgentsDocumentText, CatalogDelta, CatalogText, RegistryCatalog, patched_catalog
from swarm.foreign import redis_retry
from swarm.redis_conn import async_client
from swarm.errors import ConflictError, InvalidRequestError, NotDeclaredError, RedisRefusedError, RedisUnavailableError
from swarm.registry.admission import HealthUrlError, resolve_registration
from swarm.registry.auth import EVERYONE, Authorizer, ForbiddenError, MissingTokenError, Reader
from swarm.registry.config import RegistryConfig
from swarm.registry.metrics import CONTENT_TYPE_LATEST, RegistryMetrics
from swarm.registry.models import (
    AGENT_STATUSES,
    AgentCounts,
    CatalogPatch,
    CatalogPut,
    CatalogPutResult,
    CatalogState,
    FieldError,
    Health,
    RegisterRequest,
    Registration,
    Status,
    redact_metadata,
)
from swarm.registry.openapi import openapi_document
from swarm.registry.store import REDIS_TROUBLE, FieldConflictError, RegistryStore, parse_stream_id
from swarm.registry.sweeper import LeaseSweeper
from swarm.registry.watch import SSE_SEP, Subscriber, WatchHub, event_stream, reader_client
from swarm.spec.models import DEFAULT_PRIVATE_METADATA, NAME_MAX, NAME_PATTERN
from swarm.spec.names import is_name

log = logging.getLogger("swarm.registry")

_STATUS_PATTERN = f"({'|'.join(AGENT_STATUSES)})"
#: Seconds a watch stream gets to end cleanly once the server shuts down.
SSE_SHUTDOWN_GRACE = 1.0
#: Agents read per pipeline by GET /agents (and encoded per chunk of its streamed body).
LIST_BATCH = 500


class BodyTooLargeError(InvalidRequestError):
    """The request body is over the limit (413)."""


class RequestInvalidError(InvalidRequestError):
    """Malformed JSON, fields or parameters (422); ``errors`` is the field error list."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors))
        self.errors = errors


class NoCatalogError(RedisUnavailableError):
    """No catalog has been pushed yet; registrations cannot be checked (503)."""


class SwarmMismatchError(ConflictError):
    """The pushed catalog belongs to another swarm (409)."""


class BaseDigestMismatchError(ConflictError):
    """PATCH /catalog made against another catalog than the stored one (409 base_digest_mismatch)."""


class BusyError(RedisUnavailableError):
    """A request waited its whole queue timeout for a handler slot (503 with Retry-After)."""


# -- request helpers ----------------------------------------------------------------


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing more than ``limit`` bytes by Content-Length or as streamed."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise RequestInvalidError([FieldError(loc=["header", "content-length"], msg="not an integer",
                                                  type="int_parsing")]) from None
        if length > limit:
            raise BodyTooLargeError(f"request body of {length} bytes is over the {limit} byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(f"request body is over the {limit} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def by_method(**endpoints: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """One endpoint serving several methods of a path (HEAD as GET)."""

    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await endpoints[method](request)

    return dispatch


def parse_model(model: type[BaseModel], body: bytes) -> Any:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise RequestInvalidError(
            [
                FieldError(loc=["body", *[p for p in e["loc"]]], msg=e["msg"], type=e["type"])
                for e in exc.errors(include_url=False, include_input=False, include_context=False)
            ]
        ) from exc


def agent_id_param(request: Request) -> str:
    value = request.path_params["agent_id"]
    if not is_name(value):
        raise RequestInvalidError(
            [FieldError(loc=["path", "agent_id"], msg=f"must match {NAME_PATTERN} (at most {NAME_MAX} chars)",
                        type="string_pattern_mismatch")]
        )
    return str(value)


def query_param(request: Request, name: str, pattern: str | None = None, max_length: int = 256) -> str | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    if len(value) > max_length or (pattern is not None and not re.fullmatch(pattern, value)):
        raise RequestInvalidError(
            [FieldError(loc=["query", name], msg=f"invalid value (max {max_length} chars"
                        + (f", pattern {pattern})" if pattern else ")"), type="value_error")]
        )
    return value


def json_model(model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json",
                    headers=headers)


def error_json(status_code: int, error: str, detail: Any, headers: Mapping[str, str] | None = None,
               **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status_code, headers=headers)


async def _in_own_thread(name: str, run: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event) -> None:
    """``run(its_stop)`` on a new event loop in a thread, until ``stop`` is set (or this is cancelled)."""
    started: "concurrent.futures.Future[tuple[asyncio.AbstractEventLoop, asyncio.Event]]" = concurrent.futures.Future()

    async def main() -> None:
        own = asyncio.Event()
        started.set_result((asyncio.get_running_loop(), own))
        await run(own)

    def target() -> None:
        try:
            asyncio.run(main())
        except Exception:  # run() logs and retries its own faults: this is a bug, not a fault
            log.exception("%s stopped unexpectedly", name)
        finally:
            if not started.done():
                started.set_exception(RuntimeError(f"{name} did not start"))

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    loop, own = await asyncio.wrap_future(started)
    try:
        await stop.wait()
    finally:
        loop.call_soon_threadsafe(own.set)
        await asyncio.shield(asyncio.to_thread(thread.join, 30))


# -- the app ------------------------------------------------------------------------


class RegistryApp:
    """Handlers and the state they share; built by :func:`create_app`."""

    def __init__(self, config: RegistryConfig) -> None:
        self.config = config
        self.auth = Authorizer.create(config.secret, config.admin_token, swarm=config.swarm,
                                      enabled=config.auth_enabled)
        self.metrics = RegistryMetrics()
        #: canonical JSON of the catalogs PATCH /catalog writes, agent by agent (reused between patches)
        self._catalog_text = CatalogText()  # canonical JSON and digest (PUT, PATCH)
        self._catalog_json = AgentsDocumentText()  # the body of GET /catalog
        retry = redis_retry(2)
        # Blocking: a burst waits for a free connection (up to the pool timeout) instead of
        # failing with "Too many connections" like redis-py's default pool.
        self.redis = async_client(
            config.redis_url, swarm=config.swarm, blocking_pool=True, max_connections=config.redis_max_connections,
            timeout=config.redis_pool_timeout, socket_timeout=5, socket_connect_timeout=2, retry=retry,
        )
        self._slots = asyncio.Semaphore(config.max_concurrency)
        # The watch reader blocks in XREAD on its own connection: its socket timeout is the
        # block time plus a margin, so a silently dropped connection reconnects, not hangs.
        self.reader = reader_client(config.redis_url, block_ms=config.watch_block_ms,
                                    margin=config.watch_read_margin, retry=retry, swarm=config.swarm)
        self.store = RegistryStore(self.redis, config.swarm, events_maxlen=config.events_maxlen)
        self.bus_metrics = self.metrics.add_bus(self.redis, config.swarm)
        self.hub = WatchHub(self.reader, self.store, queue_size=config.watch_queue_size,
                            block_ms=config.watch_block_ms)
        self.sweeper = LeaseSweeper(
            self.store,
            self.metrics,
            interval=config.sweep_interval,
            ttl_seconds=self._catalog_ttl,
            min_protect=config.min_protect,
            ratio=config.protect_ratio,
            on_new_redis=self._restore_bus_users,
        )
        self.prober: Any = None  # swarm.bus.prober.HealthProber once started
        self.router: Any = None  # swarm.bus.router.Router once started
        # Bound metric children: .labels() costs a lock and a dict lookup per request.
        self._heartbeat_ok = self.metrics.heartbeats.labels(result="ok")
        self._heartbeat_unknown = self.metrics.heartbeats.labels(result="unknown")

    async def _catalog_ttl(self) -> float | None:
        state = await self.store.get_catalog()
        return float(state.catalog.settings.ttl_seconds) if state else None

    async def catalog(self) -> RegistryCatalog | None:
        state = await self.store.get_catalog()
        return state.catalog if state else None

    # -- read access -------------------------------------------------------------

    async def read_access(self, request: Request, catalog: RegistryCatalog | None,
                          agent_ids: Iterable[str] = ()) -> Reader:
        """Who reads (see :meth:`Authorizer.reader`); 401/403 when the read is not allowed.

        An agent's token counts for the agents the catalog declares, ``agent_ids``
        (those the handler already has) and, with ``allow_undeclared``, the agents
        registered now.
        """
        if not self.auth.enabled:
            return EVERYONE
        public = catalog is not None and catalog.settings.public_reads
        ids = set(agent_ids)
        if catalog is not None:
            ids.update(catalog.agents)
        header = request.headers.get("authorization")
        try:
            return self.auth.reader(header, public=public, agent_ids=ids)
        except ForbiddenError:
            if catalog is None or not catalog.settings.allow_undeclared:
                raise
            registered = set(await self.store.registered_ids()) - ids
            return self.auth.reader(header, public=public, agent_ids=registered)

    @staticmethod
    def private_fields(catalog: RegistryCatalog | None) -> frozenset[str]:
        if catalog is None:
            return frozenset(DEFAULT_PRIVATE_METADATA)
        return frozenset(catalog.settings.private_metadata)

    @staticmethod
    def visible(reg: Registration, reader: Reader, private: frozenset[str]) -> Registration:
        """``reg`` as ``reader`` may see it: private metadata only for the agent itself and the admin."""
        if reader.sees_private_of(reg.agent_id) or not private & reg.metadata.keys():
            return reg
        return reg.model_copy(update={"metadata": {k: v for k, v in reg.metadata.items() if k not in private}})

    # -- lifespan --------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(self.sweeper.run(stop), name="lease-sweeper"),
            asyncio.create_task(self.hub.run(stop), name="watch-hub"),
        ]
        prober_task = self.start_prober(stop)
        if prober_task is not None:
            tasks.append(prober_task)
        router_task = self.start_router(stop)
        if router_task is not None:
            tasks.append(router_task)
        if self.config.heap_settle_seconds > 0:
            from swarm.heap import settle_every

            tasks.append(asyncio.create_task(settle_every(stop, self.config.heap_settle_seconds), name="heap-settle"))
        try:
            yield
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.reader.aclose()
            await self.redis.aclose()

    async def _restore_bus_users(self) -> None:
        """Re-create the agents' missing Redis users (they live in memory only: a Redis restart,
        even with the append-only file, forgets them). The reconcile daemon does the same within
        about a second; this covers a registry running without one. Needs the bus secret."""
        from swarm.reconcile.heal import restore_missing_users

        created = await restore_missing_users(self.redis, self.config.swarm, self.config.bus_secret)
        if created:
            log.warning("Redis lost %d agent users (restart?); re-created: %s", len(created), ", ".join(created))

    def start_prober(self, stop: asyncio.Event) -> asyncio.Task[None] | None:
        """Run the bus's :class:`~swarm.bus.prober.HealthProber` unless ``--no-probe``.

        It probes each live agent's health_url and feeds the agent's circuit breaker,
        which GET /agents reports as ``critical``; it reads everything from Redis
        itself, so several registry processes may each run one.
        """
        if not self.config.probe:
            return None
        from swarm.bus.prober import HealthProber

        # No --probe-interval: the spec's bus.breaker.probe_interval_seconds (bus.json), re-read every round.
        self.prober = HealthProber(self.redis, self.config.swarm, interval=self.config.probe_interval)
        return asyncio.create_task(self.prober.run(stop), name="health-prober")

    def start_router(self, stop: asyncio.Event) -> asyncio.Task[None] | None:
        """Run the bus's trusted :class:`~swarm.bus.router.Router` unless ``--no-route``.

        It moves agents' outbox entries to the topic logs and subscribers' inboxes; it
        has its own Redis connections (one blocks in XREADGROUP) and shares the work
        with every other router of the swarm (registry processes or ``swarm bus route``)
        through one consumer group. It waits, logging, until the bus is installed.

        It runs on an event loop of its own, in a thread: its upkeep at 10,000 agents parses
        tens of thousands of replies every few seconds, and on this loop every request
        (heartbeats, PATCH /catalog) waited for each stretch of that; in a thread they share
        the interpreter by its switch interval instead.
        """
        if not self.config.route:
            return None
        from swarm.bus.router import Router

        self.router = Router(redis_url=self.config.redis_url, swarm=self.config.swarm,
                             metrics=self.metrics.registry)
        return asyncio.create_task(_in_own_thread("bus-router", self.router.run, stop), name="bus-router")

    # -- agents ----------------------------------------------------------------

    async def register(self, request: Request) -> Response:
        req: RegisterRequest = parse_model(RegisterRequest, await read_body(request, self.config.max_body_bytes))
        self.auth.require_agent(request.headers.get("authorization"), req.agent_id)
        catalog = await self.catalog()
        if catalog is None:
            raise NoCatalogError("no catalog loaded: push one with `swarm registry push` first")
        fields = resolve_registration(req, catalog)
        outcome = await self.store.register(fields, catalog)
        self.metrics.registrations.labels(result=outcome.kind).inc()
        return json_model(outcome.registration, 201 if outcome.kind == "registered" else 200)

    async def heartbeat(self, request: Request) -> Response:
        agent_id = agent_id_param(request)
        self.auth.require_agent(request.headers.get("authorization"), agent_id)
        renewed = await self.store.heartbeat(agent_id)
        if renewed is None:
            self._heartbeat_unknown.inc()
            return error_json(404, "not_registered", f"agent {agent_id!r} is not registered (lease expired or "
                              "never registered): register again")
        self._heartbeat_ok.inc()
        expiry, ttl_ms, hb_ms = renewed
        # The Heartbeat model's JSON, formatted directly (hot path; the id matched NAME_PATTERN,
        # so it needs no escaping). test_server checks it against the model.
        body = (f'{{"agent_id":"{agent_id}","lease_expires_at":{expiry},"ttl_seconds":{ttl_ms // 1000},'
                f'"heartbeat_interval":{hb_ms / 1000}}}')
        return Response(body, media_type="application/json")

    async def deregister(self, request: Request) -> Response:
        """204 also when the agent was already gone: DELETE is idempotent."""
        agent_id = agent_id_param(request)
        self.auth.require_agent(request.headers.get("authorization"), agent_id)
        if await self.store.deregister(agent_id) is not None:
            self.metrics.deregistrations.inc()
        return Response(status_code=204)

    async def get_agent(self, request: Request) -> Response:
        agent_id = agent_id_param(request)
        catalog = await self.catalog()
        reader = await self.read_access(request, catalog, [agent_id])
        reg = await self.store.get(agent_id, catalog)
        if reg is None:
            return error_json(404, "not_registered", f"agent {agent_id!r} is not registered")
        return json_model(self.visible(reg, reader, self.private_fields(catalog)))

    async def list_agents(self, request: Request) -> Response:
        capability = query_param(request, "capability", max_length=128)
        topic = query_param(request, "topic", max_length=249)
        role = query_param(request, "role", max_length=NAME_MAX)
        status = query_param(request, "status", pattern=_STATUS_PATTERN)
        catalog = await self.catalog()
        reader = await self.read_access(request, catalog)  # before the listing: a refusal costs little
        private = self.private_fields(catalog)

        def chunk(batch: list[Registration]) -> list[bytes]:
            return [self.visible(a, reader, private).model_dump_json().encode() for a in batch
                    if (capability is None or capability in a.capabilities)
                    and (topic is None or topic in a.topics.publish or topic in a.topics.subscribe)
                    and (role is None or a.role == role)
                    and (status is None or a.status == status)]

        # Streamed a batch at a time (10,000 agents are ~10 MB of JSON): the same bytes
        # as AgentList(...).model_dump_json(). The first batch is read before the
        # response starts, so a Redis failure then is still a 503.
        batches = self.store.list_batches(catalog, LIST_BATCH)
        first = await anext(batches, None)

        async def body() -> AsyncIterator[bytes]:
            count = 0
            try:
                pending = first
                sep = b'{"agents":['
                while pending is not None:
                    items = chunk(pending)
                    if items:
                        yield sep + b",".join(items)
                        sep = b","
                        count += len(items)
                    pending = await anext(batches, None)
                yield (b'{"agents":[' if count == 0 else b"") + b'],"count":' + str(count).encode() + b"}"
            finally:
                await batches.aclose()

        return StreamingResponse(body(), media_type="application/json")

    async def watch(self, request: Request) -> Response:
        capability = query_param(request, "capability", max_length=128)
        topic = query_param(request, "topic", max_length=249)
        catalog = await self.catalog()
        reader = await self.read_access(request, catalog)
        private = self.private_fields(catalog)
        raw_last = request.headers.get("last-event-id") or query_param(request, "last_event_id", max_length=64)
        last: str | None = None
        if raw_last is not None:
            last = parse_stream_id(raw_last)
            if last is None:
                raise RequestInvalidError([FieldError(loc=["header", "last-event-id"],
                                                      msg="not a stream id (ms-seq)", type="value_error")])
        if last is None:
            start, reset = await self.store.last_event_id(), False
        else:
            start, reset = last, await self.store.trimmed_past(last)

        # sse-starlette sets this when the server shuts down, then waits up to the grace
        # period for the stream to end by itself: ending it (rather than being cancelled)
        # completes the chunked body, so clients see a clean end, not a protocol error.
        shutdown = anyio.Event()

        async def stream() -> AsyncIterator[dict[str, str] | bytes]:
            # Subscribed only once the body is really streamed: a response that is never
            # iterated (HEAD, a client gone before the first byte) must not leave a
            # subscriber behind. No gap: event_stream reads the backlog after `start`
            # only after this subscription, and skips live entries it already sent.
            sub = self.hub.subscribe()
            self.metrics.watchers.inc()
            closer = asyncio.create_task(_close_on(shutdown, sub))
            try:
                async for event in event_stream(self.hub, sub, start_after=start, reset=reset,
                                                capability=capability, topic=topic,
                                                private=private, reader=reader,
                                                ping_interval=self.config.ping_interval):
                    yield event
            finally:
                closer.cancel()
                self.hub.unsubscribe(sub)
                self.metrics.watchers.dec()

        # ping=0: sse-starlette's own ping task is off; event_stream pings while idle, never
        # between the chunks of one event (the reset snapshot is written in several)
        return EventSourceResponse(stream(), ping=0, sep=SSE_SEP,
                                   shutdown_event=shutdown, shutdown_grace_period=SSE_SHUTDOWN_GRACE,
                                   headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # -- catalog ------------------------------------------------------------------

    async def put_catalog(self, request: Request) -> Response:
        self.auth.require_admin(request.headers.get("authorization"))
        body: CatalogPut = parse_model(CatalogPut, await read_body(request, self.config.max_catalog_bytes))
        if body.catalog.swarm != self.config.swarm:
            raise SwarmMismatchError(
                f"catalog is for swarm {body.catalog.swarm!r} but this registry serves {self.config.swarm!r}"
            )
        # through the memo of agent texts: the next PATCH then re-derives only what it changes
        text = self._catalog_text.text(body.catalog)
        result = await self.store.put_catalog(body.catalog, body.revision, hashlib.sha256(text.encode()).hexdigest(),
                                              text)
        return json_model(result)

    async def patch_catalog(self, request: Request) -> Response:
        """Apply a partial update on top of the stored catalog whose digest is ``base_digest``.

        The patched catalog is built here (pure: :func:`swarm.desired.patched_catalog`) and its
        digest computed as PUT computes it; the write itself is a compare-and-set in one Lua
        script, so a push that lands between the read and the write makes this one a 409.
        """
        self.auth.require_admin(request.headers.get("authorization"))
        body: CatalogPatch = parse_model(CatalogPatch, await read_body(request, self.config.max_catalog_bytes))
        state = await self.store.get_catalog()
        if state is None or state.digest != body.base_digest:
            raise BaseDigestMismatchError(
                f"the stored catalog's digest is {state.digest if state else '(none: no catalog pushed)'}, "
                f"not the base_digest {body.base_digest}: push the whole catalog (PUT /catalog)"
            )
        delta = CatalogDelta(upsert=body.upsert, remove=body.remove, spec_digest=body.spec_digest,
                             settings=body.settings)
        catalog, problems = patched_catalog(state.catalog, delta, is_name)
        if catalog is None:
            raise RequestInvalidError([FieldError(loc=["body", *loc], msg=msg, type=kind) for loc, msg, kind in problems])
        text = self._catalog_text.text(catalog)
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest != body.digest:
            raise RequestInvalidError([FieldError(
                loc=["body", "digest"], type="digest_mismatch",
                msg=f"the patched catalog's digest is {digest}, not {body.digest}: the patch does not give the "
                    "catalog it was made for",
            )])
        result = await self.store.patch_catalog(body.base_digest, catalog, body.revision, digest, text)
        if result is None:
            raise BaseDigestMismatchError(
                f"the stored catalog changed while the patch was applied (base_digest {body.base_digest}): "
                "push the whole catalog (PUT /catalog)"
            )
        return json_model(result)

    async def get_catalog(self, request: Request) -> Response:
        state = await self.store.get_catalog()
        reader = await self.read_access(request, state.catalog if state else None)
        if state is None:
            return error_json(404, "no_catalog", "no catalog has been pushed")
        private = self.private_fields(state.catalog)
        hidden = [a for a in state.catalog.agents.values()
                  if not reader.sees_private_of(a.agent_id) and private & a.metadata.keys()]
        if hidden:
            agents = dict(state.catalog.agents)
            for a in hidden:
                agents[a.agent_id] = a.model_copy(update={"metadata": redact_metadata(
                    {"metadata": a.metadata}, private)["metadata"]})
            state = state.model_copy(update={"catalog": state.catalog.model_copy(update={"agents": agents})})
            return json_model(state)
        # the whole catalog: its agents' JSON texts are kept between changes (4 MB at 10,000 agents)
        head = state.model_dump_json(exclude={"catalog"})
        return Response(head[:-1] + ',"catalog":' + self._catalog_json.text(state.catalog) + "}",
                        media_type="application/json")

    # -- health and status ------------------------------------------------------------

    async def counts(self) -> tuple[AgentCounts, CatalogState | None]:
        """Agent counts (also set as gauges) and the catalog state they were counted against."""
        state = await self.store.get_catalog()
        catalog = state.catalog if state else None
        agents = await self.store.list(catalog)
        by = {s: sum(1 for a in agents if a.status == s) for s in AGENT_STATUSES}
        self.metrics.set_agent_counts(by)
        return AgentCounts(declared=len(catalog.agents) if catalog else 0, live=len(agents), **by), state

    async def status(self, request: Request) -> Response:
        await self.read_access(request, await self.catalog())
        counts, state = await self.counts()
        protection = await self.store.protection()
        return json_model(Status(
            swarm=self.config.swarm,
            reconcile=await self.store.reconcile_status(),
            catalog=CatalogPutResult(revision=state.revision, digest=state.digest, changed=False) if state else None,
            agents=counts,
            protection=protection,
            last_sweep=self.sweeper.last,
        ))

    async def git_hook(self, request: Request) -> Response:
        """A push webhook (GitHub or GitLab form): the reconciler following a branch fetches now."""
        from swarm.registry.webhook import MAX_HOOK_BYTES, HookRefused, is_ping, verify_git_webhook

        secret = self.config.git_webhook_secret
        if secret is None:
            return error_json(404, "not_configured", "the git webhook is off: set SWARM_GIT_WEBHOOK_SECRET "
                                                     "on the registry to accept POST /hooks/git")
        body = await read_body(request, MAX_HOOK_BYTES)
        try:
            form = verify_git_webhook(request.headers, body, secret)
        except HookRefused as exc:
            log.warning("refused a git webhook from %s: %s", request.client.host if request.client else "?", exc)
            return error_json(401, "unauthorized", str(exc))
        if is_ping(request.headers):
            return JSONResponse({"accepted": False, "form": form, "detail": "ping: nothing to fetch"})
        deliveries = int(await self.redis.incr(self.store.keys.git_hook))
        return JSONResponse({"accepted": True, "form": form, "deliveries": deliveries}, status_code=202)

    async def health(self, request: Request) -> Response:
        redis_ok = await self.store.ping()
        catalog_loaded, agents, protection = False, None, None
        if redis_ok:
            try:
                catalog_loaded = await self.store.get_catalog() is not None
                agents = int(await self.redis.zcard(self.store.keys.leases))
                protection = await self.store.protection()
            except REDIS_TROUBLE + (rexc.RedisError, OSError):
                redis_ok = False
        ok = redis_ok and catalog_loaded
        return json_model(Health(status="ok" if ok else "degraded", redis=redis_ok,
                                 catalog_loaded=catalog_loaded, agents=agents, protection=protection))

    async def live(self, request: Request) -> Response:
        return JSONResponse({"status": "live"})

    async def ready(self, request: Request) -> Response:
        if not await self.store.ping():
            return error_json(503, "redis_unavailable", "redis is unreachable",
                              headers={"Retry-After": str(self.config.retry_after_seconds)})
        try:
            loaded = await self.store.get_catalog() is not None
        except REDIS_TROUBLE:
            loaded = False
        if not loaded:
            return error_json(503, "no_catalog", "no catalog loaded",
                              headers={"Retry-After": str(self.config.retry_after_seconds)})
        return JSONResponse({"status": "ready"})

    async def metrics_endpoint(self, request: Request) -> Response:
        with contextlib.suppress(*REDIS_TROUBLE):
            await self.counts()
        await self.bus_metrics.refresh()  # swarm_bus_*: read at scrape time, never raises for Redis trouble
        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())

    # -- wiring -------------------------------------------------------------------

    def timed(self, route: str, endpoint: Callable[[Request], Awaitable[Response]], *, queued: bool = True
              ) -> Callable[[Request], Awaitable[Response]]:
        """The endpoint with its latency metric and error mapping; ``queued``: it waits for a handler slot."""
        histogram = self.metrics.request_latency
        children: dict[str, Any] = {}
        slots, wait = self._slots, self.config.queue_timeout

        async def handler(request: Request) -> Response:
            started = time.perf_counter()
            try:
                if not queued:
                    return await endpoint(request)
                if slots.locked():  # wait_for wraps the wait in a task (~20 µs): only when it must wait
                    try:
                        await asyncio.wait_for(slots.acquire(), wait)
                    except asyncio.TimeoutError:
                        raise BusyError(f"busy: no handler slot within {wait} s; retry later") from None
                else:
                    await slots.acquire()  # a free slot: taken at once, no suspension
                try:
                    # the watch's stream runs after this returns: it holds no slot while it streams
                    return await endpoint(request)
                finally:
                    slots.release()
            except Exception as exc:
                return self.error_response(request, exc)
            finally:
                child = children.get(request.method)
                if child is None:
                    child = children[request.method] = histogram.labels(route=route, method=request.method)
                child.observe(time.perf_counter() - started)

        return handler

    def error_response(self, request: Request, exc: Exception) -> Response:
        retry = {"Retry-After": str(self.config.retry_after_seconds)}
        if isinstance(exc, RequestInvalidError):
            return error_json(422, "invalid", [e.model_dump() for e in exc.errors])
        if isinstance(exc, BodyTooLargeError):
            return error_json(413, "too_large", str(exc))
        if isinstance(exc, MissingTokenError):
            return error_json(401, "unauthorized", str(exc), headers={"WWW-Authenticate": "Bearer"})
        if isinstance(exc, ForbiddenError):
            return error_json(403, "forbidden", str(exc))
        if isinstance(exc, HealthUrlError):
            # a refusal by policy (the prober must only reach the agent's own address), like the
            # catalog's: 403, so a well-formed body the guard refuses is not called malformed
            return error_json(403, "health_url_refused", str(exc), fields=["health_url"])
        if isinstance(exc, NotDeclaredError):
            return error_json(403, "not_declared", str(exc))
        if isinstance(exc, FieldConflictError):
            return error_json(409, "conflict", str(exc), fields=exc.fields)
        if isinstance(exc, BaseDigestMismatchError):
            return error_json(409, "base_digest_mismatch", str(exc))
        if isinstance(exc, SwarmMismatchError):
            return error_json(409, "swarm_mismatch", str(exc))
        if isinstance(exc, NoCatalogError):
            return error_json(503, "no_catalog", str(exc), headers=retry)
        if isinstance(exc, BusyError):
            return error_json(503, "busy", str(exc), headers=retry)
        if isinstance(exc, RedisRefusedError):
            # a refusal that will not pass by itself (NOPERM, WRONGTYPE): the operator must act
            log.error("%s %s: 503: %s", request.method, request.url.path, exc)
            return error_json(503, "redis_refused", str(exc), headers=retry)
        if isinstance(exc, (RedisUnavailableError, rexc.RedisError)):
            # Redis down or refusing (OOM, READONLY, NOPERM, BUSY): the client retries later.
            log.warning("%s %s: 503: %s", request.method, request.url.path, exc)
            return error_json(503, "redis_unavailable", str(exc), headers=retry)
        if isinstance(exc, HTTPException):
            return error_json(exc.status_code, "http", exc.detail)
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_json(500, "internal", "internal server error")

    def routes(self) -> list[Route]:
        t = self.timed
        return [
            Route("/agents/register", t("/agents/register", self.register), methods=["POST"]),
            Route("/agents/watch", t("/agents/watch", self.watch), methods=["GET"]),
            Route("/agents/{agent_id}/heartbeat", t("/agents/{agent_id}/heartbeat", self.heartbeat),
                  methods=["POST"]),
            # one route per path, so a 405 lists every method of the path in Allow
            Route("/agents/{agent_id}", t("/agents/{agent_id}", by_method(GET=self.get_agent, DELETE=self.deregister)),
                  methods=["GET", "DELETE"]),
            Route("/agents", t("/agents", self.list_agents), methods=["GET"]),
            Route("/catalog", t("/catalog", by_method(GET=self.get_catalog, PUT=self.put_catalog,
                                                           PATCH=self.patch_catalog)),
                  methods=["GET", "PUT", "PATCH"]),
            Route("/status", t("/status", self.status), methods=["GET"]),
            Route("/hooks/git", t("/hooks/git", self.git_hook), methods=["POST"]),
            Route("/health", t("/health", self.health), methods=["GET"]),
            Route("/health/live", t("/health/live", self.live, queued=False), methods=["GET"]),
            Route("/health/ready", t("/health/ready", self.ready), methods=["GET"]),
            Route("/metrics", self.metrics_endpoint, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            *self.ui_routes(),
        ]

    def ui_routes(self) -> list[Any]:
        """The dashboard: ``/ui/`` pages and ``/ui/api/*`` reads (``swarm/registry/ui.py``)."""
        from swarm.registry.ui import ui_routes

        return ui_routes(self)


async def _close_on(shutdown: anyio.Event, sub: Subscriber) -> None:
    await shutdown.wait()
    sub.close()


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_json(exc.status_code, "http", exc.detail, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    return error_json(500, "internal", "internal server error")


def create_app(config: RegistryConfig) -> Starlette:
    """Build the registry app; its lifespan starts the sweeper, watch hub and prober."""
    registry = RegistryApp(config)
    app = Starlette(
        routes=registry.routes(),
        lifespan=registry.lifespan,
        exception_handlers={HTTPException: _http_exception, Exception: _internal_error},
    )
    app.state.registry = registry
    return app
