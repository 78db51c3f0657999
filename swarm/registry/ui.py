"""The registry's live dashboard: static pages at ``/ui/`` and the read endpoints they need.

The pages (``swarm/registry/static/``: hand-written HTML, CSS and vanilla JavaScript, no
build step, no external network) ask for a read token once, keep it in the browser's
sessionStorage (localStorage when "remember" is ticked) and send it as ``Authorization:
Bearer`` on every fetch. The agents table follows ``GET /agents/watch`` through ``fetch()``
and a ReadableStream (EventSource cannot send headers). Every agent-controlled string is
put into the DOM with ``textContent``; the pages are served with a Content-Security-Policy
of ``default-src 'self'`` (no inline script or style).

Auth: the page shell (``/ui/``, ``/ui/app.js``, ``/ui/app.css``) is served without a token;
every ``/ui/api/*`` endpoint needs the **read token or the admin token** (401 without one,
403 for anything else), whatever ``public_reads`` says: they show message payloads and the
whole ACL table, which an agent's token (or no token) must not read — the bus lets an agent
read only its own inbox. The agents table itself uses ``GET /agents`` and the watch, whose
rules are the API's (``auth.py``). With ``--insecure`` everything is open, like the API.

Read endpoints (documented in ``openapi.py``; sizes bounded):

* ``GET /ui/api/overview``: protection mode, every registered agent's breaker hash (at most
  :data:`MAX_AGENTS`), the open ones, the reconcile state;
* ``GET /ui/api/agents/{agent_id}``: registration, declaration, breaker hash fields, the
  breaker's last transitions from the watch event stream (the prober stores no probe
  history: its transitions are the history), effective topic rights, inbox backlog;
* ``GET /ui/api/topics`` and ``GET /ui/api/topics/{topic}/messages?count=N`` (N ≤ 100,
  payloads cut): :mod:`swarm.bus.inspect`, as ``swarm topics``, on the bus plan in Redis;
* ``GET /ui/api/acl``: the role × topic matrix computed with :mod:`swarm.acl` from the ACL
  table in Redis (equal to ``compiled/<swarm>/acl.json``'s ``table``) and each agent's rights;
* ``GET /ui/api/sync``: the reconcile status, the last :data:`HISTORY_COUNT` passes
  (``swarm:{N}:history``) and who holds the reconcile lease.
"""

from __future__ import annotations

import json
import re
import time
from importlib import resources
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypeVar, cast

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from swarm.acl import AclTable
from swarm.desired import AclDocument, BusPlan
from swarm.keys import SwarmKeys, as_text, event_data
from swarm.registry.auth import EVERYONE, ForbiddenError, MissingTokenError, Reader, bearer_token
from swarm.registry.models import FieldError, redact_metadata
from swarm.registry.store import redis_errors
from swarm.spec.models import NAME_MAX, NAME_PATTERN, TOPIC_PATTERN

_Doc = TypeVar("_Doc", bound=BaseModel)

if TYPE_CHECKING:
    from swarm.registry.server import RegistryApp

#: Agents whose breakers one overview lists.
MAX_AGENTS = 10_000
#: Passes of the history stream the sync view shows.
HISTORY_COUNT = 20
#: Watch events scanned (newest first) for one agent's breaker transitions, and how many are kept.
EVENTS_SCANNED = 2000
TRANSITIONS_KEPT = 20
#: Messages a message view returns by default (``count`` may ask for up to 100).
DEFAULT_MESSAGES = 20

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
#: The static files served (nothing else under /ui/ is a file).
STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "app.css": "text/css; charset=utf-8"}

_TOPIC = re.compile(TOPIC_PATTERN)
_NAME = re.compile(NAME_PATTERN)


def static_file(name: str) -> bytes:
    return resources.files("swarm.registry").joinpath("static", name).read_bytes()


