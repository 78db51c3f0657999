"""Pydantic models of the swarm spec: a contract (users' spec files, the JSON Schema that
``swarm schema`` derives from these models and the compiled output all depend on them).

Pure: no I/O. The loader (``loader.py``) turns YAML files into these models and
keeps a source map so that errors point at file:line:col; the semantic checks
(``checks.py``) run on a validated :class:`Spec`.

Two document kinds exist: exactly one ``kind: Swarm`` (:class:`SwarmDocument`)
and any number of ``kind: Agent`` (:class:`AgentDocument`). The loader merges
them into one :class:`Spec` whose ``agents`` list holds the inline agents first
(in document order) and then the Agent documents (sorted by file, then order).

Unknown keys are errors everywhere (``extra="forbid"``); types are strict, so a
quoted ``port: "8001"`` is an error rather than a silent coercion.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError

from swarm.spec.names import DEFAULT_PRIVATE_METADATA as DEFAULT_PRIVATE_METADATA  # (re-exported)
from swarm.spec.names import NAME_MAX as NAME_MAX  # metadata.name and agent ids (re-exported)
from swarm.spec.names import NAME_PATTERN as NAME_PATTERN
#: topic names: dot-separated tokens of [a-z0-9_-].
TOPIC_PATTERN = r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$"
#: role names follow the same rule as ids (they appear in Redis ACL usernames).
ROLE_PATTERN = NAME_PATTERN
#: SemVer 2.0 (https://semver.org): MAJOR.MINOR.PATCH without leading zeros, an optional
#: pre-release (``-rc.1``; numeric identifiers without leading zeros) and optional build
#: metadata (``+build.5``). The official regex, with [0-9] for \d (ASCII only).
_NUMERIC = r"(0|[1-9][0-9]*)"
_PRERELEASE_ID = r"(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
VERSION_PATTERN = (
    rf"^{_NUMERIC}\.{_NUMERIC}\.{_NUMERIC}"
    rf"(-{_PRERELEASE_ID}(\.{_PRERELEASE_ID})*)?"
    r"(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$"
)
HANDLER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
#: A ``runtime: node`` handler: a relative path to a .ts or .js file (from the directory
#: holding compiled/), a colon, the name of the export (``handlers/architect.ts:handle``).
NODE_HANDLER_PATTERN = (
    r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*\.(ts|js):[A-Za-z_$][A-Za-z0-9_$]*$"
)
#: What the ``handler`` field accepts: either form, loosely for paths (checks.py says what is
#: wrong with a path, and which form the agent's runtime needs).
HANDLER_FIELD_PATTERN = rf"^(({HANDLER_PATTERN[1:-1]})|([^\s:]+\.(ts|js):[A-Za-z_$][A-Za-z0-9_$]*))$"
#: A pip requirement the generated image installs for the handler: a name, optional
#: extras and version clauses, no spaces, URLs, markers or options (it becomes a
#: line of requirements.txt, where ``-`` would start a pip option).
_VERSION_CLAUSE = r"(===|==|!=|~=|<=|>=|<|>)[A-Za-z0-9.*+!_-]+"
REQUIREMENT_PATTERN = (
    r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?"
    r"(\[[A-Za-z0-9._-]+(,[A-Za-z0-9._-]+)*\])?"
    rf"({_VERSION_CLAUSE}(,{_VERSION_CLAUSE})*)?$"
)

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=NAME_MAX)]
TopicName = Annotated[str, StringConstraints(pattern=TOPIC_PATTERN, max_length=249)]
#: ACL patterns are checked by ``acl.parse_pattern`` in checks.py so the error can
#: say exactly what is wrong ("'>' must be the last token"); here only a string.
Pattern = Annotated[str, StringConstraints(min_length=1, max_length=249)]
#: A URL whose authority holds userinfo (``user:password@host``): credentials, refused.
USERINFO_PATTERN = r"^[a-z][a-z0-9+.-]*://[^/?#\s]*@"
_USERINFO = re.compile(USERINFO_PATTERN)


def _no_credentials(url: str) -> str:
    """The spec is committed and compiled into committed files: no passwords in its URLs."""
    if _USERINFO.match(url):
        raise PydanticCustomError(
            "url_credentials",
            "URL contains credentials (user:password@): the spec and the files compiled from it are "
            "committed, so pass credentials via --redis-url or the environment (REDIS_URL, REGISTRY_URL), "
            "never in the spec",
        )
    return url


#: registry.url and bus.redis_url: a URL without userinfo (the schema says the same with ``not``).
Url = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z][a-z0-9+.-]*://\S+$", max_length=2048),
    AfterValidator(_no_credentials),
    Field(json_schema_extra={"not": {"pattern": USERINFO_PATTERN}}),
]

API_VERSION = "swarm/v1"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Metadata(_Model):
    name: Name = Field(description="Swarm name; becomes compiled/<name>/ and the Redis key prefix.")
    description: str | None = Field(default=None, max_length=4096)
    labels: dict[str, str] = Field(default_factory=dict)


class RegistrySettings(_Model):
    url: Url = Field(default="http://127.0.0.1:8700", description="Base URL of the agent registry.")
    ttl_seconds: int = Field(default=60, ge=1, le=86400, description="Lease length of a registration.")
    heartbeat_interval: int | None = Field(
        default=None, ge=1, le=86400, description="Seconds between heartbeats; default ttl_seconds / 3."
    )
    allow_undeclared: bool = Field(
        default=False, description="Accept registrations of agents that the spec does not declare."
    )
    public_reads: bool = Field(
        default=False,
        description="Serve GET /agents, /agents/{id}, /agents/watch, /catalog and /status without a token. "
        "Default false: with a registry secret, reads need an agent's, the admin or the read token "
        "(`swarm token --read`).",
    )
    private_metadata: list[Annotated[str, StringConstraints(min_length=1, max_length=128)]] = Field(
        default_factory=lambda: list(DEFAULT_PRIVATE_METADATA),
        description="Metadata keys the registry returns only to the agent itself and the admin "
        "(never to another agent's token, the read token or a public read).",
    )

    @property
    def effective_heartbeat_interval(self) -> int:
        if self.heartbeat_interval is not None:
            return self.heartbeat_interval
        return max(1, self.ttl_seconds // 3)


class BreakerSettings(_Model):
    failure_threshold: int = Field(
        default=3, ge=0, le=1000, description="Opens when consecutive failures exceed this."
    )
    cooldown_seconds: float = Field(default=30, gt=0, le=86400)
    max_cooldown_seconds: float = Field(
        default=300, gt=0, le=86400, description="Cap of the cooldown, which doubles after a failed probe."
    )
    probe_interval_seconds: float = Field(
        default=5, gt=0, le=3600, description="How often the registry probes each live agent's health_url."
    )


class BusSettings(_Model):
    redis_url: Url = Field(default="redis://127.0.0.1:6379/0")
    dedup_window_seconds: int = Field(default=300, ge=1, le=7 * 86400)
    max_payload_bytes: int = Field(default=1024 * 1024, ge=1, le=64 * 1024 * 1024)
    visibility_timeout_seconds: float = Field(
        default=30, gt=0, le=86400, description="Unacked entries idle this long are redelivered."
    )
    max_deliveries: int = Field(
        default=5, ge=1, le=1000, description="After this many deliveries an entry goes to the dead-letter stream."
    )
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    inbox_max_len: int = Field(
        default=100_000, ge=1, le=10**9,
        description="Unfinished (unacked) entries an agent's inbox may hold. Inboxes are never trimmed: at this "
                    "length the router stops delivering to that inbox (reason inbox_full) instead of evicting unread "
                    "entries; the topic log and the other subscribers still get them.",
    )


class Topic(_Model):
    name: TopicName
    description: str | None = Field(default=None, max_length=4096)
    max_len: int = Field(default=100_000, ge=1, le=10**9, description="Length of the topic's log (XADD MAXLEN ~); inboxes are never trimmed.")
    dedup_window_seconds: int | None = Field(default=None, ge=1, le=7 * 86400)


class RuleSet(_Model):
    publish: list[Pattern] = Field(default_factory=list)
    subscribe: list[Pattern] = Field(default_factory=list)


class Role(_Model):
    description: str | None = Field(default=None, max_length=4096)
    publish: list[Pattern] = Field(default_factory=list)
    subscribe: list[Pattern] = Field(default_factory=list)
    deny: RuleSet = Field(default_factory=RuleSet)


#: A Kubernetes resource quantity as swarm accepts it: a decimal number and an optional
#: suffix (``100m``, ``0.5``, ``128Mi``, ``1G``); no exponents, no sign.
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
Quantity = Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN, max_length=32)]


class ResourceAmounts(_Model):
    cpu: Quantity | None = Field(default=None, description="CPU, e.g. 100m or 1.")
    memory: Quantity | None = Field(default=None, description="Memory, e.g. 128Mi or 1Gi.")


def _default_requests() -> ResourceAmounts:
    return ResourceAmounts(cpu="50m", memory="64Mi")


def _default_limits() -> ResourceAmounts:
    return ResourceAmounts(memory="256Mi")


class Resources(_Model):
    """A container's requests and limits (Kubernetes). The defaults request 50m CPU and 64Mi
    and limit memory to 256Mi (no CPU limit: throttling hurts latency more than it protects)."""

    requests: ResourceAmounts = Field(default_factory=_default_requests)
    limits: ResourceAmounts = Field(default_factory=_default_limits)


class AgentFields(_Model):
    """Fields shared by inline agents and ``kind: Agent`` documents."""

    id: Name = Field(description="Agent id; becomes compiled/<swarm>/agents/<id>/ and Redis keys.")
    name: str | None = Field(default=None, min_length=1, max_length=256, description="Display name; default the id.")
    description: str | None = Field(default=None, max_length=4096)
    version: Annotated[str, StringConstraints(pattern=VERSION_PATTERN, max_length=128)] = Field(
        default="0.1.0", description="SemVer 2.0, e.g. 1.2.3, 1.0.0-rc.1 or 1.0.0-rc.1+build.5."
    )
    role: Name
    runtime: Literal["python", "node"] = "python"
    port: int = Field(ge=1, le=65535)
    capabilities: list[Annotated[str, StringConstraints(min_length=1, max_length=128)]] = Field(default_factory=list)
    publishes: list[TopicName] = Field(default_factory=list)
    subscribes: list[TopicName] = Field(default_factory=list)
    registry: bool = Field(default=True, description="The generated server registers and heartbeats.")
    handler: Annotated[str, StringConstraints(pattern=HANDLER_FIELD_PATTERN, max_length=1024)] | None = Field(
        default=None,
        description="Called for each message. runtime python: module:function; the image copies the module's "
        "top-level package (or the module file, when undotted). runtime node: path/to/file.ts:export (or .js), "
        "relative; the image copies the path's top-level directory (or the file). Both from the directory "
        "holding compiled/.",
    )
    requirements: list[Annotated[str, StringConstraints(pattern=REQUIREMENT_PATTERN, max_length=256)]] = Field(
        default_factory=list,
        description="pip requirements of the handler's code, added to the image's requirements.txt "
        "(e.g. 'httpx-sse>=0.4').",
    )
    metadata: dict[str, str] = Field(default_factory=dict)
    resources: Resources | None = Field(
        default=None,
        description="Kubernetes requests and limits of the agent's container; default deploy.agents "
        "(compile target kubernetes).",
    )

    @property
    def display_name(self) -> str:
        return self.name if self.name is not None else self.id


class Agent(AgentFields):
    """An agent declared inline under ``agents:`` of the Swarm document."""


#: The compiler's optional targets (``compile.targets``); the desired state (registry.json,
#: bus.json, acl.*) is always emitted.
TARGETS = ("compose", "kubernetes")
Target = Literal["compose", "kubernetes"]
#: An image repository prefix: ``host[:port]/path`` or ``path`` (lower case, as image
#: references require), e.g. ``registry.example.com/team``.
IMAGE_REPOSITORY_PATTERN = r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*$"


def _default_targets() -> list[Target]:
    return ["compose"]


def _unique_targets(targets: list[Target]) -> list[Target]:
    if len(set(targets)) != len(targets):
        raise PydanticCustomError("duplicate_target", "each target may be listed once")
    return targets


class CompileSettings(_Model):
    targets: Annotated[list[Target], AfterValidator(_unique_targets)] = Field(
        default_factory=_default_targets,
        description="What `swarm compile` emits besides the desired state (registry.json, bus.json, acl.*, "
        "always written): compose (docker-compose.yml and the registry image), kubernetes (a kustomize base "
        "in kubernetes/, deployed by `kubectl apply -k`). An empty list emits only "
        "the desired state and the agents' files.",
    )


class ImageSettings(_Model):
    repository: Annotated[str, StringConstraints(pattern=IMAGE_REPOSITORY_PATTERN, max_length=200)] | None = Field(
        default=None,
        description="Repository prefix of the image tags (`<repository>/<swarm>-<id>:<version>`), e.g. "
        "registry.example.com/team; default none (local tags).",
    )


class ReplicatedDeploy(_Model):
    replicas: int = Field(default=2, ge=1, le=100, description="Pods of this Deployment (kubernetes target).")
    resources: Resources = Field(default_factory=Resources)


#: The git-sync image of the reconciler's sidecar (kubernetes target); a parameter, so a
#: mirror or a pinned digest can be named.
GIT_SYNC_IMAGE = "registry.k8s.io/git-sync/git-sync:v4.4.0"


class GitSource(_Model):
    """Where the reconciler's git-sync sidecar clones the spec from (kubernetes target)."""

    repository: Url | None = Field(
        default=None,
        description="The repository holding this spec (https:// or ssh://, no credentials); default none: "
        "GITSYNC_REPO then comes from the Secret <swarm>-git, which also holds any git credentials.",
    )
    ref: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._/-]+$", max_length=255)] = Field(
        default="HEAD", description="Branch, tag or commit git-sync checks out (HEAD: the remote's default branch)."
    )
    spec_path: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", max_length=1024)] = Field(
        default="specs", description="The spec directory inside the repository."
    )
    period_seconds: int = Field(default=60, ge=1, le=86400, description="Seconds between git-sync fetches.")
    image: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._/:@-]*$", max_length=512)] = Field(
        default=GIT_SYNC_IMAGE, description="The git-sync image (v4 flags and GITSYNC_* variables)."
    )


