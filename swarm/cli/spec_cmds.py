"""CLI commands about the spec itself: ``validate``, ``schema`` and ``acl check``.

Who calls it: :mod:`swarm.cli` imports this module and calls :func:`register`.
Wiring only: loading and checking live in :mod:`swarm.spec.loader`, the schema in
:mod:`swarm.spec.schema`, decisions in :mod:`swarm.acl`. Exit codes: 0 ok /
allow, 1 stale schema / deny, 2 invalid spec or usage. Diagnostics go to stderr;
``validate -o json`` prints its issue list (``[]`` when valid) to stdout so that
scripts can parse it whatever the outcome.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from swarm.cli import EXIT_DIFF, EXIT_INVALID, EXIT_OK, add_env_option
from swarm.cli.output import add_output_option, emit, fail, paint_lines, wants_json
from swarm.errors import SpecError

# the spec models (pydantic), loader and schema are imported inside the handlers: the parser
# (and `swarm --version`, `swarm token`) load without them

DEFAULT_SPEC = "specs/"
DEFAULT_SCHEMA_DIR = "schemas/"


def register(subparsers: Any) -> None:
    """Add ``validate``, ``schema`` and ``acl`` to the ``swarm`` parser."""
    p = subparsers.add_parser("validate", help="check a spec and report every problem at once")
    p.add_argument("spec", nargs="*", metavar="SPEC", help=f"spec files or directories (default {DEFAULT_SPEC})")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format")
    add_env_option(p)
    p.set_defaults(handler=cmd_validate)

    p = subparsers.add_parser("schema", help="write the JSON Schema of spec documents")
    p.add_argument("--out", default=DEFAULT_SCHEMA_DIR, metavar="DIR", help=f"output directory (default {DEFAULT_SCHEMA_DIR})")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if the files are stale")
    add_output_option(p)
    p.set_defaults(handler=cmd_schema)

    acl = subparsers.add_parser("acl", help="ask ACL questions about a spec")
    acl_sub = acl.add_subparsers(dest="acl_command", metavar="ACL_COMMAND", parser_class=type(acl))
    acl_sub.required = True
    p = acl_sub.add_parser("check", help="may ROLE publish/subscribe TOPIC? prints allow or deny and the rule")
    p.add_argument("--spec", action="append", metavar="SPEC", help=f"spec file or directory (default {DEFAULT_SPEC})")
    p.add_argument("role", metavar="ROLE")
    p.add_argument("action", choices=("publish", "subscribe"))
    p.add_argument("topic", metavar="TOPIC")
    add_output_option(p)
    p.set_defaults(handler=cmd_acl_check)


def cmd_validate(args: argparse.Namespace) -> int:
    from swarm.spec.loader import load_spec_full

    paths = args.spec or [DEFAULT_SPEC]
    try:
        loaded = load_spec_full(paths, args.env)
    except SpecError as exc:
        if args.output == "json":
            print(json.dumps([i.to_dict() for i in exc.issues], indent=2))
        else:
            for issue in exc.issues:
                print(issue.format(), file=sys.stderr)
        return EXIT_INVALID
    if args.output == "json":
        print("[]")
    else:
        spec = loaded.spec
        where = f" (environment {loaded.environment})" if loaded.environment else ""
        print(paint_lines(f"ok: {len(spec.agents)} agents, {len(spec.topics)} topics{where}"))
    return EXIT_OK


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_schema(args: argparse.Namespace) -> int:
    from swarm.spec.schema import schema_files

    out = Path(args.out)
    stale: list[Path] = []
    for name, text in sorted(schema_files().items()):
        path = out / name
        try:
            current = path.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            current = None
        if current != text:
            stale.append(path)
            if not args.check:
                _write_atomic(path, text)
    files = [path.as_posix() for path in stale]
    if args.check:
        emit(args, {"out": out.as_posix(), "check": True, "stale": files},
             lambda d: "\n".join(f"stale: {f} (run `swarm schema --out {args.out}`)" for f in d["stale"]) or None)
        return EXIT_DIFF if stale else EXIT_OK
    emit(args, {"out": out.as_posix(), "check": False, "written": files},
         lambda d: "\n".join(f"wrote {f}" for f in d["written"]) or None)
    return EXIT_OK


def cmd_acl_check(args: argparse.Namespace) -> int:
    import re

    from swarm.acl import AclTable
    from swarm.spec.loader import load_spec_full
    from swarm.spec.models import TOPIC_PATTERN
    from swarm.spec.sourcemap import did_you_mean

    spec = load_spec_full(args.spec or [DEFAULT_SPEC]).spec
    if args.role not in spec.roles:
        hint = did_you_mean(args.role, spec.roles) or " (roles: " + ", ".join(sorted(spec.roles)) + ")"
        return fail(args, f"role {args.role!r} is not defined{hint}", EXIT_INVALID)
    if not re.fullmatch(TOPIC_PATTERN, args.topic):
        return fail(args, f"{args.topic!r} is not a topic name (dot-separated tokens of [a-z0-9_-])", EXIT_INVALID)
    declared = spec.topic(args.topic) is not None
    if not declared and not wants_json(args):
        print(f"swarm: note: topic {args.topic!r} is not declared in the spec", file=sys.stderr)
    decision = AclTable.from_spec_roles(spec.roles).decide(args.role, args.action, args.topic)
    emit(args, {"role": args.role, "action": args.action, "topic": args.topic, "declared": declared,
                "decision": "allow" if decision.allow else "deny", "rule": decision.rule},
         lambda d: f"{d['decision']} ({d['rule']})")
    return EXIT_OK if decision.allow else EXIT_DIFF
