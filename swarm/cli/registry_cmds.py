"""``swarm registry serve|push`` and ``swarm token``: wiring only.

``serve`` builds a :class:`~swarm.registry.config.RegistryConfig` (flags plus
SWARM_REGISTRY_SECRET / SWARM_ADMIN_TOKEN; SWARM_REDIS_PASSWORD, the password of
Redis' default user, is applied to a Redis URL without credentials) and runs the app under uvicorn; it
refuses to start without a secret unless ``--insecure`` (exit 2). The uvicorn
access log is OFF by default: it costs a large share of a tiny endpoint's
throughput; ``--access-log`` turns it on. ``push`` sends
``compiled/<swarm>/registry.json`` with the same code the reconciler uses
(:func:`swarm.registry.catalog_push.push_catalog`). ``token AGENT_ID`` prints
the agent's bearer token (``--admin``: the admin token, ``--read``: the read-only
token, ``--bus``: the agent's Redis password). Tokens bind the swarm name, which
is read from ``--spec`` (default specs/); an id the spec does not declare is
refused (exit 2).
"""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path
from typing import Any

from swarm.cli import EXIT_OK
from swarm.cli.output import add_output_option, emit, fail
from swarm.errors import InvalidRequestError
from swarm.redis_auth import bus_secret_from_env, redis_url_from_env
from swarm.registry.config import DEFAULT_PORT, DEFAULT_REDIS_URL, EVENTS_MAXLEN


def _name(value: str) -> str:
    from swarm.spec.names import NAME_MAX, NAME_PATTERN, is_name

    if not is_name(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a valid name ({NAME_PATTERN}, at most {NAME_MAX} chars)")
    return value


def register(subparsers: Any) -> None:
    reg = subparsers.add_parser("registry", help="run the agent registry or push its catalog")
    sub = reg.add_subparsers(dest="registry_command", metavar="ACTION")
    sub.required = True

    serve = sub.add_parser("serve", help="run the registry HTTP service (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None,
                       help="port (default: the port of the spec's registry.url when --swarm is not given, else 8700)")
    serve.add_argument("--redis-url", default=None,
                       help="Redis holding the registry state (default: the spec's bus.redis_url when --swarm is "
                            "not given, else redis://127.0.0.1:6379/0)")
    serve.add_argument("--swarm", default=None, type=_name, metavar="NAME",
                       help="the swarm this registry serves (default: metadata.name of --spec)")
    serve.add_argument("--spec", default=None, type=Path, metavar="SPEC",
                       help="spec to take the swarm, redis_url and port from when --swarm is not given "
                            "(default specs/)")
    serve.add_argument("--insecure", action="store_true",
                       help="serve without authentication when SWARM_REGISTRY_SECRET is unset")
    serve.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=False,
                       help="uvicorn access log (default off: it costs throughput)")
    serve.add_argument("--probe", action=argparse.BooleanOptionalAction, default=True,
                       help="run the agents' health prober (default on)")
    serve.add_argument("--route", action=argparse.BooleanOptionalAction, default=True,
                       help="run the bus's trusted router (outboxes -> topic logs and inboxes; default on)")
    serve.add_argument("--probe-interval", type=float, default=None, metavar="S",
                       help="seconds between health probes of each live agent (default: the spec's "
                            "bus.breaker.probe_interval_seconds, read from bus.json in Redis; 5 without it)")
    serve.add_argument("--sweep-interval", type=float, default=None, metavar="S",
                       help="seconds between lease sweeps (default: catalog ttl / 10, at least 0.1)")
    serve.add_argument("--ping-interval", type=float, default=15.0, metavar="S",
                       help="seconds between SSE keep-alive comments (default 15)")
    serve.add_argument("--events-maxlen", type=int, default=EVENTS_MAXLEN, metavar="N",
                       help=f"approximate cap of the watch event stream (default {EVENTS_MAXLEN})")
    serve.add_argument("--watch-queue-size", type=int, default=1000, metavar="N",
                       help="events a watch client may fall behind before it is disconnected to resume "
                            "by Last-Event-ID (default 1000)")
    serve.add_argument("--min-protect", type=int, default=10, metavar="N",
                       help="mass-eviction guard: least number of expiries that can trigger it (default 10)")
    serve.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    serve.set_defaults(handler=run_serve)

    push = sub.add_parser("push", help="push compiled/<swarm>/registry.json to the registry (admin token)")
    push.add_argument("compiled", type=Path, metavar="DIR", help="compiled/<swarm> directory (or a registry.json)")
    push.add_argument("--registry-url", default=None, help="registry base URL (default: the catalog's registry.url)")
    push.add_argument("--revision", default=None,
                      help="revision recorded with the catalog (default: git HEAD of DIR, if any)")
    add_output_option(push)
    push.set_defaults(handler=run_push)

    token = subparsers.add_parser("token", help="print an agent's registry bearer token")
    token.add_argument("agent_id", nargs="?", type=_name, metavar="AGENT_ID",
                       help="an agent the spec declares")
    kind = token.add_mutually_exclusive_group()
    kind.add_argument("--admin", action="store_true", help="print the admin token instead")
    kind.add_argument("--read", action="store_true",
                      help="print the read-only token instead (GET /agents, /catalog, /status, the watch; "
                           "private metadata stays hidden)")
    token.add_argument("--bus", action="store_true",
                       help="print the agent's Redis password instead (its Redis user swarm.<swarm>.<id>; "
                            "key SWARM_BUS_SECRET, default SWARM_REGISTRY_SECRET)")
    token.add_argument("--spec", default=Path("specs"), type=Path, metavar="SPEC",
                       help="the spec naming the swarm and declaring the agents (default specs/)")
    add_output_option(token)
    token.set_defaults(handler=run_token)


