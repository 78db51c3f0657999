"""Admission of a registration against the catalog (pure, no I/O).

The server calls :func:`resolve_registration` before it touches Redis: it fills
the fields the client left out from the agent's :class:`~swarm.desired.DeclaredAgent`,
caps the TTL, and refuses (403) what the catalog does not allow: an undeclared id
while ``allow_undeclared`` is false, or a role or topics other than declared.
Immutability against the *current* registration is decided atomically in Redis
(``store.py``'s register script), because only there is "current" well defined
when several registry processes serve one swarm; :func:`immutable_values`
produces the canonical strings that script compares.
"""

from __future__ import annotations

from typing import Any

from swarm.desired import IMMUTABLE_FIELDS, RegistryCatalog
from swarm.errors import NotDeclaredError
from swarm.registry.models import AgentFields, RegisterRequest, Topics, canonical_json

#: Version of an undeclared agent that sent none.
DEFAULT_VERSION = "0.0.0"


def resolve_registration(req: RegisterRequest, catalog: RegistryCatalog) -> AgentFields:
    """The complete registration of ``req`` or :class:`NotDeclaredError` with the reason."""
    settings = catalog.settings
    declared = catalog.agents.get(req.agent_id)
    ttl = min(req.ttl_seconds or settings.ttl_seconds, settings.ttl_seconds)
    if declared is None:
        if not settings.allow_undeclared:
            raise NotDeclaredError(
                f"agent {req.agent_id!r} is not declared in the catalog of swarm {catalog.swarm!r} "
                "(allow_undeclared is false)"
            )
        topics = req.topics or Topics()
        return AgentFields(
            agent_id=req.agent_id,
            agent_name=req.agent_name or req.agent_id,
            host=req.host,
            port=req.port,
            ttl_seconds=ttl,
            version=req.version or DEFAULT_VERSION,
            role=req.role,
            health_url=req.health_url or _health_url(req.host, req.port, "/health/live"),
            topics=Topics(publish=sorted(set(topics.publish)), subscribe=sorted(set(topics.subscribe))),
            capabilities=sorted(set(req.capabilities or [])),
            metadata=dict(req.metadata or {}),
            declared=False,
        )
    if req.role is not None and req.role != declared.role:
        raise NotDeclaredError(
            f"agent {req.agent_id!r} registers with role {req.role!r} but is declared with role {declared.role!r}"
        )
    declared_topics = {"publish": set(declared.topics.publish), "subscribe": set(declared.topics.subscribe)}
    if req.topics is not None:
        for action in ("publish", "subscribe"):
            sent = set(getattr(req.topics, action))
            if sent != declared_topics[action]:
                extra = sorted(sent - declared_topics[action])
                missing = sorted(declared_topics[action] - sent)
                raise NotDeclaredError(
                    f"agent {req.agent_id!r} topics.{action} differ from the declared ones"
                    + (f"; not declared: {', '.join(extra)}" if extra else "")
                    + (f"; declared but missing: {', '.join(missing)}" if missing else "")
                )
    port = req.port if req.port is not None else declared.port
    metadata: dict[str, Any] = {**declared.metadata, **(req.metadata or {})}
    return AgentFields(
        agent_id=req.agent_id,
        agent_name=req.agent_name or declared.agent_name,
        host=req.host,
        port=port,
        ttl_seconds=ttl,
        version=req.version or declared.version,
        role=declared.role,
        health_url=req.health_url or _health_url(req.host, port, declared.health_path),
        topics=Topics(publish=sorted(declared_topics["publish"]), subscribe=sorted(declared_topics["subscribe"])),
        capabilities=sorted(set(req.capabilities if req.capabilities is not None else declared.capabilities)),
        metadata=metadata,
        declared=True,
    )


def _health_url(host: str | None, port: int | None, path: str) -> str | None:
    if host is None or port is None:
        return None
    return f"http://{host}:{port}{path}"


def immutable_values(fields: AgentFields) -> list[tuple[str, str]]:
    """(field, canonical JSON) for every immutable field, in a fixed order."""
    data = fields.model_dump(mode="json")
    return [(name, canonical_json(data.get(name))) for name in IMMUTABLE_FIELDS]


def heartbeat_interval(catalog: RegistryCatalog | None, ttl_seconds: int) -> float:
    """Seconds between heartbeats: the catalog's interval, at most a third of the lease."""
    third = ttl_seconds / 3
    if catalog is None:
        return third
    return float(min(catalog.settings.heartbeat_interval, third))
