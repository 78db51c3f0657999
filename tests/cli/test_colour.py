"""Colour only on a terminal: `swarm validate` under a real pty colours its status word, under a
pipe it does not, and NO_COLOR (or --color never) turns it off on a terminal too."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.terminal import drain

ESC = "\x1b["


def run_on_pty(args: list[str], env: dict[str, str]) -> str:
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "swarm", *args], stdin=follower, stdout=follower,
                              stderr=follower, env=env, timeout=60)
        assert proc.returncode == 0
        os.close(follower)
        follower = -1
        return drain(leader).decode()
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)


@pytest.fixture
def env(repo_root: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TERM")}
    return {**clean, "TERM": "xterm", "PYTHONPATH": str(repo_root)}


def test_colour_on_a_terminal_only(repo_root: Path, env: dict[str, str]) -> None:
    spec = str(repo_root / "specs")
    on_tty = run_on_pty(["validate", spec], env)
    assert f"{ESC}32mok{ESC}0m" in on_tty
    piped = subprocess.run([sys.executable, "-m", "swarm", "validate", spec], env=env, capture_output=True,
                           text=True, timeout=60)
    assert piped.returncode == 0 and piped.stdout.startswith("ok:") and ESC not in piped.stdout


@pytest.mark.parametrize("extra_env,flags", [({"NO_COLOR": "1"}, []), ({}, ["--color", "never"])])
def test_no_color_and_never_win_on_a_terminal(repo_root: Path, env: dict[str, str], extra_env: dict[str, str],
                                              flags: list[str]) -> None:
    out = run_on_pty([*flags, "validate", str(repo_root / "specs")], {**env, **extra_env})
    assert "ok:" in out and ESC not in out


def test_always_colours_a_pipe(repo_root: Path, env: dict[str, str]) -> None:
    piped = subprocess.run([sys.executable, "-m", "swarm", "--color", "always", "validate", str(repo_root / "specs")],
                           env=env, capture_output=True, text=True, timeout=60)
    assert f"{ESC}32mok{ESC}0m" in piped.stdout