class ReconcilerDeploy(_Model):
    resources: Resources = Field(default_factory=Resources)
    git: GitSource = Field(default_factory=GitSource)


#: Kubernetes label keys (``[prefix/]name``) and values.
LabelKey = Annotated[
    str,
    StringConstraints(
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$",
        max_length=317,
    ),
]
LabelValue = Annotated[str, StringConstraints(pattern=r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$", max_length=63)]


def _cidr(value: str) -> str:
    import ipaddress

    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise PydanticCustomError("cidr", "not an IP block in CIDR form (e.g. 10.0.3.0/24): {error}", {"error": str(exc)}) from None
    return str(network)


class RedisPeer(_Model):
    """Where Redis is, for the agents' NetworkPolicy egress (kubernetes target). Without any of
    these the policy allows the Redis port of bus.redis_url to any address (a NetworkPolicy cannot
    name a DNS host); an IP literal in bus.redis_url is used as a /32 (or /128) block."""

    cidrs: list[Annotated[str, AfterValidator(_cidr)]] = Field(
        default_factory=list, description="IP blocks of the Redis servers, e.g. 10.0.3.0/24."
    )
    pod_labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, description="Labels of Redis pods in the cluster, e.g. {app.kubernetes.io/name: redis}."
    )
    namespace_labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, description="Labels of the namespace of those pods; default the swarm's own namespace."
    )


