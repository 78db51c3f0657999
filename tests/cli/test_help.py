"""Every subcommand's help has a description and an example naming its own command path,
and the examples of the shared table are commands the parser accepts."""

from __future__ import annotations

import shlex

import pytest

from swarm.cli import build_parser
from swarm.cli.help_examples import EXAMPLES, subcommands


def test_every_subcommand_has_a_description_and_an_example_of_itself() -> None:
    missing = []
    for path, sub, _ in subcommands(build_parser()):
        name = "swarm " + " ".join(path)
        if not sub.description or name not in (sub.epilog or ""):
            missing.append(name)
    assert missing == []


def test_the_help_text_shows_the_example() -> None:
    parser = build_parser()
    sub = dict((p, s) for p, s, _ in subcommands(parser))[("bus", "breaker")]
    text = sub.format_help()
    assert "Example:" in text and "swarm bus breaker writer --reset" in text


@pytest.mark.parametrize("line", sorted({line for lines in EXAMPLES.values() for line in lines}))
def test_each_example_parses(line: str) -> None:
    words = shlex.split(line)
    assert words[0] == "swarm"
    args = build_parser().parse_args(words[1:])  # SystemExit (exit 2) on a wrong example
    assert callable(args.handler)
