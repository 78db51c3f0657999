"""``swarm plan``, ``swarm reconcile``, ``swarm status``, ``swarm up`` and ``swarm logs`` (contract: issue 5).

Wiring only: options → :class:`~swarm.reconcile.loop.ReconcileConfig`, the real
ports from :mod:`swarm.reconcile.observe`, printing. The environment is read
here and nowhere deeper: ``SWARM_ADMIN_TOKEN`` (else derived from
``SWARM_REGISTRY_SECRET``) for the registry, ``SWARM_BUS_SECRET`` (else
``SWARM_REGISTRY_SECRET``) for the Redis users that ``bus apply`` writes, and
``SWARM_REDIS_PASSWORD`` (:mod:`swarm.redis_auth`: the default user's password,
applied to a Redis URL without credentials, so the Redis of ``swarm up`` is found).

One writer per swarm: ``reconcile`` takes the reconcile lease in Redis
(:mod:`swarm.reconcile.lease`); ``--watch`` stands by while another process holds
it, ``--once`` refuses (exit 1, naming the holder) instead of racing it.

Exit codes: ``plan`` 0 no changes, 1 changes pending, 2 error; ``reconcile``
0 in sync, 1 refused / invalid spec still enforcing the last valid one / dry-run
with changes / another process holds the lease, 2 error; ``status`` 0 synced with the given spec applied, 1
anything else (including a valid spec that differs from the applied one), 2 the
given spec is invalid (its issues are printed, then the recorded status) or no status.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from swarm.cli import EXIT_DIFF, EXIT_INVALID, EXIT_OK, add_env_option
from swarm.cli.output import paint_lines
from swarm.errors import PermanentError, SpecError, TransientError
from swarm.redis_auth import bus_secret_from_env, masked, password_from_env


def secrets_from_env(
    env: Mapping[str, str] | None = None,
) -> tuple[Callable[[str], str | None], str | None]:
    """(admin token of a swarm, bus secret) from the environment; the token binds the swarm name."""
    from swarm.registry.auth import admin_token_from_env  # light: not the push client (its models)

    env = os.environ if env is None else env
    return functools.partial(admin_token_from_env, env), (
        bus_secret_from_env(env))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", nargs="*", metavar="SPEC", help="spec files or directories (default: specs/)")
    parser.add_argument("--registry-url", metavar="URL", help="override the spec's registry.url")
    parser.add_argument("--redis-url", metavar="URL", help="override the spec's bus.redis_url")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text", help="report format")
    parser.add_argument("--full", action="store_true",
                        help="list every action (default: past 50, the counts per kind and the first 50)")
    add_env_option(parser)


def _prune_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prune", action="store_true", help="delete registrations, streams, groups and Redis users no longer declared")
    parser.add_argument("--force-prune", action="store_true", help="allow a plan (with or without --prune) that removes more than half of the live agents or topics")
    parser.add_argument("--rev", metavar="GIT_REF", help="read the spec from this git ref (a commit), not the working tree")


#: ``swarm.reconcile.lease.DEFAULT_TTL`` (not imported: the CLI parser loads without the reconciler)
DEFAULT_LEASE_TTL = 10.0


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _bounded_int(low: int, high: int | None, what: str) -> Callable[[str], int]:
    """An argparse ``type``: a whole number in [low, high] (no upper bound when ``high`` is None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    return parse


_port = _bounded_int(1, 65535, "a port number (1-65535)")
_lines = _bounded_int(0, None, "a whole number >= 0")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("plan", help="show what reconcile would change", description="Compile in memory, observe the live registry and Redis, print the ordered actions.")
    _common(p)
    _prune_flags(p)
    p.set_defaults(handler=run_plan)

    r = subparsers.add_parser("reconcile", help="make the live system equal the spec", description="Observe, plan, apply, verify and record status; once or on every change.")
    _common(r)
    _prune_flags(r)
    mode = r.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one pass, then exit (default)")
    mode.add_argument("--watch", action="store_true", help="reconcile on every save / commit and on the resync timer")
    r.add_argument("--dry-run", action="store_true", help="print the plan; change nothing, write no status")
    r.add_argument("--resync", type=float, default=30.0, metavar="SECONDS", help="resync timer (default 30)")
    r.add_argument("--compiled-dir", default="compiled", metavar="DIR", help="where a new valid spec's compiled output is written (default compiled/; '' for nowhere)")
    r.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS", help="--once: how long to retry transient faults (default 60)")
    r.add_argument("--lease-ttl", type=_positive, default=DEFAULT_LEASE_TTL, metavar="SECONDS",
                   help=f"reconcile lease TTL: a standby takes over within about this long after the holder dies (default {DEFAULT_LEASE_TTL:g})")
    r.add_argument("--redis-check", type=_positive, default=0.5, metavar="SECONDS",
                   help="--watch: how often to check whether Redis restarted (its users are then re-created at once; default 0.5)")
    r.add_argument("--fetch-interval", type=float, default=60.0, metavar="SECONDS",
                   help="--watch with --rev of a remote branch (origin/main): fetch it this often, jittered "
                        "±20%%, and on every POST /hooks/git of the registry (default 60; 0: never fetch)")
    r.add_argument("--metrics-port", type=_port, default=None, metavar="PORT",
                   help="--watch: serve Prometheus metrics (swarm_reconcile_*: sync state, pass duration, drift "
                        "healed, errors; see docs/metrics.md) on http://HOST:PORT/metrics")
    r.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                   help="--watch --metrics-port: the address to serve the metrics on (default 127.0.0.1)")
    r.set_defaults(handler=run_reconcile)

    s = subparsers.add_parser("status", help="show the reconcile status and a live summary")
    _common(s)
    s.add_argument("--swarm", metavar="NAME", help="swarm name, when the spec cannot be read")
    s.set_defaults(handler=run_status)

    u = subparsers.add_parser("up", help="local redis-server + registry + watch loop in one command")
    u.add_argument("spec", nargs="*", metavar="SPEC", help="spec files or directories (default: specs/)")
    u.add_argument("--redis-url", metavar="URL", help="use this Redis instead of starting one in .swarm/")
    u.add_argument("--demo", action="store_true", help="also run the compiled agents (started, stopped and restarted as the spec and they change)")
    u.add_argument("--prune", action="store_true", help="run the watch loop with --prune")
    u.add_argument("--force-prune", action="store_true", help="run the watch loop with --force-prune")
    u.add_argument("--state-dir", default=".swarm", metavar="DIR", help="state folder (default .swarm/)")
    add_env_option(u)
    u.set_defaults(handler=run_up)

    g = subparsers.add_parser("logs", help="print the log of an agent run by swarm up --demo",
                              description="Print the log of a demo agent that swarm up runs (or ran) in this folder: "
                                          "its output across its restarts, from <state-dir>/agent-ID.log.")
    g.add_argument("agent", metavar="AGENT", help="the agent's id")
    g.add_argument("-f", "--follow", action="store_true", help="keep printing what it writes (Ctrl-C stops)")
    g.add_argument("-n", "--lines", type=_lines, default=None, metavar="N", help="only the last N lines (default: all)")
    g.add_argument("--state-dir", default=".swarm", metavar="DIR", help="the state folder of swarm up (default .swarm/)")
    g.set_defaults(handler=run_logs)