class DeploySettings(_Model):
    """How the swarm's processes run outside compose (today: the kubernetes target)."""

    registry: ReplicatedDeploy = Field(default_factory=ReplicatedDeploy)
    router: ReplicatedDeploy = Field(default_factory=ReplicatedDeploy)
    reconciler: ReconcilerDeploy = Field(default_factory=ReconcilerDeploy)
    agents: Resources = Field(default_factory=Resources, description="Resources of every agent without its own.")
    redis: RedisPeer = Field(default_factory=RedisPeer)


#: What an environment overlay may do only when the base allows it (``environments.allow``).
OverlayRight = Literal["agents", "acl"]


class EnvironmentPolicy(_Model):
    allow: list[OverlayRight] = Field(
        default_factory=list,
        description="What environment overlays (kind: Environment) may do beyond patching settings: "
        "'agents' lets them add agents (add_agents) and turn on registry.allow_undeclared; 'acl' lets "
        "them change roles, an agent's role, publishes, subscribes and capabilities, and the registry's "
        "read rules (public_reads, private_metadata). Default: neither.",
    )


class HistorySettings(_Model):
    postgres_url: Url | None = Field(
        default=None,
        description="PostgreSQL store of every registry event and reconcile pass (`swarm archive` copies "
        "them; `swarm history` reads it), e.g. postgresql://swarm@db.internal:5432/swarm. No password "
        "here: libpq reads PGPASSWORD or ~/.pgpass.",
    )


