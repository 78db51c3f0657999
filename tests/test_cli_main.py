"""The dispatcher: exit codes and behaviour shared by every command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from swarm.cli import main


def test_closed_stdout_ends_quietly_without_a_traceback(repo_root: Path) -> None:
    """`swarm validate -o json | head` must not end in a BrokenPipeError traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "swarm", "validate", "-o", "json", str(repo_root / "specs")],
            stdout=write_end,
            stderr=subprocess.PIPE,
            cwd=repo_root,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 141
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()


def test_usage_errors_exit_2(capsys: object) -> None:
    try:
        main(["compile", "--no-such-flag"])
    except SystemExit as exc:
        assert exc.code == 2
    else:  # pragma: no cover
        raise AssertionError("argparse accepted an unknown flag")


def test_compile_cache_is_private_to_the_test() -> None:
    cache = os.environ.get("SWARM_CACHE_DIR", "")
    assert cache and not cache.startswith(str(Path.home() / ".cache"))
