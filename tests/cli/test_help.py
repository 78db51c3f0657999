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
    assert "Example:" in text and "swarm bus breaker summarizer --reset" in text


@pytest.mark.parametrize("line", sorted({line for lines in EXAMPLES.values() for line in lines}))
def test_each_example_parses(line: str) -> None:
    words = shlex.split(line)
    assert words[0] == "swarm"
    args = build_parser().parse_args(words[1:])  # SystemExit (exit 2) on a wrong example
    assert callable(args.handler)


def test_acl_check_and_schema_under_o_json(repo_root, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from swarm.cli import main

    code = main(["acl", "check", "worker", "publish", "results.research", "--spec", str(repo_root / "specs"), "-o", "json"])
    decided = json.loads(capsys.readouterr().out)
    assert code == 0 and decided["decision"] == "allow" and decided["rule"] == "publish: results.*"
    code = main(["acl", "check", "observer", "publish", "results.research", "--spec", str(repo_root / "specs"), "-o", "json"])
    assert code == 1 and json.loads(capsys.readouterr().out)["decision"] == "deny"
    code = main(["acl", "check", "nobody", "publish", "x", "--spec", str(repo_root / "specs"), "-o", "json"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "" and "nobody" in json.loads(captured.err)["error"]["message"]
    code = main(["schema", "--out", str(repo_root / "schemas"), "--check", "-o", "json"])
    assert code == 0 and json.loads(capsys.readouterr().out) == {"out": str(repo_root / "schemas"), "check": True, "stale": []}


#: commands that print no data of their own (or only a stream of raw lines), so no ``-o json``
NO_DATA = {
    "acl": "a group", "registry": "a group", "bus": "a group", "secrets": "a group", "images": "a group",
    "registry serve": "a server: logs only", "bus route": "a daemon: logs only", "up": "runs the stack: event lines",
    "logs": "an agent's raw log lines",
    "bus read": "prints the topic log as JSON lines already",
    "bus apply": "prints the actions as lines; `swarm plan -o json` gives the same actions as data",
    "archive": "a copier: a count line", "init": "writes files, names them", "secrets env": "writes a file",
    "secrets k8s": "prints YAML manifests", "images build": "the engine's output", "completion": "a shell script",
}


def test_every_data_command_takes_o_json() -> None:
    lacking = []
    for path, sub, _ in subcommands(build_parser()):
        name = " ".join(path)
        has_json = any("-o" in a.option_strings and "json" in (a.choices or ()) for a in sub._actions)
        if not has_json and name not in NO_DATA:
            lacking.append(name)
    assert lacking == []


def test_the_command_groups_table_is_what_the_modules_register() -> None:
    import importlib

    from swarm.cli import _COMMAND_GROUPS, _Parser

    for module, commands in _COMMAND_GROUPS.items():
        sub = _Parser(prog="swarm").add_subparsers(dest="command", parser_class=_Parser)
        importlib.import_module(module).register(sub)
        assert tuple(sub.choices) == commands, module


def test_a_parser_built_for_one_command_parses_and_helps_as_the_full_one() -> None:
    """main() builds only the group of the first word: same help, same parse, for every command path."""
    from swarm.cli import _COMMAND_GROUPS, _MODULE_OF

    full = build_parser()
    paths = [(path, sub) for path, sub, _ in subcommands(full)]
    assert len({p[0] for p, _ in paths}) > 20
    for path, sub in paths:
        lean = dict((p, s) for p, s, _ in subcommands(build_parser(path[0])))
        group = _COMMAND_GROUPS[_MODULE_OF[path[0]]]
        assert set(lean) == {p for p, _ in paths if p[0] in group}, path
        assert lean[path].format_help() == sub.format_help(), path
    for line in sorted({line for lines in EXAMPLES.values() for line in lines}):
        words = shlex.split(line)[1:]
        assert vars(build_parser(words[0]).parse_args(words)) == vars(full.parse_args(words)), line


def test_a_parser_for_no_or_an_unknown_command_has_every_command() -> None:
    every = {p[0] for p, _, _ in subcommands(build_parser())}
    for first in (None, "--color", "plna"):
        assert {p[0] for p, _, _ in subcommands(build_parser(first))} == every
