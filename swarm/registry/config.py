"""Settings of one registry process, read from the CLI and the environment in one place.

``swarm registry serve`` builds a :class:`RegistryConfig` with :func:`config_from_env`;
the app factory (:func:`swarm.registry.server.create_app`) receives it and nothing
deeper in the registry reads ``os.environ``. Environment variables:

``SWARM_REGISTRY_SECRET``
    HMAC key of the per-agent tokens (:func:`swarm.registry.auth.agent_token`).
    Without it the server refuses to start unless ``--insecure`` is given.
``SWARM_ADMIN_TOKEN``
    Bearer token of the reconciler/operator. When unset but a secret is set, the
    admin token is derived from the secret (:func:`swarm.registry.auth.admin_token`),
    so whoever holds the secret can compute it with ``swarm token --admin``.
``SWARM_GIT_WEBHOOK_SECRET``
    Shared secret of ``POST /hooks/git`` (:mod:`swarm.registry.webhook`); unset: the
    endpoint answers 404.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from swarm.errors import InvalidRequestError
from swarm.redis_auth import bus_secret_from_env

SECRET_ENV = "SWARM_REGISTRY_SECRET"
ADMIN_TOKEN_ENV = "SWARM_ADMIN_TOKEN"
WEBHOOK_SECRET_ENV = "SWARM_GIT_WEBHOOK_SECRET"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8700
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: Request bodies above this size are refused with 413.
MAX_BODY_BYTES = 64 * 1024
#: PUT /catalog (admin only, checked before the body is read) carries every declared
#: agent: ~330 bytes each, so 1,000 agents need ~330 KB. Its own, larger cap.
MAX_CATALOG_BYTES = 16 * 1024 * 1024
#: The watch stream is capped near this many events (XADD MAXLEN ~).
EVENTS_MAXLEN = 10_000
#: Milliseconds the watch hub's XREAD blocks for.
WATCH_BLOCK_MS = 5000
#: Seconds past the block time the hub's reader waits for a reply before it treats
#: the connection as dead and reconnects.
WATCH_READ_MARGIN = 10.0


@dataclass(frozen=True)
class RegistryConfig:
    """Everything a registry process needs; immutable once the app is built.

    ``sweep_interval`` None means "a tenth of the catalog's TTL, at least 0.1 s";
    ``min_protect`` and ``protect_ratio`` tune the mass-eviction guard (evict none
    when more than ``protect_ratio`` of the live agents and at least ``min_protect``
    would expire in one sweep).
    """

    swarm: str
    redis_url: str = DEFAULT_REDIS_URL
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    secret: str | None = None
    admin_token: str | None = None
    #: key of the agents' Redis passwords (SWARM_BUS_SECRET, else the registry secret): lets
    #: the registry re-create the agents' Redis users after a Redis restart
    bus_secret: str | None = None
    #: shared secret of the git webhook (POST /hooks/git); None disables it
    git_webhook_secret: str | None = None
    insecure: bool = False
    access_log: bool = False
    probe: bool = True
    #: run the bus's trusted router (swarm.bus.router.Router) in the lifespan (--route/--no-route)
    route: bool = True
    #: None: the spec's bus.breaker.probe_interval_seconds from bus.json (``--probe-interval`` overrides it)
    probe_interval: float | None = None
    sweep_interval: float | None = None
    ping_interval: float = 15.0
    #: seconds between heap settles (swarm.heap: collect, then freeze the survivors, such as a
    #: catalog of 10,000 models, out of the cyclic collector's sight); 0: never
    heap_settle_seconds: float = 10.0
    events_maxlen: int = EVENTS_MAXLEN
    max_body_bytes: int = MAX_BODY_BYTES
    max_catalog_bytes: int = MAX_CATALOG_BYTES
    watch_queue_size: int = 1000
    watch_block_ms: int = WATCH_BLOCK_MS
    watch_read_margin: float = WATCH_READ_MARGIN
    min_protect: int = 10
    protect_ratio: float = 0.5
    retry_after_seconds: int = 1
    #: connections of the blocking Redis pool, and how long a command waits for one
    redis_max_connections: int = 64
    redis_pool_timeout: float = 10.0
    #: requests running their handler at once; the others queue up to queue_timeout (then 503)
    max_concurrency: int = 256
    queue_timeout: float = 15.0

    def __post_init__(self) -> None:
        if self.secret is None and not self.insecure:
            raise InvalidRequestError(
                f"{SECRET_ENV} is not set: refusing to serve without authentication "
                "(set the secret, or pass --insecure to run without auth)"
            )
        if self.sweep_interval is not None and self.sweep_interval <= 0:
            raise InvalidRequestError(f"sweep interval must be > 0, got {self.sweep_interval}")
        if self.probe_interval is not None and self.probe_interval <= 0:
            raise InvalidRequestError(f"probe interval must be > 0, got {self.probe_interval}")
        if self.ping_interval <= 0:
            raise InvalidRequestError(f"ping interval must be > 0, got {self.ping_interval}")
        if self.redis_max_connections < 1 or self.max_concurrency < 1:
            raise InvalidRequestError("redis max connections and max concurrency must be >= 1")
        if self.redis_pool_timeout <= 0 or self.queue_timeout <= 0:
            raise InvalidRequestError("redis pool timeout and queue timeout must be > 0")
        if self.events_maxlen < 1:
            raise InvalidRequestError(f"events maxlen must be >= 1, got {self.events_maxlen}")
        if self.watch_queue_size < 1:
            raise InvalidRequestError(f"watch queue size must be >= 1, got {self.watch_queue_size}")
        if self.watch_block_ms < 1:
            raise InvalidRequestError(f"watch block must be >= 1 ms, got {self.watch_block_ms}")
        if self.watch_read_margin <= 0:
            raise InvalidRequestError(f"watch read margin must be > 0, got {self.watch_read_margin}")

    @property
    def auth_enabled(self) -> bool:
        return self.secret is not None and not self.insecure


def config_from_env(environ: Mapping[str, str], **options: object) -> RegistryConfig:
    """Build the config from CLI ``options`` plus the two secrets in ``environ``.

    Empty environment values count as unset, so ``SWARM_REGISTRY_SECRET=`` cannot
    silently turn on a registry keyed by the empty string.
    """
    secret = environ.get(SECRET_ENV) or None
    admin = environ.get(ADMIN_TOKEN_ENV) or None
    bus_secret = bus_secret_from_env(environ)
    hook = environ.get(WEBHOOK_SECRET_ENV) or None
    return RegistryConfig(secret=secret, admin_token=admin, bus_secret=bus_secret,
                          git_webhook_secret=hook, **options)  # type: ignore[arg-type]
