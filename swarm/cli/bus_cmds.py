"""``swarm bus apply|publish|read|breaker|route``: wiring of the event bus to the command line.

Every command finds the swarm and its Redis through the spec (``--spec``, default
``specs/``: ``metadata.name`` and ``bus.redis_url``); ``--redis-url`` overrides the
URL, and ``SWARM_REDIS_PASSWORD`` is applied to a URL without credentials (the
password of Redis' default user, :mod:`swarm.redis_auth`). ``apply`` installs either a compiled directory (``compiled/<swarm>``: its
``bus.json``/``acl.json``, the reviewed artifacts) or, without one, the desired state
built from the spec exactly as the reconciler builds it. With a directory and no
``--spec`` the URL is the one compiled into ``bus.json`` (the spec's, at compile
time); an explicit ``--spec`` must name the same swarm and supplies the URL, and a
directory compiled from another revision of that spec is applied with a warning.
For the Redis users ``apply`` reads the bus secret from ``SWARM_BUS_SECRET`` (else
``SWARM_REGISTRY_SECRET``) — the only place the bus reads the environment.

``publish`` goes the way an agent's own publish goes: the checks of
:class:`~swarm.bus.EventBus` in process, then one XADD to that agent's outbox (with
the CLI's trusted connection, but to the agent's outbox, so the router authenticates
the entry as the agent's and applies the agent's rights), then it waits for the
router's receipt and prints the entry's id in the topic's log, followed by
``duplicate`` when the router already had that message id from that agent.

``read`` is for inspection and never changes delivery state: it checks that the
agent may subscribe to the topic (the agent's rights, as the router applies them)
and then reads the topic's log with XREVRANGE / XREAD, without touching any inbox,
consumer group or ack. Entries are read as bytes and printed as JSON lines: bytes
that are not UTF-8 are shown backslash-escaped and a payload that is not JSON is
shown as a string, so a hostile entry never makes it print a traceback.

``route`` runs the trusted router (:class:`swarm.bus.router.Router`) until SIGTERM or
SIGINT (then exit 0): ``--swarm`` with ``--redis-url`` needs no spec; ``--consumer``
names it in the ``router`` group (default host:pid:random); any number may run at once.
``SWARM_FAULT_ROUTER`` (tests only) makes it SIGKILL itself at a point of a batch.

Exit codes: 0 ok (a duplicate publish is ok and prints the original entry id),
1 refused (ACL, breaker open, undeclared topic, payload too large, no router
answered the publish, a prune of more than half without --force-prune),
2 usage or invalid input (bad JSON, unknown agent, invalid spec).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Coroutine

from swarm.cli import EXIT_DIFF, EXIT_INVALID, EXIT_OK
from swarm.cli.output import add_output_option, emit, fail, wants_json
from swarm.errors import BusError, InvalidRequestError, NotDeclaredError, RouterUnavailableError
from swarm.redis_auth import bus_secret_from_env, redis_url_from_env


def register(subparsers: Any) -> None:
    bus = subparsers.add_parser("bus", help="the event bus: apply, publish, read, breaker",
                                description="Install and use the event bus on Redis Streams.")
    sub = bus.add_subparsers(dest="bus_command", metavar="COMMAND", parser_class=type(bus))
    sub.required = True

    a = sub.add_parser("apply", help="create streams, groups, ACL table, settings and Redis users",
                       description="Idempotently install the bus in Redis: COMPILED_DIR's bus.json and acl.json, "
                                   "or without COMPILED_DIR the desired state of the spec (--spec).")
    a.add_argument("compiled", metavar="COMPILED_DIR", nargs="?",
                   help="compiled/<swarm> directory (default: build the bus from the spec, like reconcile)")
    a.add_argument("--prune", action="store_true", help="delete streams, groups and users no longer declared")
    a.add_argument("--force-prune", action="store_true",
                   help="allow a prune that removes more than half of the topic streams or agent users")
    _common(a, spec_help="spec file or directory (default: specs/); with COMPILED_DIR it must be the same "
                         "swarm and gives the Redis URL, without --spec the URL compiled into bus.json is used")
    a.set_defaults(handler=run_apply)

    p = sub.add_parser("publish", help="publish one JSON message as an agent (through its outbox)",
                       description="Publish JSON (or '-' for stdin) to TOPIC as AGENT through AGENT's outbox; "
                                   "waits for the router and prints the topic entry id (and 'duplicate').")
    p.add_argument("topic", metavar="TOPIC")
    p.add_argument("payload", metavar="JSON")
    p.add_argument("--as", dest="agent", required=True, metavar="AGENT", help="publishing agent id")
    p.add_argument("--id", dest="message_id", metavar="ID",
                   help="message id (dedup key per sender); default <agent>:<outbox entry id>")
    p.add_argument("--timeout", type=float, default=2.0, metavar="SECONDS",
                   help="how long to wait for the router's receipt (default 2)")
    _common(p)
    add_output_option(p)
    p.set_defaults(handler=run_publish)

    r = sub.add_parser("read", help="show a topic's log (inspection: no inbox, no ack)",
                       description="Print the last N entries of TOPIC's log as JSON lines, if AGENT may subscribe.")
    r.add_argument("topic", metavar="TOPIC")
    r.add_argument("--as", dest="agent", required=True, metavar="AGENT", help="reading agent id (for the ACL)")
    r.add_argument("--count", type=_positive, default=10, metavar="N", help="entries to show (default 10)")
    r.add_argument("--follow", action="store_true", help="keep printing new entries until interrupted")
    _common(r)
    r.set_defaults(handler=run_read)

    b = sub.add_parser("breaker", help="show or reset an agent's circuit breaker",
                       description="Show state, failures and cooldown left of AGENT's breaker, or --reset it.")
    b.add_argument("agent", metavar="AGENT")
    b.add_argument("--reset", action="store_true", help="close the breaker now")
    _common(b)
    add_output_option(b)
    b.set_defaults(handler=run_breaker)

    register_route(sub)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _common(parser: argparse.ArgumentParser, spec_help: str = "spec file or directory (default: specs/)") -> None:
    # default None, not "specs": `apply COMPILED_DIR` must tell an explicit --spec from the default
    parser.add_argument("--spec", default=None, metavar="SPEC", help=spec_help)
    parser.add_argument("--redis-url", metavar="URL", help="override the spec's bus.redis_url")


def _target(args: argparse.Namespace) -> tuple[str, str, set[str]]:
    """(swarm name, redis url, declared agent ids) from the spec, with --redis-url overriding."""
    from swarm.spec.loader import load_spec_full

    spec = load_spec_full(args.spec or "specs").spec
    return spec.name, redis_url_from_env(args.redis_url or spec.swarm.bus.redis_url), {a.id for a in spec.agents}


def _refusable(run: Callable[[], Coroutine[Any, Any, int]], args: argparse.Namespace | None = None) -> int:
    import asyncio  # here, not at the top: the parser loads without asyncio

    try:
        return asyncio.run(run())
    except (InvalidRequestError, NotDeclaredError) as exc:
        return fail(args, str(exc), EXIT_INVALID, prefix="swarm bus: error: ")
    except BusError as exc:
        return fail(args, str(exc), EXIT_DIFF, kind="refused", prefix="swarm bus: refused: ")
    except RouterUnavailableError as exc:
        return fail(args, str(exc), EXIT_DIFF, kind="unavailable", prefix="swarm bus: error: ")


def run_apply(args: argparse.Namespace) -> int:
    from swarm.bus.apply import apply_bus
    from swarm.desired import AclDocument, BusPlan, desired_from_spec
    from swarm.spec.loader import load_spec_full

    if args.compiled is None:
        loaded = load_spec_full(args.spec or "specs")  # an invalid spec: main prints it, exit 2
        desired = desired_from_spec(loaded.spec, loaded.digest)
        plan, acl = desired.bus, desired.acl
        url = args.redis_url or plan.settings.redis_url
    else:
        directory = Path(args.compiled)
        try:
            plan = BusPlan.model_validate_json((directory / "bus.json").read_bytes())
            acl = AclDocument.model_validate_json((directory / "acl.json").read_bytes())
        except OSError as exc:
            print(f"swarm bus apply: cannot read {directory}: {exc} (run `swarm compile` first)", file=sys.stderr)
            return EXIT_INVALID
        except ValueError as exc:
            print(f"swarm bus apply: {directory}: invalid compiled output: {exc}", file=sys.stderr)
            return EXIT_INVALID
        url = args.redis_url or plan.settings.redis_url
        if args.spec is not None:
            loaded = load_spec_full(args.spec)
            if loaded.spec.name != plan.swarm:
                print(f"swarm bus apply: {directory} is swarm {plan.swarm!r} but the spec {args.spec} is swarm "
                      f"{loaded.spec.name!r}", file=sys.stderr)
                return EXIT_INVALID
            url = args.redis_url or loaded.spec.swarm.bus.redis_url
            if loaded.digest != plan.spec_digest:
                print(f"swarm bus apply: warning: {directory} was compiled from another revision of {args.spec} "
                      f"(run `swarm compile` to refresh it); applying {directory}", file=sys.stderr)
    secret = bus_secret_from_env()
    url = redis_url_from_env(url)

    async def run() -> int:
        from swarm.redis_conn import async_client

        client = async_client(url, swarm=plan.swarm, decode_responses=True)
        try:
            report = await apply_bus(client, plan, acl, prune=args.prune, force_prune=args.force_prune,
                                     secret=secret)
        finally:
            await client.aclose()
        for line in report.lines():
            print(line)
        if not report.changed:
            print(f"bus of swarm {plan.swarm!r} is up to date")
        return EXIT_OK

    return _refusable(run)


def _bus(args: argparse.Namespace, agent: str) -> Any:
    from swarm.bus.bus import EventBus

    swarm, url, _ = _target(args)
    return EventBus(redis_url=url, swarm=swarm, agent_id=agent)


def run_publish(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.payload == "-" else args.payload
    try:
        payload = json.loads(text)
    except ValueError as exc:
        return fail(args, f"JSON argument is not valid JSON: {exc}", EXIT_INVALID, prefix="swarm bus publish: ")
    bus = _bus(args, args.agent)

    async def run() -> int:
        async with bus:
            result = await bus.publish(args.topic, payload, message_id=args.message_id, wait=True,
                                       timeout=args.timeout)
        emit(args, {"topic": args.topic, "entry_id": result.entry_id, "duplicate": result.duplicate,
                    "undelivered": list(result.undelivered)},
             lambda d: f"{d['entry_id']} duplicate" if d["duplicate"] else d["entry_id"])
        if result.undelivered and not wants_json(args):  # routed, but these inboxes were full (inbox_max_len)
            print(f"swarm bus publish: not delivered to {', '.join(result.undelivered)}: inbox full "
                  f"(recorded in the refused stream as inbox_full)", file=sys.stderr)
        return EXIT_OK

    return _refusable(run, args)


def _line(entry_id: Any, fields: dict[Any, Any]) -> str:
    """One topic-log entry as a JSON line, whatever its bytes: text that is not UTF-8 is shown
    backslash-escaped, a payload that is not JSON as a string; never raises."""

    def text(value: Any) -> str | None:
        if value is None:
            return None
        return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)

    values = {text(k): v for k, v in fields.items()}
    raw = values.get("payload")
    try:
        payload: Any = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
    except ValueError:  # UnicodeDecodeError too
        payload = text(raw)
    return json.dumps({"entry_id": text(entry_id), "message_id": text(values.get("message_id")),
                       "sender": text(values.get("sender")), "payload": payload}, ensure_ascii=False)


def run_read(args: argparse.Namespace) -> int:
    bus = _bus(args, args.agent)

    async def run() -> int:
        from swarm.backoff import Backoff
        from swarm.foreign import REDIS_ERRORS, is_transient_redis, raise_if_cancelled, redis_error

        async with bus:
            # the bus's own check: declared topic, then the agent's rights (UndeclaredTopicError, AclDeniedError)
            stream = bus.check_topic(args.topic, "subscribe").stream
            try:
                entries = list(reversed(await bus.redis.xrevrange(stream, count=args.count)))
            except REDIS_ERRORS as exc:
                raise redis_error(exc, f"reading {stream}") from exc
            for entry_id, fields in entries:
                print(_line(entry_id, fields or {}), flush=True)
            if not args.follow:
                return EXIT_OK
            # A concrete id, never "$": after a reconnect "$" would skip what came meanwhile.
            # An empty stream has nothing to skip, so everything after 0-0 is new.
            last: Any = entries[-1][0] if entries else "0-0"
            reader = bus.blocking_client()
            backoff = Backoff(base=0.1, cap=2.0)
            try:
                while True:
                    raise_if_cancelled()  # Ctrl-C cancels this task; redis-py may have swallowed it
                    try:
                        reply: Any = await reader.xread({stream: last}, block=5000, count=100)
                    except REDIS_ERRORS as exc:
                        if not is_transient_redis(exc):
                            raise redis_error(exc, f"reading {stream}") from exc
                        print(f"swarm bus read: Redis unreachable ({exc}); retrying", file=sys.stderr, flush=True)
                        await backoff.sleep()
                        continue
                    backoff.reset()
                    for _, items in reply or []:
                        for entry_id, fields in items:
                            print(_line(entry_id, fields or {}), flush=True)
                            last = entry_id
            finally:
                await reader.aclose()

    try:
        return _refusable(run)
    except KeyboardInterrupt:
        return EXIT_OK


def run_breaker(args: argparse.Namespace) -> int:
    swarm, url, declared = _target(args)

    async def run() -> int:
        from swarm.redis_conn import async_client

        from swarm.bus.breaker_store import BreakerStore, policy_from_settings
        from swarm.desired import BusPlan
        from swarm.foreign import REDIS_ERRORS, redis_error
        from swarm.keys import SwarmKeys

        client = async_client(url, swarm=swarm, decode_responses=True)
        try:
            key = SwarmKeys(swarm).bus
            try:
                raw = await client.get(key)
                # An undeclared agent may still have a breaker (registries with allow_undeclared probe
                # it too); without one, the name is a typo, and --reset would invent a breaker for it.
                has_breaker = args.agent in declared or await client.exists(SwarmKeys(swarm).breaker(args.agent))
            except REDIS_ERRORS as exc:
                raise redis_error(exc, f"breaker of {args.agent!r}: reading {key}") from exc
            if not has_breaker:
                raise NotDeclaredError(f"agent {args.agent!r} is not declared in swarm {swarm!r} and has no breaker")
            try:
                policy = policy_from_settings(BusPlan.model_validate_json(raw).settings.breaker) if raw else None
            except ValueError as exc:
                raise BusError(f"bus settings in Redis ({key}) are not valid: {exc}; run `swarm bus apply`") from exc
            store = BreakerStore(client, swarm, policy)
            reply = await (store.reset(args.agent) if args.reset else store.read(args.agent))
        finally:
            await client.aclose()
        snap = reply.snapshot
        text = f"{args.agent}: {snap.state.value}, failures {snap.failures}, epoch {snap.epoch}"
        retry_at = snap.retry_at_ms()
        if retry_at is not None:
            when = datetime.fromtimestamp(retry_at / 1000, tz=timezone.utc).isoformat(timespec="seconds")
            text += f", cooldown left {reply.cooldown_left_ms() / 1000:.1f}s (probe allowed after {when})"
        if args.reset:
            text = "reset: " + text
        emit(args, {"agent": args.agent, "reset": bool(args.reset), "state": snap.state.value,
                    "failures": snap.failures, "epoch": snap.epoch,
                    "retry_at_ms": retry_at, "cooldown_left_ms": reply.cooldown_left_ms() if retry_at is not None else None},
             lambda d: text)
        return EXIT_OK

    return _refusable(run, args)


# -- swarm bus route (the trusted router) --------------------------------------------------


def register_route(sub: Any) -> None:
    rt = sub.add_parser("route", help="run the trusted router: outboxes -> topic logs and inboxes",
                        description="Route every declared agent's outbox of the swarm (consumer group 'router'; "
                                    "several replicas may run at once) until SIGTERM or SIGINT.")
    rt.add_argument("--swarm", default=None, metavar="NAME", type=_swarm_name,
                    help="the swarm to route (default: metadata.name of --spec); with --redis-url no spec is read")
    rt.add_argument("--consumer", default=None, metavar="NAME",
                    help="consumer name in the router group (default: host:pid:random, unique per process)")
    rt.add_argument("--block-ms", type=_positive, default=1000, metavar="MS",
                    help="longest wait for new outbox entries per read (default 1000; also bounds the stop delay)")
    rt.add_argument("--reclaim-idle-ms", type=_positive, default=5000, metavar="MS",
                    help="reclaim outbox entries another replica read but left unrouted this long (default 5000)")
    rt.add_argument("--batch-size", type=_positive, default=100, metavar="N",
                    help="outbox entries routed per script run (default 100)")
    rt.add_argument("--metrics-port", type=_positive, default=None, metavar="PORT",
                    help="serve Prometheus metrics (entries per agent and outcome, refusals per reason, "
                         "outbox backlogs) on 127.0.0.1:PORT/metrics")
    rt.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    _common(rt)
    rt.set_defaults(handler=run_route)


def _swarm_name(value: str) -> str:
    from swarm.spec.names import NAME_MAX, NAME_PATTERN, is_name

    if not is_name(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a valid swarm name ({NAME_PATTERN}, at most {NAME_MAX} chars)")
    return value


def run_route(args: argparse.Namespace) -> int:
    import logging
    import signal

    from swarm.bus.router import FAULT_POINTS, Router

    if args.swarm is not None and args.redis_url is not None and args.spec is None:
        swarm, url = args.swarm, redis_url_from_env(args.redis_url)
    else:
        swarm, url, _ = _target(args)
        if args.swarm is not None and args.swarm != swarm:
            print(f"swarm bus route: --swarm {args.swarm!r} but the spec declares swarm {swarm!r}", file=sys.stderr)
            return EXIT_INVALID
    fault = os.environ.get("SWARM_FAULT_ROUTER") or None  # tests only: SIGKILL at a point of a batch
    if fault is not None and fault not in FAULT_POINTS:
        print(f"swarm bus route: SWARM_FAULT_ROUTER={fault!r} is not one of {FAULT_POINTS}", file=sys.stderr)
        return EXIT_INVALID
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics = None
    if args.metrics_port is not None:
        from prometheus_client import CollectorRegistry, start_http_server

        metrics = CollectorRegistry(auto_describe=True)
        start_http_server(args.metrics_port, addr="127.0.0.1", registry=metrics)
    router = Router(redis_url=url, swarm=swarm, consumer=args.consumer, block_ms=args.block_ms,
                    reclaim_idle_ms=args.reclaim_idle_ms, max_batch=args.batch_size, metrics=metrics, fault=fault)

    import asyncio

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await router.run(stop)
        return EXIT_OK

    return asyncio.run(run())
