"""Child processes of ``swarm up`` that die with it: ``PR_SET_PDEATHSIG``, a session each, a log each.

Every child (redis-server, the registry, each demo agent, each setup command of
one) is started by :func:`spawn_logged`: in a session (and process group) of its
own, so Ctrl-C in the terminal reaches ``up`` only and ``up`` stops them in order,
and with ``PR_SET_PDEATHSIG`` set to SIGTERM (Linux), so the kernel ends it when
``up`` dies, even by SIGKILL.

The death signal reaches that child only, not what it starts in turn (npm's
``sh -c tsc`` and its ``node``). So each child's whole process group is ended
too: by :func:`end_group` when ``up`` stops a child or sees it exit, and, when
``up`` dies without a word, by the reaper (:mod:`swarm.reconcile.reaper`), a small
process started with the first child that holds the list of live groups and ends
them all when its pipe from ``up`` closes. What a child moves into a session of
its own (``setsid``) escapes both; none of the programs ``up`` runs does that.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from swarm.errors import PermanentError
from swarm.reconcile.reaper import signal_group

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


class Reaper:
    """The reaper process of this ``up`` (see :mod:`swarm.reconcile.reaper`) and the pipe to it."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self._pipe: int | None = None

    def _ensure(self) -> int | None:
        if self._pipe is None and self.proc is None:
            read, write = os.pipe()  # neither end is inherited by the other children (close_fds)
            try:
                self.proc = subprocess.Popen([sys.executable, "-I", str(Path(__file__).with_name("reaper.py"))],
                                             stdin=read, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                             start_new_session=True)
            except OSError:  # no reaper: the death signal still ends the direct children
                os.close(write)
                return None
            finally:
                os.close(read)
            self._pipe = write
            atexit.register(self.close)  # a clean exit of the process closes it too
        return self._pipe

    def tell(self, line: str) -> None:
        pipe = self._ensure()
        if pipe is None:
            return
        try:
            os.write(pipe, line.encode() + b"\n")
        except OSError:  # the reaper died: the death signal still ends the direct children
            pass

    def close(self) -> None:
        """End the reaper (it ends the groups still listed: none after a clean stop)."""
        if self._pipe is not None:
            os.close(self._pipe)
            self._pipe = None
        if self.proc is not None:
            stop_process(self.proc, None)  # closing the pipe is what tells it to end
            self.proc = None


#: the reaper of this process, started with its first child
REAPER = Reaper()


def spawn_logged(name: str, args: list[str], log_path: Path, *, env: dict[str, str] | None = None,
                 cwd: Path | None = None, pass_fds: tuple[int, ...] = (),
                 stdin: bool = False) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """Start ``args`` appending its output to ``log_path``: (the process, the open log)."""
    log = open(log_path, "ab")
    try:
        proc = spawn_group(args, stdout=log, stderr=log, env=env, cwd=cwd, pass_fds=pass_fds,
                           stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)
    except OSError as exc:  # e.g. an agent's compiled folder is missing: say so
        log.close()
        raise PermanentError(f"swarm up: cannot start {name}: {exc}") from exc
    return proc, log


def spawn_group(args: list[str], **popen: Any) -> subprocess.Popen[bytes]:
    """Start ``args`` as :func:`spawn_logged` does (a session of its own, dying with ``up``, known to the
    reaper), with ``popen``'s other arguments; end it with :func:`end_group`."""
    proc: subprocess.Popen[bytes] = subprocess.Popen(args, start_new_session=True, preexec_fn=die_with_parent, **popen)
    REAPER.tell(f"+{proc.pid}")
    return proc


def stop_process(proc: "subprocess.Popen[bytes]", sig: signal.Signals | None = signal.SIGTERM,
                 timeout: float = 10.0, *, group: bool = False) -> None:
    """Send ``sig`` to ``proc`` while it runs (to its whole process group with ``group``; none
    with ``sig=None``: it was told to end already), wait ``timeout``, then SIGKILL it and wait."""
    def send(signum: signal.Signals) -> None:
        if group:
            kill_group(proc.pid, signum)
        else:
            proc.send_signal(signum)

    if sig is not None and proc.poll() is None:
        send(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait()


def kill_group(pgid: int, sig: signal.Signals) -> None:
    """Signal the process group ``pgid`` (a child started by :func:`spawn_logged`); gone is fine."""
    signal_group(pgid, sig)


def end_group(pgid: int) -> None:
    """After a child ended (or was stopped): SIGKILL what is left of its group, and forget the group."""
    kill_group(pgid, signal.SIGKILL)
    REAPER.tell(f"-{pgid}")
