"""The ``node`` runtime: an agent is a NestJS application in TypeScript (pure: no I/O at render time).

For an agent with ``runtime: node`` the compiler writes ``agents/<id>/``:

* ``package.json`` with exact versions (:data:`DEPENDENCIES`, :data:`DEV_DEPENDENCIES`),
  scripts ``build`` (``tsc -p tsconfig.json``) and ``start`` (``node dist/main.js``);
  ``package-lock.json`` (the lock shipped beside this module, :data:`LOCK_FILE`, with
  the agent's name and version), so ``npm ci`` installs the same tree everywhere;
  ``.npmrc`` (``install-links=true``: the shared package is installed as a copy, so
  its imports resolve to the agent's own ``node_modules``);
* ``tsconfig.json``, ``src/main.ts`` (bootstrap, shutdown hooks), ``src/app.module.ts``
  (the agent's module), ``src/config.ts`` (what the spec says about the agent, each
  value a JSON literal) and ``src/handler.ts`` (the spec's handler or the default one);
* a multi-stage ``Dockerfile``: ``npm ci`` and ``tsc`` in a build stage, then a slim
  stage with production dependencies only, as user 10001, HEALTHCHECK by ``node -e``.

The code every node agent shares (registry client, bus client, health and readiness,
handler loop) is the local npm package ``@swarm-gitops/agent-runtime``, emitted once
per swarm under :data:`SHARED_DIR` (``<swarm>/node/agent-runtime/``) and depended on
as ``file:../../node/agent-runtime``. Its TypeScript source and the JavaScript and
declarations ``tsc`` built from it ship inside swarm (``agent-runtime/`` beside this
module); ``src/constants.ts`` there is generated from the Python definitions
(:func:`render_constants`: key layout, entry fields, router group, retry constants)
and a test holds the two equal, so the bus has one definition.

The spec's ``handler`` for a node agent is ``<path>.ts:<export>`` or
``<path>.js:<export>``, the path relative to the directory holding ``compiled/``
(the ``source`` build context, as for Python handlers). The image copies the path's
top-level directory (or the file, when it has no directory) to ``src/user/``; a
local ``npm run build`` copies it there first (``copy-handler.mjs``, the ``prebuild``
script; ``SWARM_SOURCE_DIR`` as for compose). The handler is called with the
message and a context offering ``publish``; the message is acked once the handler's
promise and every publish it started resolved.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

from swarm.runtimes.python.agent_runtime import RETRY_BASE, RETRY_CAP
from swarm.backoff import MIN_DELAY
from swarm.bus.routing import CONTENT_TYPE, FIELDS, MAX_MESSAGE_ID
from swarm.errors import CompileError
from swarm.keys import ROUTER_GROUP, SwarmKeys
from swarm.runtimes import SOURCE_CONTEXT, SOURCE_DIR, DemoCommand
from swarm.spec.models import NODE_HANDLER_PATTERN, Agent, Spec

#: Base image of the node Dockerfiles (build argument NODE_IMAGE): pinned to a patch release.
NODE_IMAGE = "node:20.20.2-bookworm-slim"
#: The shared package: its npm name and where it is emitted, relative to ``<swarm>/``.
SHARED_PACKAGE = "@swarm-gitops/agent-runtime"
SHARED_DIR = "node/agent-runtime"
#: How an agent's package.json names the shared package (relative to ``agents/<id>/``).
SHARED_SPEC = f"file:../../{SHARED_DIR}"
#: Runtime dependencies of every node agent, exact versions (current majors).
DEPENDENCIES: dict[str, str] = {
    "@nestjs/common": "12.5.1",
    "@nestjs/core": "12.5.1",
    "@nestjs/platform-express": "12.5.1",
    "ioredis": "6.0.0",
    "reflect-metadata": "0.2.2",
    "rxjs": "7.8.2",
}
#: Build-time dependencies (the build stage only): TypeScript 7's ``tsc`` and Node 20's types.
DEV_DEPENDENCIES: dict[str, str] = {
    "@types/node": "20.19.43",
    "typescript": "7.0.2",
}
#: What the shared package imports; the agent's copies satisfy them (one @nestjs/core per process).
PEER_DEPENDENCIES = ("@nestjs/common", "@nestjs/core", "ioredis", "reflect-metadata", "rxjs")
#: The lock of the fixed dependency set (agent ``swarm-agent`` 0.0.0, shared package 0.0.0).
LOCK_FILE = "package-lock.json"
LOCK_TEMPLATE_NAME = "swarm-agent"
LOCK_TEMPLATE_VERSION = "0.0.0"
#: The default handler's and the generated files' names, under ``agents/<id>/``.
NPMRC = "install-links=true\n"
#: Where the image (and a local build) puts the handler's code, under ``agents/<id>/``.
USER_DIR = "src/user"
_NODE_HANDLER = re.compile(NODE_HANDLER_PATTERN)
#: Fields every inbox entry has (swarm.keys "Entry formats"; a test holds it equal to the Python bus's).
INBOX_REQUIRED_FIELDS = ("topic", "message_id", "sender", "payload")
#: The registry client's retry constants (swarm.registry.client; a test holds them equal).
REGISTRY_RETRY = {
    "REGISTRY_BASE_RETRY_DELAY": 0.2,
    "REGISTRY_MIN_RETRY_DELAY": 0.05,
    "REGISTRY_MAX_RETRY_DELAY": 1.5,
    "REGISTRY_MIN_ADOPTED_INTERVAL": 0.1,
}
_SEMVER = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
#: Placeholders of the key templates in constants.ts (outside every name's charset).
_SWARM_MARK, _AGENT_MARK = "<swarm>", "<agent>"


def npm_version(version: str) -> str:
    """``version`` as npm accepts it: SemVer as is, anything else (a PEP 440 dev build) as a
    pre-release of 0.0.0 whose identifiers keep the original's characters."""
    if _SEMVER.fullmatch(version):
        return version
    ident = re.sub(r"[^0-9A-Za-z-]+", ".", version).strip(".") or "0"
    ident = ".".join(p.lstrip("0") or "0" if p.isdigit() else p for p in ident.split("."))
    return f"0.0.0-{ident}"