def run_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from swarm.registry.config import config_from_env
    from swarm.registry.server import create_app

    swarm, redis_url, port = _serve_target(args)
    redis_url = redis_url_from_env(redis_url)  # SWARM_REDIS_PASSWORD for a URL without credentials
    config = config_from_env(
        os.environ,
        swarm=swarm,
        redis_url=redis_url,
        host=args.host,
        port=port,
        insecure=args.insecure,
        access_log=args.access_log,
        probe=args.probe,
        route=args.route,
        probe_interval=args.probe_interval,  # None: the spec's, from bus.json
        sweep_interval=args.sweep_interval,
        ping_interval=args.ping_interval,
        events_maxlen=args.events_maxlen,
        watch_queue_size=args.watch_queue_size,
        min_protect=args.min_protect,
    )
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level.lower() != "debug":
        # httpx logs every request at INFO: the prober's health checks would be one line per agent
        # per probe interval. The prober logs changes of state (breaker transitions) itself.
        for noisy in ("httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if not config.auth_enabled:
        logging.getLogger("swarm.registry").warning("serving WITHOUT authentication (--insecure)")
    uvicorn.run(
        create_app(config),
        host=config.host,
        port=config.port,
        access_log=config.access_log,
        log_level=args.log_level,
        lifespan="on",
    )
    return EXIT_OK


def _serve_target(args: argparse.Namespace) -> tuple[str, str, int]:
    """(swarm, redis_url, port): flags win; without --swarm the spec supplies what is missing."""
    if args.swarm is not None and args.spec is None:
        return args.swarm, args.redis_url or DEFAULT_REDIS_URL, args.port or DEFAULT_PORT
    from urllib.parse import urlsplit

    from swarm.spec.loader import load_spec

    spec = load_spec(args.spec or Path("specs"))
    if args.swarm is not None and args.swarm != spec.name:
        raise InvalidRequestError(f"--swarm {args.swarm!r} but the spec {args.spec} declares swarm {spec.name!r}")
    port = args.port or urlsplit(spec.swarm.registry.url).port or DEFAULT_PORT
    return spec.name, args.redis_url or spec.swarm.bus.redis_url, port


def _git_head(directory: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(directory if directory.is_dir() else directory.parent), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_push(args: argparse.Namespace) -> int:
    from swarm.registry.catalog_push import admin_token_from_env, load_catalog, push_catalog

    catalog = load_catalog(args.compiled)
    url = args.registry_url or catalog.settings.url
    revision = args.revision if args.revision is not None else _git_head(args.compiled)
    result = push_catalog(url, catalog, revision, admin_token_from_env(os.environ, catalog.swarm))
    state = "changed" if result.changed else "unchanged"
    if args.output == "json":
        emit(args, {"swarm": catalog.swarm, "agents": len(catalog.agents), "url": url, "changed": result.changed,
                    "revision": result.revision, "digest": result.digest})
        return EXIT_OK
    print(f"pushed catalog of {catalog.swarm} ({len(catalog.agents)} agents) to {url}: {state}, "
          f"revision {result.revision or '-'}, digest {result.digest[:12]}")
    return EXIT_OK


def run_token(args: argparse.Namespace) -> int:
    from swarm.registry.auth import admin_token_from_env, agent_token, read_token
    from swarm.registry.config import ADMIN_TOKEN_ENV, SECRET_ENV
    from swarm.spec.index import spec_index

    if args.bus:
        return _print_bus_password(args)
    if (args.admin or args.read) and args.agent_id is not None:
        return fail(args, "--admin and --read take no AGENT_ID")
    if not (args.admin or args.read) and args.agent_id is None:
        return fail(args, "give AGENT_ID (or --admin, --read)")
    # the name and ids of a valid spec, cached by content (swarm.spec.index); an invalid or
    # missing spec raises SpecError: the dispatcher prints it (exit 2)
    spec = spec_index(args.spec)
    secret = os.environ.get(SECRET_ENV) or None
    if args.admin:
        token = admin_token_from_env(os.environ, spec.swarm)
        if token is None:
            return fail(args, f"neither {ADMIN_TOKEN_ENV} nor {SECRET_ENV} is set")
        emit(args, {"swarm": spec.swarm, "kind": "admin", "agent_id": None, "token": token}, lambda d: d["token"])
        return EXIT_OK
    if secret is None:
        return fail(args, f"{SECRET_ENV} is not set")
    if args.read:
        emit(args, {"swarm": spec.swarm, "kind": "read", "agent_id": None, "token": read_token(secret, spec.swarm)},
             lambda d: d["token"])
        return EXIT_OK
    if not spec.declares(args.agent_id):
        return fail(args, f"agent {args.agent_id!r} is not declared in {args.spec} (swarm {spec.swarm!r}); "
              f"declared: {', '.join(spec.agents) or 'none'}")
    emit(args, {"swarm": spec.swarm, "kind": "agent", "agent_id": args.agent_id,
                "token": agent_token(secret, spec.swarm, args.agent_id)}, lambda d: d["token"])
    return EXIT_OK


def _print_bus_password(args: argparse.Namespace) -> int:
    from swarm.redis_auth import bus_password
    from swarm.spec.index import spec_index

    if args.agent_id is None:
        return fail(args, "give AGENT_ID with --bus")
    secret = bus_secret_from_env()
    if secret is None:
        return fail(args, "neither SWARM_BUS_SECRET nor SWARM_REGISTRY_SECRET is set")
    spec = spec_index(args.spec)
    if not spec.declares(args.agent_id):
        return fail(args, f"agent {args.agent_id!r} is not declared in {args.spec}")
    emit(args, {"swarm": spec.swarm, "kind": "bus", "agent_id": args.agent_id,
                "token": bus_password(secret, spec.swarm, args.agent_id)}, lambda d: d["token"])
    return EXIT_OK
