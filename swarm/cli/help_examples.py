"""A description and an example for the help of every subcommand, in one table.

Commands that set their own ``description=``/``epilog=`` keep them; the others get
their one-line help as the description and the examples below as the epilog
(:func:`apply`, called once by :func:`swarm.cli.build_parser`). The test in
tests/cli/test_help.py walks the parser: every subcommand has both, and its
example names its own command path.
"""

from __future__ import annotations

import argparse
from typing import Iterator

from swarm.cli.output import example

#: command path -> example command lines (each starts with ``swarm <path>``)
EXAMPLES: dict[str, tuple[str, ...]] = {
    "validate": ("swarm validate specs/", "swarm validate specs/ -o json"),
    "schema": ("swarm schema --out schemas/",),
    "acl": ("swarm acl check worker publish results.research --spec specs/",),
    "acl check": ("swarm acl check worker publish results.research --spec specs/",),
    "compile": ("swarm compile specs/", "swarm compile specs/ --check"),
    "registry": ("swarm registry serve --port 8080 --redis-url redis://127.0.0.1:6379/0",),
    "registry serve": ("swarm registry serve --port 8080 --redis-url redis://127.0.0.1:6379/0",),
    "registry push": ("swarm registry push compiled/research --registry-url http://127.0.0.1:8080",),
    "token": ("swarm token architect", "swarm token --admin -o json"),
    "bus": ("swarm bus read results.research --as reviewer --count 10",),
    "bus apply": ("swarm bus apply compiled/research",),
    "bus publish": ("swarm bus publish --as web-researcher results.research '{\"title\": \"x\"}'",),
    "bus read": ("swarm bus read results.research --as reviewer --count 10",),
    "bus breaker": ("swarm bus breaker summarizer", "swarm bus breaker summarizer --reset"),
    "bus route": ("swarm bus route --redis-url redis://127.0.0.1:6379/0",),
    "plan": ("swarm plan specs/", "swarm plan specs/ --full -o json"),
    "reconcile": ("swarm reconcile specs/ --watch", "swarm reconcile --watch --rev origin/main",
                  "swarm reconcile specs/ --watch --metrics-port 9464"),
    "status": ("swarm status", "swarm status --full -o json"),
    "up": ("swarm up", "swarm up --demo"),
    "logs": ("swarm logs reviewer", "swarm logs reviewer --follow -n 20"),
    "secrets": ("swarm secrets env compiled/research",),
    "secrets env": ("swarm secrets env compiled/research",),
    "secrets k8s": ("swarm secrets k8s compiled/research --namespace agents",),
    "images": ("swarm images build compiled/research --engine podman",),
    "images build": ("swarm images build compiled/research --engine podman",),
}


def subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
                ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str | None]]:
    """Every subcommand below ``parser``: (path, its parser, its one-line help)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield path + (name,), sub, helps.get(name)
                yield from subcommands(sub, path + (name,))


def apply(parser: argparse.ArgumentParser) -> None:
    """Fill in the description and the example epilog where a command set none."""
    for path, sub, one_line in subcommands(parser):
        if not sub.description and one_line:
            sub.description = one_line[0].upper() + one_line[1:] + ("" if one_line.endswith(".") else ".")
        lines = EXAMPLES.get(" ".join(path))
        if not sub.epilog and lines:
            sub.epilog = example(*lines)
