"""``swarm history`` (the applied revisions) and ``swarm rollback REV`` (apply an earlier commit).

Both read the swarm's name and Redis from the spec (``--env`` applies an overlay;
``--redis-url`` overrides; ``SWARM_REDIS_PASSWORD`` for a URL without credentials).
The formats are :mod:`swarm.reconcile.history`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from swarm.cli import EXIT_DIFF, EXIT_INVALID, EXIT_OK, add_env_option
from swarm.errors import InvalidRequestError, SpecError, TransientError


def register(subparsers: Any) -> None:
    h = subparsers.add_parser(
        "history", help="list the revisions the reconciler applied, newest first, with what each changed",
        description="Read the swarm's history stream (one entry per applied revision or healed drift).",
        epilog="example: swarm history specs/ -n 5",
    )
    _target(h)
    h.add_argument("-n", "--limit", type=int, default=20, metavar="N", help="entries to show (default 20)")
    h.add_argument("--postgres-url", metavar="URL",
                   help="read the PostgreSQL store (default: the spec's history.postgres_url, $SWARM_POSTGRES_URL); "
                        "without one, the Redis stream (newest 1,000)")
    h.set_defaults(handler=run_history)

    a = subparsers.add_parser(
        "archive", help="copy every registry event and reconcile pass into PostgreSQL, for good",
        description="Follow the swarm's event and history streams and store them in PostgreSQL (resumes "
                    "where it stopped: no gap, no duplicate). Runs until Ctrl-C.",
        epilog="example: PGPASSWORD=... swarm archive specs/ --postgres-url postgresql://swarm@db/swarm",
    )
    a.add_argument("spec", nargs="*", metavar="SPEC", help="spec files or directories (default: specs/)")
    a.add_argument("--redis-url", metavar="URL", help="override the spec's bus.redis_url")
    a.add_argument("--postgres-url", metavar="URL", help="the store (default: the spec's history.postgres_url, "
                                                         "$SWARM_POSTGRES_URL)")
    add_env_option(a)
    a.set_defaults(handler=run_archive)

    r = subparsers.add_parser(
        "rollback", help="apply an earlier commit until the followed branch moves",
        description="Pin the reconciler following a git ref (swarm reconcile --watch --rev REF) to an earlier "
                    "commit, like Argo CD's rollback: it lasts until the branch moves, so revert the change in "
                    "git to keep it.",
        epilog="example: swarm rollback 3f2a9c1 specs/    |    swarm rollback --clear specs/",
    )
    r.add_argument("rev", nargs="?", metavar="REV", help="the commit to apply (any git revision of this repository)")
    _target(r)
    r.add_argument("--clear", action="store_true", help="end a rollback now: the branch applies again")
    r.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for the reconciler to apply it (default 30; 0: do not wait)")
    r.set_defaults(handler=run_rollback)


def _target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", nargs="*", metavar="SPEC", help="spec files or directories (default: specs/)")
    parser.add_argument("--redis-url", metavar="URL", help="override the spec's bus.redis_url")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text", help="report format")
    add_env_option(parser)


POSTGRES_ENV = "SWARM_POSTGRES_URL"


def _spec(args: argparse.Namespace) -> Any:
    from swarm.spec.loader import load_spec_full

    return load_spec_full(args.spec or "specs", args.env).spec


def _redis_url(args: argparse.Namespace, spec: Any) -> str:
    from swarm.redis_auth import password_from_env, with_password

    return with_password(args.redis_url or spec.swarm.bus.redis_url, password_from_env())


def _postgres_url(args: argparse.Namespace, spec: Any) -> str | None:
    return args.postgres_url or os.environ.get(POSTGRES_ENV) or spec.swarm.history.postgres_url


def _store(args: argparse.Namespace, spec: Any = None) -> Any:
    from swarm.reconcile.observe import RedisBusPort

    spec = spec or _spec(args)
    return RedisBusPort(_redis_url(args, spec), spec.name, bus_secret=None)


def run_history(args: argparse.Namespace) -> int:
    from swarm.reconcile.history import parse_history_entry

    if args.limit < 1:
        raise InvalidRequestError(f"--limit must be >= 1, got {args.limit}")
    spec = _spec(args)
    raw = None
    postgres = _postgres_url(args, spec)
    if postgres:
        from swarm.durable import PostgresHistory

        try:
            durable = PostgresHistory(postgres, spec.name)
            try:
                raw = durable.passes(args.limit)
            finally:
                durable.close()
        except TransientError as exc:
            print(f"swarm: the PostgreSQL store is unavailable ({exc}); reading the Redis stream", file=sys.stderr)
    if raw is None:
        store = _store(args, spec)
        try:
            raw = store.read_history(args.limit)
        finally:
            store.close()
    entries = [e for e in (parse_history_entry(i, f) for i, f in raw) if e is not None]
    if args.output == "json":
        print(json.dumps([e.model_dump(mode="json") for e in entries], indent=2))
    elif not entries:
        print("no applied revisions recorded yet (has `swarm reconcile` applied this swarm?)", file=sys.stderr)
    else:
        print("\n".join(e.render() for e in entries))
    return EXIT_OK


def run_archive(args: argparse.Namespace) -> int:
    import signal
    import threading

    from swarm.durable import HistoryFollower, PostgresHistory
    from swarm.redis_conn import sync_client

    spec = _spec(args)
    postgres = _postgres_url(args, spec)
    if not postgres:
        raise InvalidRequestError("no PostgreSQL store: pass --postgres-url, set $SWARM_POSTGRES_URL or the spec's "
                                  "history.postgres_url")
    durable = PostgresHistory(postgres, spec.name)
    client = sync_client(_redis_url(args, spec), swarm=spec.name, socket_timeout=10, socket_connect_timeout=3)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"swarm archive: copying swarm {spec.name}'s events and passes into PostgreSQL", flush=True)
    try:
        HistoryFollower(client, durable).run(stop)
    finally:
        client.close()
        durable.close()
    return EXIT_OK


def run_rollback(args: argparse.Namespace) -> int:
    from swarm.reconcile.gitsource import read_spec_at, repo_root, resolve_ref
    from swarm.reconcile.status import PinInfo, now_iso, parse_status
    from swarm.spec.loader import parse_spec_texts

    if bool(args.rev) == bool(args.clear):
        raise InvalidRequestError("give the commit to roll back to, or --clear (not both)")
    store = _store(args)
    try:
        if args.clear:
            store.write_pin(None)
            print("rollback cleared: the reconciler applies its branch again")
            return EXIT_OK
        status = parse_status(store.read_status())
        applied = status.last_applied if status else None
        if status is None or applied is None or applied.revision.source != "git" or applied.revision.commit is None:
            print("swarm: rollback needs a reconciler that follows a git ref (swarm reconcile --watch --rev REF) "
                  "and has applied one; the last applied revision is "
                  + (applied.revision.label() if applied else "none"), file=sys.stderr)
            return EXIT_INVALID
        spec_paths = [Path(p) for p in (args.spec or ["specs"])]
        repo = repo_root(spec_paths[0])
        if repo is None:
            raise InvalidRequestError(f"{spec_paths[0]} is not in a git repository")
        try:
            commit = resolve_ref(repo, args.rev)
        except SpecError:
            raise InvalidRequestError(f"{args.rev!r} is not a commit of {repo}") from None
        # never pin a commit whose spec is invalid: the reconciler would refuse it anyway
        parse_spec_texts(read_spec_at(repo, commit, spec_paths), args.env)
        if status.pinned is not None:
            branch_commit = status.pinned.branch_commit
        elif status.fetch is not None and status.fetch.commit:
            branch_commit = status.fetch.commit
        else:
            branch_commit = applied.revision.commit
        store.write_pin(PinInfo(commit=commit, branch_commit=branch_commit, at=now_iso()).model_dump_json())
        ref = (status.fetch.ref if status.fetch else None) or applied.revision.ref or "the branch"
        print(f"rolled back swarm {store.keys.swarm} to {commit[:10]}: the reconciler applies it now.\n"
              f"The next commit on {ref} (its next fetch) applies the branch again, unless the change is "
              "reverted in git.")
        deadline = time.monotonic() + args.timeout
        while args.timeout > 0:
            now = parse_status(store.read_status())
            if now and now.last_applied and now.last_applied.revision.commit == commit and now.state == "synced":
                print(f"applied: {now.message}")
                return EXIT_OK
            if time.monotonic() > deadline:
                print(f"swarm: not applied within {args.timeout:g} s; is `swarm reconcile --watch --rev {ref}` "
                      "running for this swarm?", file=sys.stderr)
                return EXIT_DIFF
            time.sleep(0.2)
        return EXIT_OK
    finally:
        store.close()
