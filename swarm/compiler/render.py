"""Render a valid spec into the files of ``compiled/<swarm>/`` (pure: no I/O).

Called by :func:`swarm.compiler.compile_spec` (then :mod:`swarm.compiler.output`
writes the result) and by the reconciler, which compares the rendered bytes with
what is committed. Rendering is a pure function of the spec, its digest and the
compiling version, so two runs on any machine give byte-identical output:
agents, topics and keys are sorted, there are no timestamps, and every file's
sha256 lands in ``manifest.json``.

Each value is escaped for its target, never pasted as raw text: Python literals
through ``repr`` (filter ``pyrepr``), Dockerfile label values through
:func:`docker_quote` (free-text names stay out of Dockerfiles altogether:
hadolint's parser rejects a quoted value ending in a backslash, and the name
is already in registry.json and the compose labels), YAML through ``yaml.safe_dump`` of a dict (compose ``$``
interpolation escaped as ``$$``), JSON through ``json.dumps``. Templates use
``StrictUndefined``, so a misspelt variable fails the compile instead of
rendering an empty string.

``runtime: node`` agents get the same Python server as ``runtime: python``: the
registry client and the event bus exist only in Python, and a generated node
server without them would claim wiring it does not have. The generated file
says so in its header.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from typing import Any, Callable, Iterable

import jinja2
import yaml

from swarm.desired import DesiredState, desired_from_spec, redis_bulk_limit
from swarm.errors import CompileError
from swarm.keys import SwarmKeys
from swarm.spec.models import NAME_PATTERN, Agent, Spec

#: The distribution name on PyPI (``swarm`` there is an unrelated game).
DISTRIBUTION = "swarm-gitops"
#: Base image of every generated Dockerfile: pinned to a patch release for reproducible builds.
PYTHON_IMAGE = "python:3.11.11-slim-bookworm"
REDIS_IMAGE = "redis:7.0.15-alpine"
REGISTRY_PORT = 8700
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
#: The named build context a handler's code is copied from (``COPY --from=source``), and
#: where docker-compose.yml points it: the directory above ``<out>/`` (the repository
#: root when the output is the default ``compiled/``), or ``$SWARM_SOURCE_DIR``.
SOURCE_CONTEXT = "source"
SOURCE_DIR = "${SWARM_SOURCE_DIR:-../..}"

#: Version ranges of the generated agents' requirements (sorted by name when written).
REQUIREMENT_RANGES: dict[str, str] = {
    "httpx": "httpx>=0.26,<1",
    "redis": "redis>=5.0,<9",
    "starlette": "starlette>=0.37,<2",
    "uvicorn": "uvicorn>=0.29,<1",
}

MANIFEST = "manifest.json"
_NAME = re.compile(NAME_PATTERN)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")

Progress = Callable[[int, int], None]


def pyrepr(value: object) -> str:
    """A Python literal for ``value`` (str, int, bool, None, lists and dicts of them)."""
    return repr(value)


def docker_quote(value: str) -> str:
    """A double-quoted Dockerfile word: ``\\``, ``"`` and ``$`` escaped, control characters
    written as visible escapes (a raw newline would end the instruction)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    escaped = _CONTROL.sub(lambda m: json.dumps(m.group(0))[1:-1].replace("\\", "\\\\"), escaped)
    return f'"{escaped}"'


def compose_escape(value: str) -> str:
    """Escape compose's variable interpolation (``$`` → ``$$``) in a literal value."""
    return value.replace("$", "$$")


def _codelist(items: Iterable[str]) -> str:
    items = list(items)
    return ", ".join(f"`{i}`" for i in items) if items else "—"


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The template environment (built once): strict, no autoescape, package templates."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("swarm.compiler", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pyrepr"] = pyrepr
    env.filters["dockerjson"] = docker_quote
    env.filters["codelist"] = _codelist
    env.filters["code"] = lambda s: f"`{s}`"
    env.filters["verdict"] = lambda allow: "allow" if allow else "deny"
    return env