def handler_parts(handler: str) -> tuple[str, str]:
    """``(path, export)`` of a node handler ``handlers/architect.ts:handle``."""
    if not _NODE_HANDLER.fullmatch(handler):
        raise CompileError(f"node handler {handler!r} is not '<relative path>.ts|.js:<export>'")
    path, _, export = handler.rpartition(":")
    if any(part in (".", "..") for part in path.split("/")):
        raise CompileError(f"node handler {handler!r} may not name '.' or '..' in its path")
    return path, export


def handler_copy(handler: str) -> tuple[str, str]:
    """``(source, destination)`` of the Dockerfile's ``COPY --from=source`` for a node handler:
    the path's top-level directory (``handlers/a.ts`` copies ``handlers/`` to
    ``src/user/handlers/``), or the file itself when it has no directory."""
    path, _ = handler_parts(handler)
    top, slash, _ = path.partition("/")
    return (f"{top}/", f"{USER_DIR}/{top}/") if slash else (path, f"{USER_DIR}/")


def handler_import(handler: str) -> tuple[str, str]:
    """``(module specifier, export)`` the generated ``src/handler.ts`` imports."""
    path, export = handler_parts(handler)
    stem = path[: -len(".ts")] + ".js" if path.endswith(".ts") else path
    return "./user/" + stem, export


# -- constants.ts ------------------------------------------------------------------


def key_templates() -> dict[str, str]:
    """The Redis keys a node agent touches, as templates over ``<swarm>`` and ``<agent>``,
    computed by :class:`swarm.keys.SwarmKeys` itself."""
    keys = SwarmKeys(_SWARM_MARK)
    return {
        "acl": keys.acl,
        "agentDeadLetter": keys.agent_dead_letter(_AGENT_MARK),
        "breaker": keys.breaker(_AGENT_MARK),
        "bus": keys.bus,
        "inbox": keys.inbox(_AGENT_MARK),
        "outbox": keys.outbox(_AGENT_MARK),
        "receipts": keys.receipts(_AGENT_MARK),
    }


def constants() -> dict[str, Any]:
    """Every value constants.ts exports, by its TypeScript name."""
    return {
        "KEY_TEMPLATES": key_templates(),
        "SWARM_MARK": _SWARM_MARK,
        "AGENT_MARK": _AGENT_MARK,
        "ROUTER_GROUP": ROUTER_GROUP,
        "OUTBOX_FIELDS": sorted(FIELDS - {"sender"}),
        "INBOX_REQUIRED_FIELDS": list(INBOX_REQUIRED_FIELDS),
        "CONTENT_TYPE": CONTENT_TYPE,
        "MAX_MESSAGE_ID": MAX_MESSAGE_ID,
        "BACKOFF_MIN_DELAY": MIN_DELAY,
        "BUS_RETRY_BASE": RETRY_BASE,
        "BUS_RETRY_CAP": RETRY_CAP,
        **REGISTRY_RETRY,
    }