#: What a notification can be sent for (the names of Argo CD's notification triggers).
Trigger = Literal[
    "on-sync-succeeded",
    "on-sync-failed",
    "on-drift-healed",
    "on-breaker-opened",
    "on-protection-mode",
    "on-agent-expired",
]
TRIGGERS: tuple[str, ...] = get_args(Trigger)
#: An environment variable's name (url_env, secret_env).
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
#: An HTTP header name (RFC 9110 token characters).
HEADER_NAME_PATTERN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"
#: Headers swarm sets itself: a notification's ``headers`` may not set them.
RESERVED_HEADERS = ("content-length", "content-type", "host", "transfer-encoding", "x-swarm-signature-256")
NOTIFY_URL_PATTERN = r"^https?://[^\s/?#@]+(/\S*)?$"
_NOTIFY_URL = re.compile(NOTIFY_URL_PATTERN)


def _notify_url(url: str) -> str:
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme.lower() not in ("http", "https"):
        raise PydanticCustomError(
            "notify_url_scheme",
            "a notification URL must start with https:// or http://, got {got}",
            {"got": repr(scheme + "://") if scheme else repr(url[:40])},
        )
    if _USERINFO.match(url):
        raise PydanticCustomError(
            "url_credentials",
            "a notification URL may not contain credentials (user:password@): the spec is committed; put a URL "
            "that is itself a secret in the daemon's environment and name it in url_env, and sign with secret_env",
        )
    if not _NOTIFY_URL.match(url):
        raise PydanticCustomError("notify_url", "not a URL of the form https://host[:port]/path (no spaces)")
    return url


