"""``swarm completion bash|zsh|fish``: the generated scripts run in the real shells.

bash: the script is sourced and ``_swarm`` called with COMP_WORDS/COMP_CWORD. zsh: sourced,
``_swarm`` called with ``words``/``CURRENT`` and a stand-in ``compadd`` that prints what it is
given (zsh itself filters by prefix). fish: sourced and asked with ``complete -C``, fish's
own completion engine. A shell that is not installed skips its test.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _script(shell: str, tmp_path: Path) -> Path:
    out = subprocess.run([sys.executable, "-m", "swarm", "completion", shell], capture_output=True, text=True,
                         check=True, timeout=60)
    path = tmp_path / f"swarm.{shell}"
    path.write_text(out.stdout)
    return path


def _bash(script: Path, *words: str) -> list[str]:
    code = (f"source {script}; COMP_WORDS=({' '.join(repr(w) for w in words)}); "
            "COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _swarm; printf '%s\\n' \"${COMPREPLY[@]}\"")
    out = subprocess.run(["bash", "--norc", "--noprofile", "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return [w for w in out.stdout.splitlines() if w]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_bash_completes_commands_subcommands_options_and_choices(tmp_path: Path) -> None:
    script = _script("bash", tmp_path)
    assert _bash(script, "swarm", "re") == ["registry", "reconcile"]
    assert set(_bash(script, "swarm", "bus", "")) == {"apply", "publish", "read", "breaker", "route"}
    plan = _bash(script, "swarm", "plan", "--")
    assert {"--prune", "--output", "--env", "--rev", "--help"} <= set(plan)
    assert "--watch" not in plan  # reconcile's, not plan's
    assert _bash(script, "swarm", "plan", "-o", "") == ["text", "json"]
    assert _bash(script, "swarm", "--color", "") == ["auto", "always", "never"]
    assert _bash(script, "swarm", "bus", "--spec", "x", "pu") == ["publish"]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh not installed")
def test_zsh_script_parses_and_completes(tmp_path: Path) -> None:
    script = _script("zsh", tmp_path)
    subprocess.run(["zsh", "-n", str(script)], check=True, timeout=30)

    def complete(*words: str) -> list[str]:
        quoted = " ".join(repr(w) for w in words)
        code = (f"source {script}; compadd() {{ [[ $1 == -- ]] && shift; print -rl -- \"$@\"; }}; "
                f"_files() {{ print FILES; }}; words=({quoted}); CURRENT=${{#words}}; _swarm")
        out = subprocess.run(["zsh", "-f", "-c", code], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert {"registry", "reconcile", "validate"} <= set(complete("swarm", "re"))
    assert set(complete("swarm", "bus", "")) == {"apply", "publish", "read", "breaker", "route"}
    assert "--prune" in complete("swarm", "plan", "--")
    assert complete("swarm", "plan", "-o", "") == ["text", "json"]


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish not installed")
def test_fish_completes_with_its_own_engine(tmp_path: Path) -> None:
    script = _script("fish", tmp_path)
    subprocess.run(["fish", "--no-execute", str(script)], check=True, timeout=30)

    def complete(line: str) -> list[str]:
        out = subprocess.run(["fish", "--no-config", "-c", f"source {script}; complete -C {line!r}"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return [row.split("\t")[0] for row in out.stdout.splitlines()]

    assert sorted(complete("swarm re")) == ["reconcile", "registry"]
    assert set(complete("swarm bus ")) == {"apply", "publish", "read", "breaker", "route"}
    assert "--prune" in complete("swarm plan --")
    assert sorted(complete("swarm plan -o ")) == ["json", "text"]