def dump_json(data: object) -> bytes:
    return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _header(swarm_version: str) -> str:
    # No spec digest here (it is in manifest.json and the desired-state JSON): a
    # one-agent change must not rewrite every generated file and bury the review diff.
    return (
        f"# Generated by swarm {swarm_version}; the spec digest is in manifest.json.\n"
        "# Do not edit: change the spec and run `swarm compile`.\n"
    )


def uses_bus(agent: Agent) -> bool:
    return bool(agent.publishes or agent.subscribes)


def handler_copy(handler: str) -> tuple[str, str]:
    """``(source, destination)`` of the Dockerfile's ``COPY --from=source`` for a handler.

    The image gets the handler's top-level package (``pkg.mod:fn`` copies ``pkg/`` to
    ``/app/pkg/``) or, for an undotted module (``mod:fn``), the module file ``mod.py``;
    ``/app`` is uvicorn's app dir, so the import in server.py finds it. An undotted
    name is always taken to be a file: a handler in a package's ``__init__.py`` is
    named through a submodule instead, and a wrong guess fails the image build
    loudly (``mod.py: not found``) rather than the agent at startup.
    """
    module = handler.partition(":")[0]
    top, dotted, _ = module.partition(".")
    return (f"{top}/", f"./{top}/") if dotted else (f"{top}.py", "./")


def _check_ids(spec: Spec) -> None:
    """Defence in depth: ids become paths, so refuse any the models would refuse."""
    for name in [spec.name, *(a.id for a in spec.agents)]:
        if not _NAME.fullmatch(name) or len(name) > 63:
            raise CompileError(f"refusing to compile: {name!r} is not a valid swarm name or agent id")
    for agent in spec.agents:
        if agent.id in INFRA_SERVICES:
            raise CompileError(
                f"agent id {agent.id!r} collides with the docker-compose service of the same name; rename the agent"
            )


def render_requirements(agent: Agent, swarm_version: str) -> bytes:
    names = ["starlette", "uvicorn"]
    if agent.registry:
        names.append("httpx")
    if uses_bus(agent):
        names.append("redis")
    # the agent's own (handler) requirements: validated by the models (one requirement,
    # no options or URLs) and checked not to repeat a project pinned here
    lines = sorted([f"{DISTRIBUTION}=={swarm_version}", *(REQUIREMENT_RANGES[n] for n in names), *agent.requirements])
    return ("\n".join(lines) + "\n").encode("utf-8")


def render_agent(spec: Spec, agent: Agent, swarm_version: str) -> dict[str, bytes]:
    """The three files of one agent, keyed by their path under ``agents/<id>/``."""
    env = environment()
    bus = uses_bus(agent)
    env_names = ["AGENT_ID", "AGENT_HOST", "AGENT_PORT"]
    if bus:
        env_names.append("REDIS_URL")
    if agent.registry:
        env_names += ["REGISTRY_URL", "SWARM_AGENT_TOKEN"]
    context: dict[str, Any] = {
        "spec": spec,
        "agent": agent,
        "swarm_version": swarm_version,
        "uses_bus": bus,
        "capabilities": sorted(set(agent.capabilities)),
        "publishes": sorted(set(agent.publishes)),
        "subscribes": sorted(set(agent.subscribes)),
        "env_names": env_names,
        "python_image": PYTHON_IMAGE,
        "handler_copy": handler_copy(agent.handler) if agent.handler else None,
        "source_context": SOURCE_CONTEXT,
    }
    base = f"agents/{agent.id}/"
    return {
        base + "Dockerfile": env.get_template("Dockerfile.j2").render(context).encode("utf-8"),
        base + "server.py": env.get_template("server.py.j2").render(context).encode("utf-8"),
        base + "requirements.txt": render_requirements(agent, swarm_version),
    }