class DashboardApi:
    """The handlers; one per registry app (``ui_routes``)."""

    def __init__(self, registry: "RegistryApp") -> None:
        self.registry = registry
        self.keys = SwarmKeys(registry.config.swarm)
        self.redis = registry.redis

    # -- auth -------------------------------------------------------------------

    def reader(self, request: Request) -> Reader:
        """The read or the admin token (see the module docstring); 401 without one, 403 otherwise."""
        auth = self.registry.auth
        if not auth.enabled:
            return EVERYONE
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            raise MissingTokenError("missing bearer token: the dashboard needs the read token "
                                    "(`swarm token --read` prints it) or the admin token")
        operator = auth.operator(token)
        if operator is not None:
            return operator
        raise ForbiddenError("the dashboard's data needs the read token or the admin token "
                             "(an agent's token does not grant it)")

    # -- Redis reads --------------------------------------------------------------

    async def _stored(self, key: str, model: type[_Doc], what: str, missing: str) -> tuple[_Doc | None, str | None]:
        """The JSON document the reconciler stores at ``key``, or (None, why not)."""
        async with redis_errors(f"{what} read"):
            raw = await self.redis.get(key)
        if raw is None:
            return None, f"{missing} (no {key}): run `swarm bus apply` or `swarm reconcile`"
        try:
            return model.model_validate_json(raw), None
        except ValidationError as exc:
            return None, f"{key} does not hold a valid {what}: {exc.error_count()} error(s)"

    async def bus_plan(self) -> tuple[BusPlan | None, str | None]:
        return await self._stored(self.keys.bus, BusPlan, "bus plan", "the bus is not installed")

    async def acl_document(self) -> tuple[AclDocument | None, str | None]:
        return await self._stored(self.keys.acl, AclDocument, "ACL table", "no ACL table in Redis")

    async def breakers(self, ids: list[str]) -> dict[str, dict[str, str]]:
        async with redis_errors("breaker read"):
            pipe = self.redis.pipeline(transaction=False)
            for agent_id in ids:
                pipe.hgetall(self.keys.breaker(agent_id))
            rows = await pipe.execute() if ids else []
        return {agent_id: {as_text(k): as_text(v) for k, v in row.items()}
                for agent_id, row in zip(ids, rows) if row}

    # -- endpoints ------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        self.reader(request)
        async with redis_errors("overview read"):
            ids = [as_text(m) for m in await self.redis.zrange(self.keys.leases, 0, MAX_AGENTS - 1)]
            protection = bool(await self.redis.exists(self.keys.protection))
            status = await self.registry.store.reconcile_status()
        breakers = await self.breakers(ids)
        open_ = sorted(a for a, b in breakers.items() if b.get("state") in ("open", "half_open"))
        return JSONResponse({
            "swarm": self.registry.config.swarm, "now_ms": int(time.time() * 1000), "protection": protection,
            "registered": len(ids), "breakers": breakers, "breakers_open": open_,
            "reconcile_state": (status or {}).get("state"), "reconcile_message": (status or {}).get("message"),
        })

    async def agent(self, request: Request) -> Response:
        from swarm.registry.server import RequestInvalidError, error_json

        agent_id = request.path_params["agent_id"]
        if len(agent_id) > NAME_MAX or not _NAME.fullmatch(agent_id):
            raise RequestInvalidError([FieldError(loc=["path", "agent_id"], msg=f"must match {NAME_PATTERN} "
                                                  f"(at most {NAME_MAX} chars)", type="string_pattern_mismatch")])
        reader = self.reader(request)
        registry = self.registry
        catalog = await registry.catalog()
        private = registry.private_fields(catalog)
        reg = await registry.store.get(agent_id, catalog)
        declared = catalog.agents.get(agent_id) if catalog else None
        breaker = (await self.breakers([agent_id])).get(agent_id)
        if reg is None and declared is None and breaker is None:
            return error_json(404, "not_found", f"agent {agent_id!r} is neither registered nor declared")
        declared_doc = None
        if declared is not None:
            declared_doc = declared.model_dump(mode="json")
            if not reader.sees_private_of(agent_id):
                declared_doc = redact_metadata(declared_doc, private)
        async with redis_errors("event read"):
            events = cast("list[tuple[Any, dict[Any, Any]]]",
                          await self.redis.xrevrange(self.keys.events, count=EVENTS_SCANNED))
        transitions: list[dict[str, Any]] = []
        for entry_id, fields in events:
            f = {as_text(k): as_text(v) for k, v in fields.items()}
            if f.get("agent") == agent_id and f.get("type", "").startswith("breaker-"):
                transitions.append({"id": as_text(entry_id), "type": f["type"], "data": event_data(f.get("data", "{}"))})
                if len(transitions) >= TRANSITIONS_KEPT:
                    break
        plan, _ = await self.bus_plan()
        rights = plan.agents.get(agent_id) if plan else None
        inbox = None
        if rights is not None:
            async with redis_errors("inbox read"):
                inbox = {"waiting": int(await self.redis.xlen(rights.inbox)),
                         "dead_letters": int(await self.redis.xlen(rights.dead_letter_stream))}
        return JSONResponse({
            "agent_id": agent_id,
            "registration": registry.visible(reg, reader, private).model_dump(mode="json") if reg else None,
            "declared": declared_doc,
            "breaker": breaker,
            "breaker_transitions": transitions,
            "rights": {"role": rights.role, "publish": rights.publish, "subscribe": rights.subscribe} if rights else None,
            "inbox": inbox,
        })

    async def topics(self, request: Request) -> Response:
        from swarm.bus.inspect import gather_topics

        self.reader(request)
        plan, why = await self.bus_plan()
        if plan is None:
            return JSONResponse({"installed": False, "detail": why, "topics": [], "inboxes": []})
        async with redis_errors("bus read"):
            doc = await gather_topics(self.redis, plan)
        return JSONResponse({"installed": True, "detail": None, **doc})

    async def messages(self, request: Request) -> Response:
        from swarm.bus.inspect import MAX_MESSAGES, topic_messages
        from swarm.registry.server import RequestInvalidError, error_json

        topic = request.path_params["topic"]
        if len(topic) > 249 or not _TOPIC.fullmatch(topic):
            raise RequestInvalidError([FieldError(loc=["path", "topic"], msg=f"must match {TOPIC_PATTERN}",
                                                  type="string_pattern_mismatch")])
        raw_count = request.query_params.get("count")
        count = DEFAULT_MESSAGES
        if raw_count is not None:
            if not re.fullmatch(r"[0-9]{1,3}", raw_count) or not 1 <= int(raw_count) <= MAX_MESSAGES:
                raise RequestInvalidError([FieldError(loc=["query", "count"],
                                                      msg=f"an integer from 1 to {MAX_MESSAGES}", type="value_error")])
            count = int(raw_count)
        self.reader(request)
        plan, why = await self.bus_plan()
        if plan is None or topic not in plan.topics:
            return error_json(404, "not_found", why or f"topic {topic!r} is not declared")
        async with redis_errors("topic read"):
            entries = await topic_messages(self.redis, plan, topic, count)
        return JSONResponse({"topic": topic, "count": len(entries), "messages": entries})

    async def acl(self, request: Request) -> Response:
        self.reader(request)
        doc, why = await self.acl_document()
        if doc is None:
            return JSONResponse({"installed": False, "detail": why, "roles": {}, "topics": [], "matrix": [],
                                 "agents": {}})
        plan, _ = await self.bus_plan()
        topics = sorted(plan.topics) if plan else sorted({row.topic for row in doc.table})
        table = AclTable.from_json(doc.model_dump(mode="json"))
        matrix = table.rows(topics)
        by_role = {(str(r["role"]), str(r["topic"])): r for r in matrix}
        agents = {
            agent_id: {
                "role": a.role, "publish": a.publish, "subscribe": a.subscribe,
                # what the role alone would allow on each topic (effective = declared AND allowed)
                "role_rights": [by_role[(a.role, t)] for t in topics if (a.role, t) in by_role],
            }
            for agent_id, a in sorted(doc.agents.items())
        }
        return JSONResponse({"installed": True, "detail": None, "swarm": doc.swarm, "spec_digest": doc.spec_digest,
                             "roles": {k: v.model_dump(mode="json") for k, v in doc.roles.items()},
                             "topics": topics, "matrix": matrix, "agents": agents})

    async def sync(self, request: Request) -> Response:
        from swarm.reconcile.history import parse_history_entry
        from swarm.reconcile.lease import parse_holder

        self.reader(request)
        async with redis_errors("sync read"):
            status = await self.registry.store.reconcile_status()
            entries = cast("list[tuple[Any, dict[Any, Any]]]",
                           await self.redis.xrevrange(self.keys.history, count=HISTORY_COUNT))
            pipe = self.redis.pipeline(transaction=False)
            pipe.get(self.keys.lease)
            pipe.pttl(self.keys.lease)
            pipe.hgetall(self.keys.standby)
            pipe.get(self.keys.pin)
            raw_lease, pttl, standby_raw, pin = await pipe.execute()
        history = []
        for entry_id, fields in entries:
            entry = parse_history_entry(as_text(entry_id), {as_text(k): as_text(v) for k, v in fields.items()})
            if entry is not None:
                history.append(entry.model_dump(mode="json"))
        holder = parse_holder(raw_lease)
        now_ms = int(time.time() * 1000)
        standby: dict[str, Any] = {}
        for owner, value in (standby_raw or {}).items():
            try:
                item = dict(json.loads(as_text(value)))
            except (ValueError, TypeError):
                continue
            if int(item.get("stale_after_ms", 0)) >= now_ms:
                standby[as_text(owner)] = item
        lease = None
        if holder is not None:
            lease = {"owner": holder.owner, "token": holder.token, "since_ms": holder.since_ms, "pid": holder.pid,
                     "host": holder.host, "ttl_ms": int(pttl or -2), "description": holder.describe()}
        return JSONResponse({"status": status, "history": history, "lease": lease, "standby": standby,
                             "pinned": json.loads(as_text(pin)) if pin else None,
                             # the status the reconciler writes holds no plan of the next pass
                             "next_plan": None})


