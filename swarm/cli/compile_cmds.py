"""``swarm compile [SPEC ...] [--out DIR] [--check [--index]] [-o text|json]`` (a contract: CI
and the pre-commit hook call it).

Wiring only: :func:`swarm.compiler.compile_to` (load, render, write, with the
no-op stamp), or for ``--check`` always a full load and render
(:func:`swarm.compiler.compile_loaded`) diffed against DIR
(:func:`swarm.compiler.output.diff_output`). ``--check --index`` reads the spec and
DIR from the git index instead, what ``git commit`` records
(:func:`swarm.compiler.staged.check_index`): the pre-commit hook's check. Exit 0 when written or up to date, 1 when
``--check`` finds differences, 2 for an invalid spec (the dispatcher prints
every issue). A progress line is drawn on stderr only when it is a terminal.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from swarm.cli import EXIT_DIFF, EXIT_OK, add_env_option
from swarm.errors import InvalidRequestError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "compile",
        help="compile a spec into compiled/<swarm>/",
        description="Validate a spec and write its deterministic artifacts to DIR/<swarm>/.",
    )
    parser.add_argument("spec", nargs="*", metavar="SPEC", help="spec files or directories (default: specs/)")
    parser.add_argument("--out", default="compiled", metavar="DIR", help="output directory (default: compiled/)")
    add_env_option(parser)
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 listing files that differ from the spec's output"
    )
    parser.add_argument(
        "--index",
        action="store_true",
        help="with --check: compare the spec and DIR as staged in git (what a commit records), "
        "not the work tree; for pre-commit hooks",
    )
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text", help="report format")
    parser.set_defaults(handler=run)


class _ProgressLine:
    """``rendering agents 412/1000`` redrawn in place on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.drawn = False

    def __call__(self, done: int, total: int) -> None:
        if done == total or done % 25 == 0:
            self.stream.write(f"\rrendering agents {done}/{total}")
            self.stream.flush()
            self.drawn = True

    def clear(self) -> None:
        if self.drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _run_index_check(args: argparse.Namespace) -> int:
    from swarm.compiler.staged import check_index

    result = check_index(args.spec or ["specs"], args.out)
    where = Path(args.out) / result.swarm
    if args.output == "json":
        body = {"swarm": result.swarm, "index": True, "up_to_date": not result.differing, "differing": result.differing}
        print(json.dumps(body, indent=2))
    elif result.differing:
        print(
            f"{where} in the git index is not what the staged spec compiles to; run `swarm compile` "
            f"and `git add {where}` (git commit -a does not add new files):",
            file=sys.stderr,
        )
        for line in result.differing:
            print(f"  {line}", file=sys.stderr)
    else:
        print(f"{where}: up to date in the index ({result.compiled} files)")
    return EXIT_DIFF if result.differing else EXIT_OK


def run(args: argparse.Namespace) -> int:
    from swarm.compiler import compile_loaded, compile_to, diff_output
    from swarm.spec.loader import load_spec_full

    if args.index:
        if not args.check:
            raise InvalidRequestError("--index goes with --check (it compares, it never writes)")
        return _run_index_check(args)
    progress = _ProgressLine(sys.stderr) if sys.stderr.isatty() else None
    out_dir = Path(args.out)
    spec_paths = args.spec or "specs"
    try:
        if args.check:
            loaded = load_spec_full(spec_paths, args.env)
            files = compile_loaded(loaded, progress=progress)
        else:
            result = compile_to(spec_paths, out_dir, progress=progress, environment=args.env)
    finally:
        if progress is not None:
            progress.clear()

    if args.check:
        swarm = loaded.output_name
        differing = diff_output(files, out_dir, swarm)
        if args.output == "json":
            print(json.dumps({"swarm": swarm, "up_to_date": not differing, "differing": differing}, indent=2))
        elif differing:
            print(f"{out_dir / swarm} is stale; run `swarm compile`:", file=sys.stderr)
            for line in differing:
                print(f"  {line}", file=sys.stderr)
        else:
            print(f"{out_dir / swarm}: up to date ({len(files)} files)")
        return EXIT_DIFF if differing else EXIT_OK

    report = result.report
    if args.output == "json":
        print(json.dumps({"swarm": result.swarm, "spec_digest": result.spec_digest, **report.to_dict()}, indent=2))
        return EXIT_OK
    for rel in report.written:
        print(f"wrote    {out_dir / rel}")
    for rel in report.removed:
        print(f"removed  {out_dir / rel}")
    print(
        f"{out_dir / result.swarm}: {len(report.written)} written, {len(report.unchanged)} unchanged, "
        f"{len(report.removed)} removed"
    )
    return EXIT_OK