def _config(args: argparse.Namespace, **extra: Any) -> Any:
    from swarm.reconcile.loop import ReconcileConfig

    return ReconcileConfig(
        spec_paths=[Path(p) for p in (args.spec or ["specs"])],
        rev=getattr(args, "rev", None),
        environment=getattr(args, "env", None),
        prune=getattr(args, "prune", False),
        force_prune=getattr(args, "force_prune", False),
        registry_url=getattr(args, "registry_url", None),
        redis_url=args.redis_url,
        redis_password=password_from_env(),  # SWARM_REDIS_PASSWORD, for a URL without credentials
        pause_after=os.environ.get("SWARM_FAULT_PAUSE_AFTER") or None,  # tests only: see ReconcileConfig
        resume_file=Path(os.environ["SWARM_FAULT_RESUME_FILE"]) if os.environ.get("SWARM_FAULT_RESUME_FILE") else None,
        **extra,
    )


def _reconciler(config: Any) -> Any:
    from swarm.reconcile.loop import Reconciler
    from swarm.reconcile.observe import RedisBusPort, make_ports_factory

    def status_fallback(swarm: str, redis_url: str) -> RedisBusPort:
        return RedisBusPort(redis_url, swarm, bus_secret=None)

    return Reconciler(config, make_ports_factory(*secrets_from_env()), status_fallback)


