"""The ``compose`` target: ``docker-compose.yml`` and the image of the registry and the
setup services (``registry/Dockerfile``). Pure.

Every service names its image tag (:func:`agent_image`, :func:`swarm_image`), so
``swarm images build`` followed by ``docker compose up`` (or podman-compose) runs
the images just built; ``docker compose build`` builds the same tags. An agent's
build section, healthcheck command and files come from its runtime
(:mod:`swarm.runtimes`).
"""

from __future__ import annotations

from typing import Any

from swarm.compiler.templating import compose_escape, environment, header, safe_dump_yaml
from swarm.desired import redis_bulk_limit
from swarm.keys import SwarmKeys
from swarm.runtimes import runtime_of
from swarm.secrets_env import bus_password_var
from swarm.secrets_env import token_var as agent_token_var
from swarm.runtimes.python.runtime import DISTRIBUTION, PYTHON_IMAGE, live_probe_command
from swarm.spec.models import Agent, Spec

REDIS_IMAGE = "redis:7.0.15-alpine"
REGISTRY_PORT = 8700
#: The port of the reconciler's /metrics (``swarm reconcile --metrics-port``) in compose and Kubernetes.
RECONCILER_METRICS_PORT = 9108
#: Compose service names of the infrastructure; an agent id may not take one.
REDIS_SERVICE = "redis"
REGISTRY_SERVICE = "registry"
#: One-shot services that install the compiled desired state before the agents start.
BUS_APPLY_SERVICE = "swarm-bus-apply"
CATALOG_PUSH_SERVICE = "swarm-catalog-push"
#: The long-running ``swarm reconcile --watch``: heals drift and a Redis restart (lost ACL users).
RECONCILER_SERVICE = "swarm-reconciler"
INFRA_SERVICES = (REDIS_SERVICE, REGISTRY_SERVICE, BUS_APPLY_SERVICE, CATALOG_PUSH_SERVICE, RECONCILER_SERVICE)
#: Where the reconciler service reads the spec (mounted read-only from ``SPEC_DIR``).
SPEC_MOUNT = "/specs"
#: The spec directory as compose sees it: ``specs/`` beside ``compiled/`` (the repository
#: layout of ``swarm init``), or ``$SWARM_SPEC_DIR``.
SPEC_DIR = "${SWARM_SPEC_DIR:-../../specs}"
#: Where the one-shot services see this directory (``compiled/<swarm>/``, mounted read-only).
COMPILED_MOUNT = "/compiled"
#: The default Redis user's password; the registry and ``swarm bus apply`` use it, agents never.
REDIS_PASSWORD = "${SWARM_REDIS_PASSWORD:?set SWARM_REDIS_PASSWORD: the Redis admin password (URL-safe)}"
COMPOSE_REDIS_HOST = f"{REDIS_SERVICE}:6379/0"
COMPOSE_REDIS_URL = f"redis://:{REDIS_PASSWORD}@{COMPOSE_REDIS_HOST}"
COMPOSE_REGISTRY_URL = f"http://{REGISTRY_SERVICE}:{REGISTRY_PORT}"
#: The image of the registry, the setup services and the reconciler: ``<swarm>-swarm``.
SWARM_IMAGE_SUFFIX = "swarm"


def image_tag_version(version: str) -> str:
    """A SemVer as an image tag: ``+`` (build metadata) is not allowed in a tag and becomes ``_``."""
    return version.replace("+", "_")


def _image(spec: Spec, name: str, version: str) -> str:
    repository = spec.swarm.images.repository
    prefix = f"{repository}/" if repository else ""
    return f"{prefix}{spec.name}-{name}:{image_tag_version(version)}"


def agent_image(spec: Spec, agent: Agent) -> str:
    """The image tag of an agent: ``[<repository>/]<swarm>-<id>:<version>``."""
    return _image(spec, agent.id, agent.version)


def swarm_image(spec: Spec, swarm_version: str) -> str:
    """The tag of the registry/setup image: ``[<repository>/]<swarm>-swarm:<swarm version>``."""
    return _image(spec, SWARM_IMAGE_SUFFIX, swarm_version)


def _healthcheck(test: list[str]) -> dict[str, Any]:
    return {
        "test": test,
        "interval": "10s",
        "timeout": "3s",
        "retries": 3,
        "start_period": "10s",
    }


def _healthy() -> dict[str, str]:
    # a fresh dict each time: a shared one would be dumped as a YAML anchor and alias
    return {"condition": "service_healthy"}


def _completed() -> dict[str, str]:
    return {"condition": "service_completed_successfully"}


def agent_redis_url(swarm: str, agent_id: str) -> str:
    """An agent's REDIS_URL in compose: its own Redis ACL user (``swarm bus apply`` creates
    it; the name is :meth:`swarm.keys.SwarmKeys.redis_user`) and its password from
    ``SWARM_BUS_PASSWORD_<ID>`` (HMAC-SHA256 of the bus secret, :func:`swarm.bus.apply.bus_password`)."""
    var = bus_password_var(agent_id)
    user = SwarmKeys(swarm).redis_user(agent_id)
    return f"redis://{user}:${{{var}:?set {var}: the agent's Redis password}}@{COMPOSE_REDIS_HOST}"