def render_constants() -> str:
    """``src/constants.ts`` of the shared package, from the Python definitions."""
    lines = [
        "// Generated from swarm's Python definitions (swarm.keys, swarm.bus.routing, swarm.backoff,",
        "// swarm.runtimes.python.agent_runtime, swarm.registry.client) by swarm.runtimes.node.render_constants.",
        "// Do not edit: a test compares this file with what the Python values render.",
        "",
    ]
    for name, value in constants().items():
        literal = json.dumps(value, indent=2, sort_keys=True)
        if isinstance(value, (dict, list)):
            literal += " as const"
        lines.append(f"export const {name} = {literal};")
    return "\n".join(lines) + "\n"


# -- files ---------------------------------------------------------------------------


def _package_root() -> Path:
    return Path(str(resources.files("swarm.runtimes.node")))


def environment() -> Any:
    """The node templates' environment (swarm.compiler.templating's: strict, escaping filters).
    Imported on use: swarm.compiler imports the runtimes."""
    from swarm.compiler.templating import environment as template_environment

    return template_environment("swarm.runtimes.node")


def js_block(value: object) -> str:
    """A multi-line JSON (so TypeScript) literal; non-ASCII, U+2028/U+2029, ``<`` and ``>``
    escaped as the ``jsliteral`` filter does."""
    text = json.dumps(value, ensure_ascii=True, indent=2)
    return text.replace("<", "\\u003c").replace(">", "\\u003e")


def _json(data: object) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _header(swarm_version: str) -> str:
    from swarm.compiler.templating import header

    return header(swarm_version, "//")


@functools.lru_cache(maxsize=1)
def shipped_lock() -> dict[str, Any]:
    """The lock of the fixed dependency set, as shipped (agent and shared package at 0.0.0)."""
    data: dict[str, Any] = json.loads((_package_root() / LOCK_FILE).read_text(encoding="utf-8"))
    return data


def package_json(agent: Agent, swarm_version: str) -> dict[str, Any]:
    scripts = {"build": "tsc -p tsconfig.json", "start": "node dist/main.js"}
    if agent.handler:
        scripts = {"prebuild": "node copy-handler.mjs", **scripts}
    return {
        "name": agent.id,
        "version": npm_version(agent.version),
        "private": True,
        "description": f"swarm agent {agent.id} (generated by swarm {swarm_version})",
        "type": "module",
        "main": "dist/main.js",
        "scripts": scripts,
        "dependencies": dict(sorted({**DEPENDENCIES, SHARED_PACKAGE: SHARED_SPEC}.items())),
        "devDependencies": dict(sorted(DEV_DEPENDENCIES.items())),
        "engines": {"node": ">=20"},
    }


def lock_json(agent: Agent, swarm_version: str) -> dict[str, Any]:
    """The shipped lock with the agent's name and version and the shared package's version."""
    lock = json.loads(json.dumps(shipped_lock()))
    version = npm_version(agent.version)
    lock["name"] = agent.id
    lock["version"] = version
    root = lock["packages"][""]
    root["name"] = agent.id
    root["version"] = version
    shared = lock["packages"][f"node_modules/{SHARED_PACKAGE}"]
    shared["version"] = npm_version(swarm_version)
    shared["resolved"] = SHARED_SPEC
    return dict(lock)


def tsconfig() -> dict[str, Any]:
    return {
        "compilerOptions": {
            "target": "es2022",
            "module": "nodenext",
            "moduleResolution": "nodenext",
            "experimentalDecorators": True,
            "emitDecoratorMetadata": True,
            "strict": True,
            "allowJs": True,
            "skipLibCheck": True,
            "types": ["node"],
            "rootDir": "src",
            "outDir": "dist",
        },
        "include": ["src"],
    }


def shared_package_json(swarm_version: str) -> dict[str, Any]:
    return {
        "name": SHARED_PACKAGE,
        "version": npm_version(swarm_version),
        "private": True,
        "description": f"What every node agent of a swarm shares (generated by swarm {swarm_version})",
        "type": "module",
        "main": "dist/index.js",
        "types": "dist/index.d.ts",
        "exports": {".": {"types": "./dist/index.d.ts", "default": "./dist/index.js"}},
        "files": ["dist", "src"],
        "peerDependencies": {name: DEPENDENCIES[name] for name in PEER_DEPENDENCIES},
    }


