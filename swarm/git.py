"""Running git and reading its batch answers: the two helpers the compiler's index check
(:mod:`swarm.compiler.staged`) and the reconciler's commit source (:mod:`swarm.reconcile.gitsource`)
share. A module of its own so that the reconciler does not import the compiler (and its
template engine) to run git.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Sequence

from swarm.errors import SpecError, SpecIssue

__all__ = ["run_git", "split_cat_file_batch"]


def run_git(cwd: Path, *args: str, input_bytes: bytes | None = None) -> bytes:
    """``git ARGS`` in ``cwd``: its stdout; a failure (or no git) is a SpecError quoting git's words."""
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, input=input_bytes, capture_output=True, check=False)
    except OSError as exc:  # git not installed
        raise SpecError([SpecIssue(None, "", f"cannot run git: {exc}")]) from exc
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip()
        raise SpecError([SpecIssue(None, "", f"git {' '.join(args)}: {msg}")])
    return proc.stdout


def split_cat_file_batch(raw: bytes, names: Sequence[str]) -> dict[str, bytes]:
    """``git cat-file --batch`` output for objects asked in the order of ``names``: name -> content.

    Each answer is ``<sha> blob <size>\n<content>\n``; anything else (a missing object,
    a tree) is a SpecError naming the path. Pure: the caller runs git."""
    data: dict[str, bytes] = {}
    pos = 0
    for name in names:
        header_end = raw.index(b"\n", pos)
        header = raw[pos:header_end].split()
        if len(header) < 3 or header[1] != b"blob":
            raise SpecError([SpecIssue(None, "", f"git cat-file: unexpected answer for {name}: {header!r}")])
        size = int(header[2])
        start = header_end + 1
        data[name] = raw[start : start + size]
        pos = start + size + 1  # content is followed by a newline
    return data