def compose_document(spec: Spec, swarm_version: str) -> dict[str, Any]:
    """docker-compose.yml as data; dumped with ``yaml.safe_dump`` so every value is escaped.

    Redis requires a password for its default user (the registry and the bus apply use
    it); each bus agent connects as its own ACL user, so Redis itself confines it to
    its outbox and inbox. Two one-shot services install the compiled desired state
    from this directory (mounted read-only) before the agents start: ``swarm bus
    apply`` (streams, groups, ACL table, agent users) and ``swarm registry push``
    (the catalog of declared agents). Beside them the ``swarm-reconciler`` service
    runs ``swarm reconcile --watch`` on the spec (``SPEC_DIR``, read-only) for good
    (``restart: unless-stopped``): Redis keeps ACL users in memory only, so after a
    Redis container restart it re-creates them within about a second (it watches
    Redis' run_id), and it heals hand-made drift; the reconcile lease keeps it from
    fighting another ``swarm reconcile`` on the same swarm.
    """
    setup_image = {"context": "./registry"}
    image = swarm_image(spec, swarm_version)
    secrets = {
        "SWARM_REGISTRY_SECRET": "${SWARM_REGISTRY_SECRET:?set SWARM_REGISTRY_SECRET: the key of per-agent tokens}",
        "SWARM_ADMIN_TOKEN": "${SWARM_ADMIN_TOKEN:-}",
    }
    services: dict[str, Any] = {
        REDIS_SERVICE: {
            "image": REDIS_IMAGE,
            "command": [
                "redis-server", "--appendonly", "yes", "--appendfsync", "everysec", "--requirepass", REDIS_PASSWORD,
                # no entry larger than the bus allows: Redis has no per-user quota, this bounds one write
                "--proto-max-bulk-len", str(redis_bulk_limit(spec.swarm.bus.max_payload_bytes)),
            ],
            "environment": {"REDISCLI_AUTH": REDIS_PASSWORD},
            "healthcheck": {
                "test": ["CMD", "redis-cli", "ping"],
                "interval": "5s",
                "timeout": "3s",
                "retries": 10,
            },
            "volumes": ["redis-data:/data"],
            "restart": "unless-stopped",
        },
        REGISTRY_SERVICE: {
            "build": dict(setup_image),
            "image": image,
            "command": [
                "swarm", "registry", "serve",
                "--host", "0.0.0.0",
                "--port", str(REGISTRY_PORT),
                "--redis-url", COMPOSE_REDIS_URL,
                "--swarm", spec.name,
            ],
            # the bus secret too: after a Redis restart the registry re-creates the agents' Redis
            # users, and their passwords are derived from it (default: the registry secret)
            "environment": {**secrets, "SWARM_BUS_SECRET": "${SWARM_BUS_SECRET:-}"},
            "ports": [f"127.0.0.1:{REGISTRY_PORT}:{REGISTRY_PORT}"],
            "healthcheck": _healthcheck(live_probe_command(REGISTRY_PORT)),
            "depends_on": {REDIS_SERVICE: _healthy()},
            "restart": "unless-stopped",
        },
        BUS_APPLY_SERVICE: {
            "build": dict(setup_image),
            "image": image,
            "command": ["swarm", "bus", "apply", COMPILED_MOUNT, "--redis-url", COMPOSE_REDIS_URL],
            "environment": {"SWARM_BUS_SECRET": "${SWARM_BUS_SECRET:-}", "SWARM_REGISTRY_SECRET": secrets["SWARM_REGISTRY_SECRET"]},
            "volumes": [f".:{COMPILED_MOUNT}:ro"],
            "depends_on": {REDIS_SERVICE: _healthy()},
            "restart": "on-failure",
        },
        RECONCILER_SERVICE: {
            "build": dict(setup_image),
            "image": image,
            "command": [
                "swarm", "reconcile", SPEC_MOUNT, "--watch",
                "--registry-url", COMPOSE_REGISTRY_URL,
                "--redis-url", COMPOSE_REDIS_URL,
                "--compiled-dir", "",  # compiled/ is the user's, written by `swarm compile`
                # swarm_reconcile_* for a Prometheus on the compose network (not published on the host)
                "--metrics-port", str(RECONCILER_METRICS_PORT), "--metrics-host", "0.0.0.0",
            ],
            "expose": [str(RECONCILER_METRICS_PORT)],
            "environment": {**secrets, "SWARM_BUS_SECRET": "${SWARM_BUS_SECRET:-}",
                            # the notifications' URLs and keys (url_env, secret_env), from compose's environment
                            **{name: f"${{{name}:-}}" for name in spec.notification_env()}},
            "volumes": [f"{SPEC_DIR}:{SPEC_MOUNT}:ro"],
            "healthcheck": {"disable": True},  # the image's check is the registry's port; this serves none
            "depends_on": {REDIS_SERVICE: _healthy(), REGISTRY_SERVICE: _healthy()},
            "restart": "unless-stopped",
        },
        CATALOG_PUSH_SERVICE: {
            "build": dict(setup_image),
            "image": image,
            "command": ["swarm", "registry", "push", COMPILED_MOUNT, "--registry-url", COMPOSE_REGISTRY_URL],
            "environment": dict(secrets),
            "volumes": [f".:{COMPILED_MOUNT}:ro"],
            "depends_on": {REGISTRY_SERVICE: _healthy()},
            "restart": "on-failure",
        },
    }
    for agent in sorted(spec.agents, key=lambda a: a.id):
        environment = {
            "AGENT_ID": agent.id,
            "AGENT_HOST": agent.id,
            "AGENT_PORT": str(agent.port),
        }
        depends: dict[str, Any] = {}
        if agent.publishes or agent.subscribes:
            environment["REDIS_URL"] = agent_redis_url(spec.name, agent.id)
            depends[REDIS_SERVICE] = _healthy()
            depends[BUS_APPLY_SERVICE] = _completed()
        if agent.registry:
            environment["REGISTRY_URL"] = COMPOSE_REGISTRY_URL
            token_var = agent_token_var(agent.id)
            environment["SWARM_AGENT_TOKEN"] = f"${{{token_var}:-}}"
            depends[REGISTRY_SERVICE] = _healthy()
            depends[CATALOG_PUSH_SERVICE] = _completed()
        runtime = runtime_of(agent)
        service: dict[str, Any] = {
            "build": runtime.compose_build(spec, agent),
            "image": agent_image(spec, agent),
            "environment": environment,
            "expose": [str(agent.port)],
            "healthcheck": _healthcheck(runtime.healthcheck(agent.port)),
            "labels": {
                "io.swarm.agent-id": agent.id,
                "io.swarm.agent-name": compose_escape(agent.display_name),
                "io.swarm.role": agent.role,
                "io.swarm.swarm": spec.name,
            },
            "restart": "unless-stopped",
        }
        if depends:
            service["depends_on"] = depends
        services[agent.id] = service
    return {"name": spec.name, "services": services, "volumes": {"redis-data": {}}}