def _unique_triggers(triggers: list[Trigger]) -> list[Trigger]:
    if len(set(triggers)) != len(triggers):
        raise PydanticCustomError("duplicate_trigger", "each trigger may be listed once")
    return triggers


NotifyUrl = Annotated[
    str,
    StringConstraints(max_length=2048),
    AfterValidator(_notify_url),
    Field(json_schema_extra={"pattern": NOTIFY_URL_PATTERN, "not": {"pattern": USERINFO_PATTERN}}),
]
HeaderValue = Annotated[str, StringConstraints(pattern=r"^[^\r\n\x00]*$", max_length=4096)]


class Notification(_Model):
    """One notification target: where the reconcile daemon posts which triggers, and how."""

    name: Name = Field(description="Names the target in logs and in `X-Swarm-Notification`; unique.")
    url: NotifyUrl | None = Field(
        default=None,
        description="Where to POST (http:// or https://, no credentials). A URL that is itself a secret "
        "(a Slack incoming webhook) belongs in url_env instead.",
    )
    url_env: Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN, max_length=128)] | None = Field(
        default=None,
        description="Name of the environment variable of `swarm reconcile --watch` that holds the URL "
        "(exactly one of url and url_env).",
    )
    format: Literal["json", "slack"] = Field(
        default="json",
        description="json: swarm's webhook document {version, trigger, swarm, time, summary, details}; "
        "slack: a Slack incoming-webhook message {text, blocks}.",
    )
    triggers: Annotated[list[Trigger], AfterValidator(_unique_triggers)] = Field(
        min_length=1, description="What to notify about: " + ", ".join(TRIGGERS) + "."
    )
    headers: dict[Annotated[str, StringConstraints(pattern=HEADER_NAME_PATTERN, max_length=128)], HeaderValue] = Field(
        default_factory=dict,
        description="Extra HTTP headers (committed with the spec: nothing secret here; use secret_env).",
    )
    secret_env: Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN, max_length=128)] | None = Field(
        default=None,
        description="Name of the environment variable holding a key: each request then carries "
        "`X-Swarm-Signature-256: sha256=<HMAC-SHA256 of the body>` (as GitHub signs its webhooks).",
    )
    timeout_seconds: float = Field(default=5, gt=0, le=60, description="Timeout of one attempt.")
    max_attempts: int = Field(
        default=5, ge=1, le=20,
        description="Attempts of one notification (retried on a network error, a 429 or a 5xx with "
        "capped exponential backoff); then it is dropped with a log line.",
    )


