"""The registry's OpenAPI 3.1 description, assembled from the pydantic models.

Served at /openapi.json by ``server.py`` and loaded by schemathesis in the
tests. Hand-assembled (rather than starlette's docstring-YAML SchemaGenerator)
so that every body schema comes from the same model that validates it: the
document cannot drift from the checks. OpenAPI 3.1 uses JSON Schema 2020-12,
which is what pydantic emits, so the schemas need no conversion.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from swarm.registry.models import (
    AGENT_STATUSES,
    EVENT_TYPES,
    AgentList,
    CatalogPatch,
    CatalogPut,
    CatalogPutResult,
    CatalogState,
    ErrorBody,
    Health,
    Heartbeat,
    RegisterRequest,
    Registration,
    Status,
    ValidationErrorBody,
)
from swarm.spec.models import NAME_MAX, NAME_PATTERN, TOPIC_PATTERN

_MODELS: list[type[BaseModel]] = [RegisterRequest, Registration, AgentList, Heartbeat, CatalogPut, CatalogPatch, CatalogState, CatalogPutResult,
           ErrorBody, ValidationErrorBody, Health, Status]


#: One event of GET /agents/watch, as an SSE parser sees it (``reset`` carries a snapshot).
_SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "pattern": r"^[0-9]+-[0-9]+$"},
        "event": {"type": "string", "enum": [*EVENT_TYPES, "message"]},
        "data": {"type": "string", "description": "JSON: the registration, or {agents: [...]} for reset"},
        "retry": {"type": "integer"},
    },
    "required": ["data"],
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        401: "missing bearer token",
        403: "token does not grant the action, or the catalog refuses the registration, or health_url is not "
             "an http(s) URL on the agent's own host and port (error health_url_refused)",
        404: "not found",
        409: "conflict",
        413: "body over 64 KiB (16 MiB for PUT and PATCH /catalog)",
        503: "redis unavailable or no catalog loaded (with Retry-After)",
    }
    out: dict[str, Any] = {str(c): _json("ErrorBody", text[c]) for c in codes}
    out["422"] = _json("ValidationErrorBody", "malformed JSON, fields or parameters")
    return out


_AGENT_ID = {
    "name": "agent_id", "in": "path", "required": True,
    "schema": {"type": "string", "pattern": NAME_PATTERN, "maxLength": NAME_MAX},
}
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
#: Reads: a bearer token, or none when the catalog allows public reads (``{}``).
_READ: list[dict[str, list[str]]] = [{"bearer": []}, {}]


def _query(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": "string", **schema}}


def _object(description: str, *required: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {
        "type": "object", "required": list(required)}}}}


def _dashboard_paths() -> dict[str, Any]:
    """The dashboard's reads (``swarm/registry/ui.py``): the read or the admin token only, whatever
    ``public_reads`` says. The pages themselves (/ui/, /ui/app.js, /ui/app.css) are deliberately
    left out: static files, not API."""
    dashboard: list[dict[str, list[str]]] = [{"bearer": []}]
    topic = {"name": "topic", "in": "path", "required": True,
             "schema": {"type": "string", "pattern": TOPIC_PATTERN, "maxLength": 249}}
    count = {"name": "count", "in": "query", "required": False, "description": "entries, newest first (default 20)",
             "schema": {"type": "integer", "minimum": 1, "maximum": 100}}

    def get(op: str, summary: str, ok: dict[str, Any], *codes: int, params: list[dict[str, Any]] | None = None
            ) -> dict[str, Any]:
        out: dict[str, Any] = {"operationId": op, "summary": summary, "security": dashboard,
                               "responses": {"200": ok, **_errors(401, 403, *codes, 503)}}
        if params:
            out["parameters"] = params
        return {"get": out}

    return {
        "/ui/api/overview": get("uiOverview", "Dashboard: protection mode, breakers, reconcile state.",
                                _object("overview", "swarm", "protection", "breakers", "breakers_open")),
        "/ui/api/agents/{agent_id}": get(
            "uiAgent", "Dashboard: one agent's registration, declaration, breaker, rights and inbox.",
            _object("the agent", "agent_id", "registration", "breaker"), 404, params=[_AGENT_ID]),
        "/ui/api/topics": get("uiTopics", "Dashboard: per topic its log length, dead letters, publishers, "
                              "subscribers; per inbox its backlog (as `swarm topics`).",
                              _object("the bus", "installed", "topics", "inboxes")),
        "/ui/api/topics/{topic}/messages": get(
            "uiTopicMessages", "Dashboard: the newest entries of a topic's log (at most 100, payloads cut "
            "to 500 characters).", _object("entries", "topic", "messages"), 404, params=[topic, count]),
        "/ui/api/acl": get("uiAcl", "Dashboard: the role x topic ACL matrix with the deciding rules, and "
                           "each agent's effective rights.", _object("the ACL table", "installed", "matrix")),
        "/ui/api/sync": get("uiSync", "Dashboard: reconcile status, the last 20 passes, the reconcile lease.",
                            _object("sync state", "status", "history", "lease")),
    }


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    """The full OpenAPI 3.1 document (cached; it depends only on the code)."""
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [(m, "validation") for m in _MODELS]
    _, schemas = models_json_schema(pairs, ref_template="#/components/schemas/{model}")
    filters = [
        _query("capability", "agents with this capability", maxLength=128),
        _query("topic", "agents publishing or subscribing to this topic", maxLength=249),
    ]
    paths: dict[str, Any] = {
        "/agents/register": {"post": {
            "operationId": "register", "summary": "Register or re-register an agent (idempotent).",
            "security": _BEARER,
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("RegisterRequest")}}},
            "responses": {"201": _json("Registration", "new registration"),
                          "200": _json("Registration", "same registration again, or updated"),
                          **_errors(401, 403, 409, 413, 503)},
        }},
        "/agents/{agent_id}/heartbeat": {"post": {
            "operationId": "heartbeat", "summary": "Renew the lease.", "security": _BEARER,
            "parameters": [_AGENT_ID],
            "responses": {"200": _json("Heartbeat", "lease renewed"), **_errors(401, 403, 404, 503)},
        }},
        "/agents/{agent_id}": {
            "get": {
                "operationId": "getAgent", "summary": "One registration.", "parameters": [_AGENT_ID],
                "security": _READ,
                "responses": {"200": _json("Registration", "the registration"), **_errors(401, 403, 404, 503)},
            },
            "delete": {
                "operationId": "deregister", "security": _BEARER, "parameters": [_AGENT_ID],
                "summary": "Deregister (idempotent: 204 also when already gone).",
                "responses": {"204": {"description": "deregistered"}, **_errors(401, 403, 503)},
            },
        },
        "/agents": {"get": {
            "operationId": "listAgents", "summary": "Registered agents, filtered.",
            "parameters": [*filters, _query("role", "agents with this role", maxLength=NAME_MAX),
                           _query("status", "agent status", enum=list(AGENT_STATUSES))],
            "security": _READ,
            "responses": {"200": _json("AgentList", "matching agents"), **_errors(401, 403, 503)},
        }},
        "/agents/watch": {"get": {
            "operationId": "watch",
            "summary": "Server-Sent Events: " + ", ".join(EVENT_TYPES) + ".",
            "parameters": [*filters,
                           _query("last_event_id", "resume after this event id", pattern=r"^[0-9]+-[0-9]+$"),
                           {"name": "Last-Event-ID", "in": "header", "required": False,
                            "schema": {"type": "string", "pattern": r"^[0-9]+-[0-9]+$"}}],
            "responses": {"200": {"description": "event stream; `id:` is the Redis stream id, `data:` the event's JSON",
                                  "content": {"text/event-stream": {"schema": _SSE_EVENT}}},
                          **_errors(401, 403, 503)},
            "security": _READ,
        }},
        "/catalog": {
            "put": {
                "operationId": "putCatalog", "summary": "Push the declared catalog (admin).", "security": _BEARER,
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("CatalogPut")}}},
                "responses": {"200": _json("CatalogPutResult", "stored"), **_errors(401, 403, 409, 413, 503)},
            },
            "patch": {
                "operationId": "patchCatalog",
                "summary": "Update part of the catalog (admin): upsert and remove agents on top of the stored "
                           "catalog whose digest is base_digest; the result must have `digest`.",
                "description": "409 base_digest_mismatch: the stored catalog is not the one the patch was made "
                               "against (or there is none): push the whole catalog with PUT. 422: an id twice, "
                               "in both upsert and remove, not an agent id, removed but not declared, or a "
                               "resulting digest other than `digest`.",
                "security": _BEARER,
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("CatalogPatch")}}},
                "responses": {"200": _json("CatalogPutResult", "stored"), **_errors(401, 403, 409, 413, 503)},
            },
            "get": {
                "operationId": "getCatalog", "summary": "The catalog with revision and digest.",
                "security": _READ,
                "responses": {"200": _json("CatalogState", "the catalog"), **_errors(401, 403, 404, 503)},
            },
        },
        "/status": {"get": {
            "operationId": "status", "summary": "Reconcile status and live summary.",
            "security": _READ,
            "responses": {"200": _json("Status", "status"), **_errors(401, 403, 503)},
        }},
        "/hooks/git": {"post": {
            "operationId": "gitHook",
            "summary": "Git push webhook (GitHub X-Hub-Signature-256 or GitLab X-Gitlab-Token): "
                       "the reconciler following a remote branch fetches now.",
            "parameters": [
                {"name": "X-Hub-Signature-256", "in": "header", "required": False, "schema": {"type": "string"}},
                {"name": "X-Gitlab-Token", "in": "header", "required": False, "schema": {"type": "string"}},
                {"name": "X-GitHub-Event", "in": "header", "required": False, "schema": {"type": "string"}},
            ],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {}}}},
            "responses": {
                "200": {"description": "an authentic ping: nothing to fetch",
                        "content": {"application/json": {"schema": {"type": "object"}}}},
                "202": {"description": "accepted: the reconciler fetches",
                        "content": {"application/json": {"schema": {"type": "object"}}}},
                **_errors(401, 404, 413, 503),
            },
        }},
        "/health": {"get": {"operationId": "health", "summary": "Health summary.",
                            "responses": {"200": _json("Health", "summary")}}},
        "/health/live": {"get": {"operationId": "live", "summary": "200 while the process is up.",
                                 "responses": {"200": {"description": "live",
                                                       "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        "/health/ready": {"get": {"operationId": "ready", "summary": "503 while Redis is down or no catalog.",
                                  "responses": {"200": {"description": "ready",
                                                        "content": {"application/json": {"schema": {"type": "object"}}}},
                                                "503": _json("ErrorBody", "not ready")}}},
        "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus metrics.",
                             "responses": {"200": {"description": "exposition text",
                                                   "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document.",
                                  "responses": {"200": {"description": "OpenAPI 3.1",
                                                        "content": {"application/json": {"schema": {"type": "object"}}}}}}},
    }
    paths.update(_dashboard_paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "swarm agent registry", "version": "1",
                 "description": "Agent registry of a swarm. Writes need bearer tokens: an agent's own "
                                "HMAC token or the admin token (PUT /catalog: the admin token). Reads need "
                                "any agent's token, the admin token or the read-only token unless the spec "
                                "sets registry.public_reads; metadata keys in registry.private_metadata are "
                                "returned only to the agent itself and the admin. Tokens bind the swarm "
                                "name. /health*, /metrics and /openapi.json are open. /ui/ serves the "
                                "dashboard's pages without a token; its /ui/api/* reads need the read or the "
                                "admin token."},
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