def _context(spec: Spec, agent: Agent, swarm_version: str) -> dict[str, Any]:
    uses_bus = bool(agent.publishes or agent.subscribes)
    config = {
        "swarm": spec.name,
        "agentId": agent.id,
        "agentName": agent.display_name,
        "version": agent.version,
        "role": agent.role,
        "capabilities": sorted(set(agent.capabilities)),
        "publishes": sorted(set(agent.publishes)),
        "subscribes": sorted(set(agent.subscribes)),
        "port": agent.port,
        "redisUrl": spec.swarm.bus.redis_url if uses_bus else None,
        "registry": {
            "url": spec.swarm.registry.url,
            "ttlSeconds": spec.swarm.registry.ttl_seconds,
            "heartbeatInterval": spec.swarm.registry.effective_heartbeat_interval,
        } if agent.registry else None,
    }
    return {
        "spec": spec,
        "agent": agent,
        "swarm_version": swarm_version,
        "header": _header(swarm_version),
        "config": js_block(config),
        "uses_bus": uses_bus,
        "node_image": NODE_IMAGE,
        "shared_dir": SHARED_DIR,
        "source_context": SOURCE_CONTEXT,
        "handler_copy": handler_copy(agent.handler) if agent.handler else None,
        "handler_import": handler_import(agent.handler) if agent.handler else None,
        "user_dir": USER_DIR,
    }


class NodeRuntime:
    """``runtime: node``: see the module docstring."""

    name = "node"

    def agent_files(self, spec: Spec, agent: Agent, swarm_version: str) -> dict[str, bytes]:
        env = environment()
        context = _context(spec, agent, swarm_version)
        files: dict[str, bytes] = {
            "package.json": _json(package_json(agent, swarm_version)),
            "package-lock.json": _json(lock_json(agent, swarm_version)),
            ".npmrc": NPMRC.encode(),
            "tsconfig.json": _json(tsconfig()),
            "Dockerfile": env.get_template("Dockerfile.j2").render(context).encode("utf-8"),
        }
        for name in ("main.ts", "app.module.ts", "config.ts", "handler.ts"):
            files["src/" + name] = env.get_template(name + ".j2").render(context).encode("utf-8")
        if agent.handler:
            files["copy-handler.mjs"] = env.get_template("copy-handler.mjs.j2").render(context).encode("utf-8")
        return dict(sorted(files.items()))

    def shared_files(self, spec: Spec, swarm_version: str) -> dict[str, bytes]:
        """The shared package under ``node/agent-runtime/`` and the build context's .dockerignore."""
        root = _package_root() / "agent-runtime"
        files: dict[str, bytes] = {
            f"{SHARED_DIR}/package.json": _json(shared_package_json(swarm_version)),
            ".dockerignore": environment().get_template("dockerignore.j2").render(
                swarm_version=swarm_version, shared_dir=SHARED_DIR).encode("utf-8"),
        }
        for sub in ("src", "dist"):
            for path in sorted((root / sub).iterdir()):
                if path.is_file() and path.suffix in (".ts", ".js"):
                    files[f"{SHARED_DIR}/{sub}/{path.name}"] = path.read_bytes()
        return dict(sorted(files.items()))

    def compose_build(self, spec: Spec, agent: Agent) -> dict[str, Any]:
        """Context ``.`` (``<swarm>/``: the agent's folder and the shared package), its Dockerfile."""
        build: dict[str, Any] = {"context": ".", "dockerfile": f"agents/{agent.id}/Dockerfile"}
        if agent.handler:
            build["additional_contexts"] = {SOURCE_CONTEXT: SOURCE_DIR}
        return build

    def healthcheck(self, port: int) -> list[str]:
        return ["CMD", "node", "-e", live_probe(port)]

    def demo(self, agent_dir: Path, port: int) -> DemoCommand:
        return DemoCommand(
            command=["node", "dist/main.js", "--host", "127.0.0.1"],  # a demo listens on loopback only
            setup=[["npm", "ci", "--no-audit", "--no-fund"], ["npm", "run", "build"]],
            requires=["node", "npm"],
        )


def live_probe(port: int) -> str:
    """The ``node -e`` script of the healthcheck: exit 0 when /health/live answers 2xx within 2 s."""
    return (
        f"fetch('http://127.0.0.1:{port}/health/live',{{signal:AbortSignal.timeout(2000)}})"
        ".then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
    )


RUNTIME = NodeRuntime()