# --------------------------------------------------------------------------- plan


def _one_shot(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a one-shot command without the cyclic garbage collector (on again after it).

    ``plan`` and ``status`` import the models and load a whole desired state, then exit: what
    they allocate is bounded, and the collector's passes over the ~half a million objects the
    imports and the load leave cost ~30 ms of a 0.5 s no-op plan at 1,000 agents. Reference
    counting still frees everything that is not a cycle."""
    @functools.wraps(run)
    def wrapped(args: argparse.Namespace) -> int:
        was = gc.isenabled()
        gc.disable()
        try:
            return run(args)
        finally:
            if was:
                gc.enable()
    return wrapped


@_one_shot
def run_plan(args: argparse.Namespace) -> int:
    from swarm.reconcile.plan import plan_actions
    from swarm.reconcile.state import observe
    from swarm.reconcile.status import parse_status

    config = _config(args, dry_run=True)
    rec = _reconciler(config)
    try:
        desired, digest = rec.load_desired()  # SpecError → the dispatcher prints every issue, exit 2
        ports = rec.ports_for(desired)
        actual = observe(ports.registry, ports.bus, desired.bus)
        previous = parse_status(ports.status.read_status())  # which undeclared registrations are removals
        retired = frozenset(previous.retired_agents) if previous and previous.swarm == desired.bus.swarm else frozenset()
        plan = plan_actions(desired, actual, prune=config.prune, force_prune=config.force_prune, retired=retired)
    finally:
        rec.close()
    if args.output == "json":
        print(json.dumps({"swarm": desired.registry.swarm, "digest": digest, **plan.to_dict()}, indent=2))
    else:
        print(paint_lines(plan.render(None) if args.full else plan.render()))
    return EXIT_OK if plan.empty else EXIT_DIFF


# --------------------------------------------------------------------------- reconcile


def _print_pass(result: Any, output: str) -> None:
    if output == "json":
        status = result.status.model_dump(mode="json") if result.status is not None else None
        print(json.dumps({"state": result.state, "applied": [a.to_dict() for a in result.applied], "status": status}), flush=True)
        return
    stamp = time.strftime("%H:%M:%S")
    line = f"[{stamp}] {result.state}"
    if result.status is not None and result.status.message:
        line += f": {result.status.message}"
    print(line, flush=True)
    for action in result.applied:
        print(f"    {action.description}", flush=True)
    if isinstance(result.error, SpecError):
        for issue in result.error.issues:
            print(f"    {issue.format()}", file=sys.stderr, flush=True)


def run_reconcile(args: argparse.Namespace) -> int:
    config = _config(
        args,
        dry_run=args.dry_run,
        resync_seconds=args.resync,
        compiled_dir=Path(args.compiled_dir) if args.compiled_dir else None,
        lease_ttl=args.lease_ttl,
        redis_check_seconds=args.redis_check,
        fetch_seconds=args.fetch_interval,
    )
    if args.metrics_port is not None and not args.watch:
        raise PermanentError("--metrics-port needs --watch (a single pass has nothing to scrape)")
    if args.watch:
        return _watch(config, args.output, metrics_port=args.metrics_port, metrics_host=args.metrics_host)
    rec = _reconciler(config)
    try:
        deadline = time.monotonic() + args.timeout
        while True:
            result = rec.run_pass("once")
            if result.retry_in is None or time.monotonic() + result.retry_in > deadline:
                break
            if isinstance(result.error, PermanentError):  # e.g. NOAUTH taking the lease: no retry cures it
                break
            print(f"waiting: {result.error} (retry in {result.retry_in:.1f}s)", file=sys.stderr, flush=True)
            time.sleep(result.retry_in)
    finally:
        rec.close()
    if config.dry_run and result.plan is not None:
        if args.output == "json":
            print(json.dumps(result.plan.to_dict(), indent=2))
        else:
            print(paint_lines(result.plan.render(None) if args.full else result.plan.render()))
        return EXIT_OK if result.plan.empty else EXIT_DIFF
    if result.state == "invalid-spec" and rec.good is None and isinstance(result.error, SpecError):
        raise result.error  # nothing valid to enforce: the dispatcher prints it, exit 2
    _print_pass(result, args.output)
    if result.state == "standby":
        print("swarm: another reconciler holds the lease; not applying (stop it, or let it apply this spec)",
              file=sys.stderr)
        return EXIT_DIFF
    if result.state == "synced":
        return EXIT_OK
    if result.state in ("refused", "invalid-spec"):
        return EXIT_DIFF
    return EXIT_INVALID


def _watch(config: Any, output: str, *, metrics_port: int | None = None, metrics_host: str = "127.0.0.1") -> int:
    import asyncio  # here, not at the top: the parser loads without asyncio

    from swarm.notify.follow import notify_while
    from swarm.notify.sender import Notifier

    notifier = Notifier()
    metrics = server = None
    if metrics_port is not None:
        from swarm.reconcile.metrics import ReconcileMetrics, serve

        metrics = ReconcileMetrics()
        metrics.track_notifications(notifier.snapshot)
        server = serve(metrics, metrics_port, metrics_host)  # PermanentError (exit 2) when the port is taken
        print(f"serving metrics on http://{metrics_host}:{server.port}/metrics", flush=True)
    rec = _reconciler(config)

    last = ""

    def on_pass(result: Any) -> None:
        nonlocal last
        line = f"{result.state}: {result.status.message if result.status else ''}"
        if output == "json" or result.applied or line != last:  # quiet resyncs in text mode
            _print_pass(result, output)
            last = line

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # the spec's notifications: sent in the background, never delaying a pass
        await notify_while(rec, rec.watch(stop, on_pass=on_pass, metrics=metrics), notifier)

    print(f"watching {', '.join(str(p) for p in rec.watch_paths())} (resync every {config.resync_seconds:g}s)", flush=True)
    try:
        asyncio.run(main())
    finally:
        if server is not None:
            server.close()
    return EXIT_OK


# --------------------------------------------------------------------------- status


def _fallback_target(args: argparse.Namespace) -> tuple[str, str] | None:
    """(swarm, redis url) from a spec that does not validate, best effort."""
    from swarm.reconcile.loop import lenient_target
    from swarm.spec.loader import read_spec_files

    try:
        return lenient_target(read_spec_files(args.spec or "specs"))
    except SpecError:
        return None


@_one_shot
def run_status(args: argparse.Namespace) -> int:
    from swarm.reconcile.lease import read_lease
    from swarm.reconcile.loop import live_summary
    from swarm.reconcile.observe import RedisBusPort
    from swarm.reconcile.plan import desired_user_rights
    from swarm.reconcile.state import observe
    from swarm.reconcile.status import parse_status

    rec = _reconciler(_config(args))
    live = None
    spec_error: SpecError | None = None
    try:
        try:
            source = rec.load()
            name, url = source.desired.bus.swarm, rec.config.bus_redis_url(source.desired.bus.settings.redis_url)
        except SpecError as exc:
            source, spec_error = None, exc
            target = _fallback_target(args)
            if args.swarm:
                target = (args.swarm, args.redis_url or (target[1] if target else "redis://127.0.0.1:6379/0"))
            if target is None:
                raise
            name, url = target[0], rec.config.bus_redis_url(target[1])
            # said first, so a Redis that is down does not hide it
            print(f"swarm: the given spec is invalid ({len(exc.issues)} error(s)); it is not applied:", file=sys.stderr)
            for issue in exc.issues:
                print(f"  {issue.format()}", file=sys.stderr)
        store = RedisBusPort(url, name, bus_secret=None)
        try:
            status = parse_status(store.read_status())
            try:
                lease = read_lease(store.client, name)
            except TransientError:
                lease = None
        finally:
            store.close()
        if source is not None:
            try:
                ports = rec.ports_for(source.desired)
                # no user rights needed for a summary: skip reading the Redis users back
                seen = observe(ports.registry, ports.bus, source.desired.bus, desired_user_rights(source.desired))
                live = live_summary(source.desired, seen)
            except TransientError as exc:
                print(f"swarm: live summary unavailable: {exc}", file=sys.stderr)
    finally:
        rec.close()
    if status is None:
        print(f"swarm: no reconcile status for swarm {name!r} in {masked(url)} (has `swarm reconcile` run?)", file=sys.stderr)
        return EXIT_INVALID
    if live is not None:
        status.live = live
    applied = status.last_applied.digest if status.last_applied else None
    differs = source is not None and source.digest != applied
    if args.output == "json":
        doc = status.model_dump(mode="json")
        doc["lease"] = _lease_json(lease)
        doc["given_spec"] = {
            "valid": spec_error is None,
            "digest": source.digest if source is not None else None,
            "applied": source is not None and not differs,
            "issues": [i.to_dict() for i in spec_error.issues] if spec_error is not None else [],
        }
        print(json.dumps(doc, indent=2))
    else:
        print(paint_lines(status.render(None) if args.full else status.render()))
        for line in _lease_lines(lease):
            print(line)
        if spec_error is not None:
            print(f"the given spec is invalid ({len(spec_error.issues)} error(s), listed above): the status is of the last pass")
        elif differs:
            print(f"spec differs from the applied one (not yet applied): digest {source.digest[:12] if source else ''}")
    if spec_error is not None:
        return EXIT_INVALID
    return EXIT_OK if status.state == "synced" and not differs else EXIT_DIFF


def _lease_json(lease: Any) -> dict[str, Any] | None:
    if lease is None:
        return None
    holder, pttl, standby = lease
    return {
        "holder": None if holder is None else {"owner": holder.owner, "token": holder.token, "since_ms": holder.since_ms,
                                              "pid": holder.pid, "host": holder.host},
        "expires_in_ms": pttl if holder is not None else None,
        "standby": standby,
    }


def _lease_lines(lease: Any) -> list[str]:
    """Who holds the reconcile lease, since when, and who stands by."""
    if lease is None:
        return ["reconcile lease: unknown (Redis unreachable)"]
    holder, pttl, standby = lease
    out = [f"reconcile lease: held by {holder.describe()} (expires in {pttl / 1000:.1f}s unless renewed)"
           if holder is not None else "reconcile lease: free (no reconciler is running)"]
    for owner, doc in sorted(standby.items()):
        if holder is not None and owner == holder.owner:
            continue
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(doc.get("since_ms", 0)) / 1000))
        out.append(f"standing by: {owner} (pid {doc.get('pid')} on {doc.get('host')}) since {since}")
    return out


# --------------------------------------------------------------------------- up


def run_up(args: argparse.Namespace) -> int:
    from swarm.reconcile.up import UpOptions, run_up as up

    return up(UpOptions(spec_paths=[Path(p) for p in (args.spec or ["specs"])], redis_url=args.redis_url,
                        demo=args.demo, prune=args.prune, force_prune=args.force_prune,
                        state_dir=Path(args.state_dir), environment=args.env))


# --------------------------------------------------------------------------- logs


def run_logs(args: argparse.Namespace) -> int:
    from swarm.reconcile.up_logs import find_agent_log, follow, last_lines

    path = find_agent_log(Path(args.state_dir), args.agent)  # unknown agent, bad id: the dispatcher says so (exit 2)
    out = sys.stdout.buffer

    def write(data: bytes) -> None:
        out.write(data)
        out.flush()

    with open(path, "rb") as fh:
        write(last_lines(fh, args.lines))
        if args.follow:
            try:
                follow(fh, write)
            except KeyboardInterrupt:
                return EXIT_OK
    return EXIT_OK