COMPOSE_NOTES = (
    "# Images: `swarm images build` builds every image named below. `swarm secrets env` writes the\n"
    "# variables that follow to .swarm/<swarm>.env: docker compose --env-file .swarm/<swarm>.env ... up\n"
    "# Environment: SWARM_REGISTRY_SECRET (required: key of the agents' registry tokens);\n"
    "# SWARM_ADMIN_TOKEN (optional: default derived from the secret, `swarm token --admin`);\n"
    "# SWARM_AGENT_TOKEN_<ID> per registered agent (`swarm token <id>`; id upper-cased, '-' as '_');\n"
    "# SWARM_REDIS_PASSWORD (required: Redis default user, for the registry and `swarm bus apply`);\n"
    "# SWARM_BUS_SECRET (optional: key of the agents' Redis passwords; default SWARM_REGISTRY_SECRET);\n"
    "# SWARM_BUS_PASSWORD_<ID> per bus agent: HMAC-SHA256(bus secret, 'swarm-bus:<swarm>:<id>') in hex,\n"
    "# printed by `swarm token --bus <id>`; the agent connects as Redis user swarm.<swarm>.<id>.\n"
    "# SWARM_SPEC_DIR (optional): the spec the swarm-reconciler service enforces; default ../../specs.\n"
)
SOURCE_NOTES = (
    "# SWARM_SOURCE_DIR (optional): where the agents' handler code is copied from; default ../..,\n"
    "# the directory holding compiled/ (see the COPY --from=source line of each Dockerfile).\n"
)


def render_compose(spec: Spec, swarm_version: str) -> bytes:
    body = safe_dump_yaml(compose_document(spec, swarm_version))
    notes = COMPOSE_NOTES + (SOURCE_NOTES if any(a.handler for a in spec.agents) else "")
    return (header(swarm_version) + notes + body).encode("utf-8")




def render_registry_dockerfile(spec: Spec, swarm_version: str) -> bytes:
    return (
        environment("swarm.compiler")
        .get_template("registry.Dockerfile.j2")
        .render(
            spec=spec,
            swarm_version=swarm_version,
            python_image=PYTHON_IMAGE,
            distribution=DISTRIBUTION,
            registry_port=REGISTRY_PORT,
        )
        .encode("utf-8")
    )


def render_files(spec: Spec, swarm_version: str) -> dict[str, bytes]:
    """The compose target's files, keyed by their path under ``<swarm>/``."""
    return {
        "docker-compose.yml": render_compose(spec, swarm_version),
        "registry/Dockerfile": render_registry_dockerfile(spec, swarm_version),
    }
