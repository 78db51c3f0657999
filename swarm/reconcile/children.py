"""Child processes of ``swarm up`` that die with it: ``PR_SET_PDEATHSIG``, a session each, a log each.

Every child (redis-server, the registry, each demo agent, each setup command of
one) is started by :func:`spawn_logged`: in a session (and process group) of its
own, so Ctrl-C in the terminal reaches ``up`` only and ``up`` stops them in order,
and with ``PR_SET_PDEATHSIG`` set to SIGTERM (Linux), so the kernel ends it when
``up`` dies, even by SIGKILL. The death signal reaches that child only, not what
it starts in turn: :func:`kill_group` ends a child's whole process group when
``up`` stops it or sees it exit, and the children ``up`` runs exec their program
directly (no shell in between), so on SIGKILL of ``up`` the process the signal
reaches is the program itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from swarm.errors import PermanentError

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Any:
    """libc's ``prctl``, looked up once in the parent (never in a freshly forked child)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the parent dies (Linux; a no-op elsewhere)."""
    if _PRCTL is None:
        return
    _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def spawn_logged(name: str, args: list[str], log_path: Path, *, env: dict[str, str] | None = None,
                 cwd: Path | None = None, pass_fds: tuple[int, ...] = (),
                 stdin: bool = False) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """Start ``args`` appending its output to ``log_path``: (the process, the open log)."""
    log = open(log_path, "ab")
    try:
        proc = subprocess.Popen(args, stdout=log, stderr=log, env=env, cwd=cwd, start_new_session=True,
                                preexec_fn=die_with_parent, pass_fds=pass_fds,
                                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)
    except OSError as exc:  # e.g. an agent's compiled folder is missing: say so
        log.close()
        raise PermanentError(f"swarm up: cannot start {name}: {exc}") from exc
    return proc, log


def kill_group(pgid: int, sig: signal.Signals) -> None:
    """Signal the process group ``pgid`` (a child started by :func:`spawn_logged`); gone is fine."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