def _healthcheck(port: int) -> dict[str, Any]:
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/health/live', timeout=2)"
    return {
        "test": ["CMD", "python", "-c", probe],
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


def env_suffix(agent_id: str) -> str:
    """``web-researcher`` -> ``WEB_RESEARCHER``: the per-agent part of a variable name."""
    return agent_id.upper().replace("-", "_")


def agent_redis_url(swarm: str, agent_id: str) -> str:
    """An agent's REDIS_URL in compose: its own Redis ACL user (``swarm bus apply`` creates
    it; the name is :meth:`swarm.keys.SwarmKeys.redis_user`) and its password from
    ``SWARM_BUS_PASSWORD_<ID>`` (HMAC-SHA256 of the bus secret, :func:`swarm.bus.apply.bus_password`)."""
    var = "SWARM_BUS_PASSWORD_" + env_suffix(agent_id)
    user = SwarmKeys(swarm).redis_user(agent_id)
    return f"redis://{user}:${{{var}:?set {var}: the agent's Redis password}}@{COMPOSE_REDIS_HOST}"


def compose_document(spec: Spec) -> dict[str, Any]:
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
            "build": {"context": "./registry"},
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
            "healthcheck": _healthcheck(REGISTRY_PORT),
            "depends_on": {REDIS_SERVICE: _healthy()},
            "restart": "unless-stopped",
        },
        BUS_APPLY_SERVICE: {
            "build": dict(setup_image),
            "command": ["swarm", "bus", "apply", COMPILED_MOUNT, "--redis-url", COMPOSE_REDIS_URL],
            "environment": {"SWARM_BUS_SECRET": "${SWARM_BUS_SECRET:-}", "SWARM_REGISTRY_SECRET": secrets["SWARM_REGISTRY_SECRET"]},
            "volumes": [f".:{COMPILED_MOUNT}:ro"],
            "depends_on": {REDIS_SERVICE: _healthy()},
            "restart": "on-failure",
        },
        RECONCILER_SERVICE: {
            "build": dict(setup_image),
            "command": [
                "swarm", "reconcile", SPEC_MOUNT, "--watch",
                "--registry-url", COMPOSE_REGISTRY_URL,
                "--redis-url", COMPOSE_REDIS_URL,
                "--compiled-dir", "",  # compiled/ is the user's, written by `swarm compile`
            ],
            "environment": {**secrets, "SWARM_BUS_SECRET": "${SWARM_BUS_SECRET:-}"},
            "volumes": [f"{SPEC_DIR}:{SPEC_MOUNT}:ro"],
            "healthcheck": {"disable": True},  # the image's check is the registry's port; this serves none
            "depends_on": {REDIS_SERVICE: _healthy(), REGISTRY_SERVICE: _healthy()},
            "restart": "unless-stopped",
        },
        CATALOG_PUSH_SERVICE: {
            "build": dict(setup_image),
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
        if uses_bus(agent):
            environment["REDIS_URL"] = agent_redis_url(spec.name, agent.id)
            depends[REDIS_SERVICE] = _healthy()
            depends[BUS_APPLY_SERVICE] = _completed()
        if agent.registry:
            environment["REGISTRY_URL"] = COMPOSE_REGISTRY_URL
            token_var = "SWARM_AGENT_TOKEN_" + env_suffix(agent.id)
            environment["SWARM_AGENT_TOKEN"] = f"${{{token_var}:-}}"
            depends[REGISTRY_SERVICE] = _healthy()
            depends[CATALOG_PUSH_SERVICE] = _completed()
        build: dict[str, Any] = {"context": f"./agents/{agent.id}"}
        if agent.handler:
            build["additional_contexts"] = {SOURCE_CONTEXT: SOURCE_DIR}
        service: dict[str, Any] = {
            "build": build,
            "environment": environment,
            "expose": [str(agent.port)],
            "healthcheck": _healthcheck(agent.port),
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


_PRINTABLE_ASCII = re.compile(r"^[\x20-\x7e]*$")
_YAML_OPTIONS: dict[str, Any] = {
    "sort_keys": True,
    # Non-ASCII is written as \u escapes: PyYAML writes a raw NEL (U+0085) that it
    # then reads back as a line break, and YAML 1.1 and 1.2 parsers disagree on
    # U+2028/U+2029; escapes mean the same to every parser.
    "allow_unicode": False,
    "default_flow_style": False,
    "width": 1 << 16,
}


def _all_printable_ascii(data: object) -> bool:
    if isinstance(data, str):
        return bool(_PRINTABLE_ASCII.fullmatch(data))
    if isinstance(data, dict):
        # an empty key is emitted differently ("? ''" vs "'':"): keep it off the fast path
        return all(isinstance(k, str) and k and _all_printable_ascii(k) and _all_printable_ascii(v) for k, v in data.items())
    if isinstance(data, list):
        return all(_all_printable_ascii(v) for v in data)
    return isinstance(data, (int, float, bool)) or data is None


def safe_dump_yaml(data: dict[str, Any]) -> str:
    """``yaml.safe_dump`` with the options above, byte-identical with or without libyaml.

    libyaml's emitter (``CSafeDumper``) is ~4x faster than PyYAML's, and for
    printable-ASCII scalars the two emit the same bytes (a property test holds
    them to it); for anything else (non-ASCII, control characters) they differ
    — libyaml escapes astral characters — so the pure emitter is used and the
    output never depends on whether libyaml is installed.
    """
    dumper = getattr(yaml, "CSafeDumper", None)
    if dumper is None or not _all_printable_ascii(data):
        dumper = yaml.SafeDumper
    text: str = yaml.dump(data, Dumper=dumper, **_YAML_OPTIONS)  # str, since no stream is given
    return text


COMPOSE_NOTES = (
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
    body = safe_dump_yaml(compose_document(spec))
    notes = COMPOSE_NOTES + (SOURCE_NOTES if any(a.handler for a in spec.agents) else "")
    return (_header(swarm_version) + notes + body).encode("utf-8")


def render_desired(spec: Spec, desired: DesiredState, swarm_version: str) -> dict[str, bytes]:
    acl_md = environment().get_template("acl.md.j2").render(
        spec=spec,
        acl=desired.acl,
        bus=desired.bus,
        swarm_version=swarm_version,
    )
    return {
        "acl.json": dump_json(desired.acl.model_dump(mode="json")),
        "acl.md": acl_md.encode("utf-8"),
        "registry.json": dump_json(desired.registry.model_dump(mode="json")),
        "bus.json": dump_json(desired.bus.model_dump(mode="json")),
    }


def manifest(files: dict[str, bytes], spec: Spec, spec_digest: str, swarm_version: str) -> bytes:
    """``manifest.json``: spec digest, version and the sha256 of every other file."""
    return dump_json(
        {
            "swarm": spec.name,
            "spec_digest": spec_digest,
            "swarm_version": swarm_version,
            "files": {path: "sha256:" + hashlib.sha256(data).hexdigest() for path, data in sorted(files.items())},
        }
    )


def render(
    spec: Spec,
    spec_digest: str,
    *,
    swarm_version: str,
    progress: Progress | None = None,
) -> dict[str, bytes]:
    """Every output file of ``spec``, keyed by its path relative to the output directory
    (``<swarm>/agents/<id>/server.py``, ``<swarm>/acl.json``, ...).

    ``progress(done, total)`` is called after each agent (the CLI draws a bar on a
    terminal). Raises :class:`~swarm.errors.CompileError` for an id that cannot
    become a path or a compose service.
    """
    _check_ids(spec)
    agents = sorted(spec.agents, key=lambda a: a.id)
    files: dict[str, bytes] = {}
    for done, agent in enumerate(agents, start=1):
        files.update(render_agent(spec, agent, swarm_version))
        if progress is not None:
            progress(done, len(agents))
    files.update(render_desired(spec, desired_from_spec(spec, spec_digest), swarm_version))
    files["docker-compose.yml"] = render_compose(spec, swarm_version)
    files["registry/Dockerfile"] = (
        environment()
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
    files[MANIFEST] = manifest(files, spec, spec_digest, swarm_version)
    return {f"{spec.name}/{path}": data for path, data in sorted(files.items())}