class SwarmDocument(_Model):
    apiVersion: Literal["swarm/v1"]
    kind: Literal["Swarm"]
    metadata: Metadata
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    bus: BusSettings = Field(default_factory=BusSettings)
    topics: list[Topic] = Field(default_factory=list)
    roles: dict[Name, Role] = Field(default_factory=dict)
    agents: list[Agent] = Field(default_factory=list)
    compile: CompileSettings = Field(default_factory=CompileSettings)
    images: ImageSettings = Field(default_factory=ImageSettings)
    deploy: DeploySettings = Field(default_factory=DeploySettings)
    environments: EnvironmentPolicy = Field(default_factory=EnvironmentPolicy)
    history: HistorySettings = Field(default_factory=HistorySettings)
    notifications: list[Notification] = Field(
        default_factory=list,
        description="Webhooks the reconcile daemon (`swarm reconcile --watch`) posts to on sync results, "
        "healed drift, breakers opening, protection mode and expiries.",
    )


class AgentDocument(AgentFields):
    """A ``kind: Agent`` document; adds one agent to the swarm."""

    apiVersion: Literal["swarm/v1"]
    kind: Literal["Agent"]

    def to_agent(self) -> Agent:
        data = self.model_dump(exclude={"apiVersion", "kind"})
        return Agent.model_validate(data, strict=False)


class EnvironmentMetadata(_Model):
    name: Name = Field(description="Environment name: `--env NAME`; output in compiled/<swarm>.<name>/.")
    description: str | None = Field(default=None, max_length=4096)


class EnvironmentDocument(_Model):
    """A ``kind: Environment`` overlay: patches applied to the base spec under ``--env NAME``.

    ``swarm`` is a merge patch of the Swarm document (mappings merge key by key; any
    other value, lists included, replaces; ``null`` restores the default); ``agents``
    maps an agent id to a merge patch of that agent; ``add_agents`` declares agents
    only this environment has (when the base allows it). The merged result is
    validated like any spec, with errors at the overlay's file:line:col.
    """

    apiVersion: Literal["swarm/v1"]
    kind: Literal["Environment"]
    metadata: EnvironmentMetadata
    swarm: dict[str, Any] = Field(default_factory=dict, description="Merge patch of the Swarm document.")
    agents: dict[Name, dict[str, Any]] = Field(default_factory=dict, description="Agent id -> merge patch.")
    add_agents: list[dict[str, Any]] = Field(default_factory=list, description="Agents only this environment has.")


class Spec(_Model):
    """The merged, structurally valid spec: one Swarm plus all agents."""

    swarm: SwarmDocument
    agents: list[Agent]

    @property
    def name(self) -> str:
        return self.swarm.metadata.name

    @property
    def topics(self) -> list[Topic]:
        return self.swarm.topics

    @property
    def roles(self) -> dict[str, Role]:
        return self.swarm.roles

    def topic(self, name: str) -> Topic | None:
        for t in self.swarm.topics:
            if t.name == name:
                return t
        return None

    def agent(self, agent_id: str) -> Agent | None:
        for a in self.agents:
            if a.id == agent_id:
                return a
        return None

    def notification_env(self) -> list[str]:
        """The environment variables the notifications read (url_env, secret_env), sorted, once each:
        the compose and kubernetes targets hand them to the reconciler."""
        names = {n for note in self.swarm.notifications for n in (note.url_env, note.secret_env) if n is not None}
        return sorted(names)

    def dedup_window(self, topic: Topic) -> int:
        if topic.dedup_window_seconds is not None:
            return topic.dedup_window_seconds
        return self.swarm.bus.dedup_window_seconds



Document = SwarmDocument | AgentDocument