def _page(name: str) -> Callable[[Request], Awaitable[Response]]:
    body, media = static_file(name), STATIC[name]

    async def serve(request: Request) -> Response:
        return Response(body, media_type=media, headers=PAGE_HEADERS)

    return serve


async def _to_slash(request: Request) -> Response:
    return RedirectResponse("/ui/", status_code=308)


def ui_routes(registry: "RegistryApp") -> list[BaseRoute]:
    """``/ui`` (redirect), ``Mount('/ui', ...)``: the pages and ``/ui/api/*``."""
    api = DashboardApi(registry)
    t = registry.timed
    return [
        Route("/ui", _to_slash, methods=["GET"], include_in_schema=False),
        Mount("/ui", routes=[
            Route("/", _page("index.html"), methods=["GET"]),
            Route("/app.js", _page("app.js"), methods=["GET"]),
            Route("/app.css", _page("app.css"), methods=["GET"]),
            Route("/api/overview", t("/ui/api/overview", api.overview), methods=["GET"]),
            Route("/api/agents/{agent_id}", t("/ui/api/agents/{agent_id}", api.agent), methods=["GET"]),
            Route("/api/topics", t("/ui/api/topics", api.topics), methods=["GET"]),
            Route("/api/topics/{topic}/messages", t("/ui/api/topics/{topic}/messages", api.messages),
                  methods=["GET"]),
            Route("/api/acl", t("/ui/api/acl", api.acl), methods=["GET"]),
            Route("/api/sync", t("/ui/api/sync", api.sync), methods=["GET"]),
        ]),
    ]
