"""docs/gitops.md and .pre-commit-hooks.yaml stay true to the CLI."""

from __future__ import annotations

import re

import yaml

from swarm.cli import build_parser
from tests.reconcile.specdata import REPO


def test_pre_commit_hooks_run_real_swarm_commands() -> None:
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert {h["id"] for h in hooks} == {"swarm-validate", "swarm-compile-check"}
    parser = build_parser()
    for hook in hooks:
        assert set(hook) >= {"id", "name", "entry", "language"}
        program, *argv = hook["entry"].split()
        assert program == "swarm"
        args = parser.parse_args([*argv, *hook.get("args", [])])
        assert callable(args.handler)


def test_every_swarm_command_in_the_doc_parses() -> None:
    text = (REPO / "docs" / "gitops.md").read_text()
    blocks = re.findall(r"^```(sh|text|yaml)\n(.*?)^```", text, flags=re.M | re.S)
    commands = []
    for lang, body in blocks:
        for line in body.splitlines():
            if lang == "text" and not line.startswith("$ "):
                continue  # program output, not a command
            line = re.sub(r"^\s*(\$ |- run: |run: )?", "", line).split("#")[0].split("|")[0].strip()
            if line.startswith("swarm "):
                commands.append(line.split()[1:])
    assert len(commands) >= 7
    parser = build_parser()
    for argv in commands:
        parser.parse_args(argv)  # SystemExit(2) on an option the CLI does not have
