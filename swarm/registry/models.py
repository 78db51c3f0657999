"""Request and response bodies of the registry HTTP API.

Pure pydantic models. The server validates bodies with them and serializes
answers through them; ``server.openapi_document`` builds /openapi.json from their
JSON Schemas, so the published description and the checks can never disagree.
The client (``client.py``) and the reconciler send bodies of these shapes.

Ids follow the spec's charset (:data:`swarm.spec.models.NAME_PATTERN`) because
they become Redis keys; unknown fields are refused (422) rather than dropped, so
a typo in a client never passes silently.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from swarm.desired import DeclaredAgent, RegistryCatalog, RegistryDefaults
from swarm.desired import canonical_json as canonical_json  # re-exported: one definition
from swarm.spec.models import NAME_MAX, NAME_PATTERN, TOPIC_PATTERN, VERSION_PATTERN

AgentId = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=NAME_MAX)]
TopicName = Annotated[str, StringConstraints(pattern=TOPIC_PATTERN, max_length=249)]
Version = Annotated[str, StringConstraints(pattern=VERSION_PATTERN, max_length=128)]
Capability = Annotated[str, StringConstraints(min_length=1, max_length=128)]

#: Agent status as reported by GET /agents: ``healthy`` (lease live, breaker
#: closed), ``critical`` (breaker open or half-open), ``expiring`` (lease past its
#: expiry but not evicted: during start-up grace or mass-eviction protection).
AgentStatus = Literal["healthy", "critical", "expiring"]
AGENT_STATUSES: tuple[str, ...] = get_args(AgentStatus)
#: SSE event types of GET /agents/watch. ``data:`` is the registration JSON (with
#: lease_expires_at, registered_at, updated_at) for agent events, the catalog summary
#: {revision, digest, changed} for catalog-changed, {"agents": [...]} for reset. The
#: bus's health prober may add its own types (e.g. health-changed); clients must
#: ignore types they do not know.
EVENT_TYPES = ("registered", "updated", "expired", "deregistered", "catalog-changed", "reset")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Topics(_Body):
    publish: list[TopicName] = Field(default_factory=list, max_length=1000)
    subscribe: list[TopicName] = Field(default_factory=list, max_length=1000)


class RegisterRequest(_Body):
    """POST /agents/register. Only agent_id is required; the rest defaults from the catalog."""

    agent_id: AgentId
    agent_name: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    host: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    ttl_seconds: Annotated[int, Field(ge=1, le=86400)] | None = None
    version: Version | None = None
    role: AgentId | None = None
    health_url: Annotated[str, StringConstraints(min_length=1, max_length=2048)] | None = None
    topics: Topics | None = None
    capabilities: list[Capability] | None = Field(default=None, max_length=1000)
    metadata: dict[str, Any] | None = None


class AgentFields(_Body):
    """A complete registration as stored (every field resolved against the catalog)."""

    agent_id: AgentId
    agent_name: str
    host: str | None = None
    port: int | None = None
    ttl_seconds: int
    version: str
    role: str | None = None
    health_url: str | None = None
    topics: Topics
    capabilities: list[str]
    metadata: dict[str, Any]
    declared: bool = Field(description="Whether the catalog declares this agent.")


class Registration(AgentFields):
    """A registration with its lease; the answer of register and GET /agents/{id}."""

    registered_at: int = Field(description="First registration of this lease, ms since the epoch (Redis clock).")
    updated_at: int = Field(description="Last change of the registration, ms since the epoch.")
    lease_expires_at: int = Field(description="Lease expiry, ms since the epoch (Redis clock).")
    heartbeat_interval: float = Field(description="Seconds between heartbeats the registry expects.")
    status: AgentStatus = "healthy"


class AgentList(_Body):
    agents: list[Registration]
    count: int


class Heartbeat(_Body):
    agent_id: AgentId
    lease_expires_at: int
    ttl_seconds: int
    heartbeat_interval: float


class CatalogPut(_Body):
    """PUT /catalog: the compiled ``registry.json`` and the revision it came from."""

    revision: Annotated[str, StringConstraints(max_length=256)] | None = None
    catalog: RegistryCatalog


Digest = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class CatalogPatch(_Body):
    """PATCH /catalog: a partial update of the stored catalog, applied only on top of ``base_digest``.

    ``upsert`` adds or replaces declared agents (whole), ``remove`` drops ids;
    ``spec_digest`` / ``settings`` replace those fields when given. ``digest`` is the
    digest the resulting catalog must have (sha256 of its canonical JSON, as PUT
    computes it): a patch that would give another catalog is refused (422), one
    made against another stored catalog too (409 ``base_digest_mismatch``: push
    the whole catalog with PUT then).
    """

    base_digest: Digest = Field(description="digest of the catalog this patch was made against")
    digest: Digest = Field(description="digest of the catalog after the patch")
    revision: Annotated[str, StringConstraints(max_length=256)] | None = None
    spec_digest: Annotated[str, StringConstraints(max_length=256)] | None = None
    settings: RegistryDefaults | None = None
    upsert: list[DeclaredAgent] = Field(default_factory=list)
    remove: list[AgentId] = Field(default_factory=list)


class CatalogState(_Body):
    """GET /catalog."""

    revision: str | None
    digest: str = Field(description="sha256 of the catalog's canonical JSON.")
    catalog: RegistryCatalog


class CatalogPutResult(_Body):
    revision: str | None
    digest: str
    changed: bool = Field(description="False for a re-push of the same catalog (no event).")


class ErrorBody(_Body):
    error: str = Field(description="Short machine-readable kind, e.g. not_declared, conflict.")
    detail: str
    fields: list[str] | None = Field(default=None, description="The fields concerned: immutable fields that "
                                     "changed (409), health_url (403 health_url_refused).")


class FieldError(_Body):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorBody(_Body):
    error: Literal["invalid"] = "invalid"
    detail: list[FieldError]


class Health(_Body):
    status: Literal["ok", "degraded"]
    redis: bool
    catalog_loaded: bool
    agents: int | None
    protection: bool | None


class SweepInfo(_Body):
    at: float = Field(description="Unix time of the sweep (this process).")
    evicted: int
    expired_seen: int
    live: int
    protected: bool


class AgentCounts(_Body):
    declared: int
    live: int
    healthy: int
    critical: int
    expiring: int


class Status(_Body):
    swarm: str
    reconcile: dict[str, Any] | None = Field(description="Status written by the reconciler (swarm:{N}:status).")
    catalog: CatalogPutResult | None
    agents: AgentCounts | None
    protection: bool
    last_sweep: SweepInfo | None


def catalog_digest(catalog: RegistryCatalog) -> str:
    return hashlib.sha256(canonical_json(catalog.model_dump(mode="json")).encode()).hexdigest()


def redact_metadata(data: dict[str, Any], private: frozenset[str]) -> dict[str, Any]:
    """A registration as JSON without its ``private`` metadata keys (a copy; ``data`` is unchanged).

    >>> redact_metadata({"agent_id": "a", "metadata": {"api_key": "k", "team": "x"}}, frozenset({"api_key"}))
    {'agent_id': 'a', 'metadata': {'team': 'x'}}
    """
    metadata = data.get("metadata")
    if not private or not isinstance(metadata, dict) or not private & metadata.keys():
        return data
    return {**data, "metadata": {k: v for k, v in metadata.items() if k not in private}}
