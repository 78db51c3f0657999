"""The ``swarm`` command line: argument parsing and wiring only, no logic.

Each command group lives in its own module exposing ``register(subparsers)``;
a handler returns the exit code. Exit codes everywhere: 0 success, 1 a check or
diff found differences (or an ACL question was denied / a bus action refused),
2 invalid spec or usage. Errors go to stderr; under ``-o json`` as one JSON object
(:mod:`swarm.cli.output`, which also holds colour and the help layout).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any, Callable, NoReturn, Sequence

from swarm.errors import SwarmError

# httpx imports its own command-line client (httpx._main: click, pygments and rich, ~90 ms,
# a fifth of a no-op `swarm plan`) whenever click is installed, which uvicorn requires. swarm
# never runs it: marked absent, httpx defines its stub `main` instead (its ImportError branch).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

EXIT_OK = 0
EXIT_DIFF = 1
EXIT_INVALID = 2

#: each command group's module and the commands it registers (tests/cli/test_help.py keeps the
#: lists equal to what the modules register)
_COMMAND_GROUPS: dict[str, tuple[str, ...]] = {
    "swarm.cli.spec_cmds": ("validate", "schema", "acl"),
    "swarm.cli.compile_cmds": ("compile",),
    "swarm.cli.registry_cmds": ("registry", "token"),  # registry serve|push, token
    "swarm.cli.bus_cmds": ("bus",),  # bus apply|publish|read|breaker
    "swarm.cli.reconcile_cmds": ("plan", "reconcile", "status", "up", "logs"),
    "swarm.cli.history_cmds": ("history", "archive", "rollback"),
    "swarm.cli.view_cmds": ("agents", "events", "topics"),
    "swarm.cli.init_cmds": ("init",),
    "swarm.cli.secrets_cmds": ("secrets",),  # secrets env, and secrets k8s (swarm.cli.secrets_k8s_cmds.add_k8s)
    "swarm.cli.images_cmds": ("images",),  # images build
    "swarm.cli.completion_cmds": ("completion",),  # completion bash|zsh|fish
}
_COMMAND_MODULES = tuple(_COMMAND_GROUPS)
_MODULE_OF = {command: module for module, commands in _COMMAND_GROUPS.items() for command in commands}


def add_env_option(parser: argparse.ArgumentParser) -> None:
    """``--env NAME``: apply the spec's ``kind: Environment`` overlay of that name."""
    parser.add_argument("--env", metavar="NAME", dest="env", default=None,
                        help="apply the environment overlay NAME (a kind: Environment document, e.g. "
                             "specs/environments/NAME.yaml); output goes to <out>/<swarm>.NAME/")


#: (command, action) pairs whose words after `--` are handed over as ``args.passthrough``
_PASSTHROUGH = {("images", "build")}


#: set by :func:`main` when argv asks for ``-o json``: usage errors are JSON too
_json_usage_errors = False


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from swarm.cli.output import HelpFormatter

        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if _json_usage_errors:
            from swarm.cli.output import print_error

            print_error(True, "usage", f"{self.prog}: {message}", EXIT_INVALID)
            raise SystemExit(EXIT_INVALID)
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_INVALID)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with ``command`` (a name of :data:`_COMMAND_GROUPS`), of its
    group only: the same parser for those words, without building the ~200 options of the rest
    (30-50 ms of every start, a tenth of a no-op ``swarm plan``)."""
    parser = _Parser(prog="swarm", description="GitOps for fleets of AI agents.")
    from swarm import __version__

    parser.add_argument("--version", action="version", version=f"swarm {__version__}")
    parser.add_argument("--color", "--colour", dest="color", choices=("auto", "always", "never"), default="auto",
                        help="colour the tables: auto (default: only on a terminal, never with NO_COLOR set), "
                             "always or never")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in (_MODULE_OF[command],) if command in _MODULE_OF else _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    from swarm.cli import help_examples

    help_examples.apply(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    global _json_usage_errors
    from swarm.cli.output import json_requested, print_exception, set_colour

    words = list(sys.argv[1:] if argv is None else argv)
    # the command first (`swarm plan specs/`): only its group is built; anything else (a global
    # option first, --help, a typo) builds them all, so usage and errors list every command
    parser = build_parser(words[0] if words else None)
    _json_usage_errors = json_requested(words)
    # `swarm images build ... -- ENGINE ARGS`: the words after the first `--` go untouched to the
    # engine (argparse alone cannot mix an optional positional with a trailing `--` list). Every
    # other command keeps argparse's own `--` (e.g. a JSON payload that starts with `-`).
    passthrough: list[str] = []
    if tuple(w for w in words if not w.startswith("-"))[:2] in _PASSTHROUGH and "--" in words:
        cut = words.index("--")
        words, passthrough = words[:cut], words[cut + 1:]
    args = parser.parse_args(words)
    set_colour(args.color)
    if hasattr(args, "passthrough"):
        args.passthrough = passthrough
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except SwarmError as exc:  # SpecError: every issue (under -o json: in the error object's "issues")
        print_exception(args, exc, EXIT_INVALID)
        return EXIT_INVALID
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `swarm validate -o json | head`: the reader left; say nothing more.
        # Point stdout at devnull so the interpreter's final flush cannot raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
