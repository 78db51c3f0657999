"""Admission of a registration against the catalog (pure, no I/O).

The server calls :func:`resolve_registration` before it touches Redis: it fills
the fields the client left out from the agent's :class:`~swarm.desired.DeclaredAgent`,
caps the TTL, and refuses (403) what the catalog does not allow: an undeclared id
while ``allow_undeclared`` is false, a role or topics other than declared, or
capabilities that were never declared (they must be a subset of the declared
ones, so a worker cannot show up in ``?capability=planning``). A ``health_url``
must point at the agent's own registered host and port (422,
:class:`HealthUrlError`): the registry's prober GETs it every interval, and it
must never be steered at an internal address. Undeclared agents (only with
``allow_undeclared``) have no declaration to compare with: the operator chose to
trust what they send, except the health_url rule, which holds for everyone.
Immutability against the *current* registration is decided atomically in Redis
(``store.py``'s register script), because only there is "current" well defined
when several registry processes serve one swarm; :func:`immutable_values`
produces the canonical strings that script compares.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from swarm.desired import IMMUTABLE_FIELDS, RegistryCatalog
from swarm.errors import InvalidRequestError, NotDeclaredError
from swarm.registry.models import AgentFields, RegisterRequest, Topics, canonical_json

#: Version of an undeclared agent that sent none.
DEFAULT_VERSION = "0.0.0"
_DEFAULT_PORTS = {"http": 80, "https": 443}


class HealthUrlError(InvalidRequestError):
    """health_url is not an http(s) URL on the agent's registered host and port (403: refused by
    policy, like an undeclared agent; the body itself is well formed)."""


def check_health_url(url: str | None, host: str | None, port: int | None) -> None:
    """Refuse a health_url that is not ``http(s)://<host>:<port>/...`` of the registration itself.

    >>> check_health_url("http://10.0.0.5:8001/health/live", "10.0.0.5", 8001)
    >>> check_health_url("http://169.254.169.254/latest", "10.0.0.5", 8001)
    Traceback (most recent call last):
    ...
    swarm.registry.admission.HealthUrlError: health_url must be on the agent's host and port (10.0.0.5:8001), got 169.254.169.254:80
    """
    if url is None:
        return
    if host is None or port is None:
        raise HealthUrlError("health_url needs host and port in the registration (it must point at them)")
    try:
        parts = urlsplit(url)
        url_port = parts.port
    except ValueError as exc:
        raise HealthUrlError(f"health_url is not a valid URL: {exc}") from None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise HealthUrlError("health_url must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise HealthUrlError("health_url must not carry credentials")
    url_port = url_port if url_port is not None else _DEFAULT_PORTS[parts.scheme]
    if parts.hostname.lower() != host.lower().strip("[]") or url_port != port:
        raise HealthUrlError(f"health_url must be on the agent's host and port ({host}:{port}), "
                             f"got {parts.hostname}:{url_port}")


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
        check_health_url(req.health_url, req.host, req.port)
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
    if req.capabilities is not None:
        extra = sorted(set(req.capabilities) - set(declared.capabilities))
        if extra:
            raise NotDeclaredError(
                f"agent {req.agent_id!r} registers capabilities that are not declared: {', '.join(extra)} "
                f"(declared: {', '.join(declared.capabilities) or 'none'})"
            )
    port = req.port if req.port is not None else declared.port
    check_health_url(req.health_url, req.host, port)
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
