"""The demo agents of ``swarm up --demo``: started, stopped and restarted as the spec and the processes change.

After each pass that applied a spec, ``up`` calls :meth:`AgentRunner.apply` with the
agents that spec wants run (:class:`AgentLaunch`: folder, runtime, spec port and a
fingerprint of the compiled files); the runner starts the new ones, stops the removed
ones and restarts those whose files changed. :meth:`AgentRunner.poll`, called a few
times a second, notices an agent that exited on its own, prints it (with the last
lines of its log) and restarts it after the crash backoff. The decisions are
:class:`swarm.reconcile.supervise.Supervisor`'s; this module only runs processes.

Logs: every agent appends to ``<state>/agent-<id>.log`` (``swarm logs ID`` prints it),
across its restarts.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

from swarm.errors import PermanentError
from swarm.reconcile.children import end_group, kill_group, spawn_group, spawn_logged, stop_process
from swarm.reconcile.supervise import Supervisor
from swarm.runtimes import DemoCommand, runtimes

#: the stamp ``prepare_agent`` leaves in an agent's folder: what was built
BUILT_STAMP = ".swarm-demo-built"
#: not part of what an agent is: installed dependencies, build output, caches, the stamp
_NOT_SOURCE = frozenset({"node_modules", "dist", "__pycache__", BUILT_STAMP})
#: lines of its log printed when an agent exits on its own with an error code
TAIL_LINES = 3


def agent_log(state_dir: Path, agent_id: str) -> Path:
    """Where ``up`` writes the log of agent ``agent_id``."""
    return state_dir / f"agent-{agent_id}.log"


def folder_digest(folder: Path) -> str:
    """The digest of an agent's compiled files (not its dependencies, build output or stamp).

    ``node_modules/`` and the rest of :data:`_NOT_SOURCE` are pruned at the top, never walked."""
    digest = hashlib.sha256()
    found: list[tuple[str, str]] = []
    for top, dirs, names in os.walk(folder):
        rel_top = os.path.relpath(top, folder)
        if rel_top == ".":
            dirs[:] = [d for d in dirs if d not in _NOT_SOURCE]
            names = [n for n in names if n not in _NOT_SOURCE]
        for name in names:
            found.append((name if rel_top == "." else f"{rel_top}/{name}", os.path.join(top, name)))
    for rel, path in sorted(found):
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:  # a socket, a dangling link, a file gone meanwhile
            continue
        digest.update(rel.encode() + b"\0" + data + b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class AgentLaunch:
    """One agent the applied spec wants run."""

    agent_id: str
    runtime: str
    folder: Path
    port: int | None  # the spec's port, taken when free

    def fingerprint(self) -> str:
        """Changes when anything it runs changes: its files, its runtime, its port."""
        files = folder_digest(self.folder) if self.folder.is_dir() else "missing"
        return hashlib.sha256(f"{self.runtime}\0{self.port}\0{files}".encode()).hexdigest()


def prepare_agent(agent_id: str, launch: DemoCommand, folder: Path, log_path: Path, env: dict[str, str],
                  out: Callable[[str], None]) -> bool:
    """Run a demo agent's setup commands (install, build) once per content of its folder
    (a stamp beside it records what was built); False, with the reason printed, on failure.

    Each command runs in a session of its own that dies with ``up`` (:mod:`swarm.reconcile.children`),
    and its whole process group is ended after it, so no npm helper outlives it."""
    stamp = folder / BUILT_STAMP
    digest = folder_digest(folder)
    if stamp.is_file() and stamp.read_text() == digest:
        return True
    out(f"    demo: installing and building agent {agent_id} (once; output in {log_path})")
    with open(log_path, "ab") as log:
        for step in launch.setup:
            try:
                proc = spawn_group(step, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
            except OSError as exc:
                out(f"    demo: agent {agent_id} not started: cannot run `{' '.join(step)}`: {exc}")
                return False
            try:
                code = proc.wait()
            finally:
                end_group(proc.pid)  # helpers it left behind in its group
            if code != 0:
                out(f"    demo: agent {agent_id} not started: `{' '.join(step)}` exited {code} (see {log_path})")
                return False
    stamp.write_text(digest)
    return True


def printable(line: str) -> str:
    """``line`` with control characters shown as ``\\xNN``: an agent's output never drives ``up``'s terminal."""
    return "".join(c if c.isprintable() or c == "\t" else f"\\x{ord(c):02x}" for c in line)


def describe_exit(code: int) -> str:
    """``exited with code 1``, or ``was killed by SIGKILL`` for a signal."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


@dataclass
class _Running:
    launch: AgentLaunch
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    port: int
    log_start: int  # the size of its log when this run began: its own lines come after


class AgentRunner:
    """The demo agents' processes, driven by a :class:`Supervisor`."""

    def __init__(self, *, state_dir: Path, env_for: Callable[[str, int], dict[str, str]],
                 pick_port: Callable[[int | None], int], out: Callable[[str], None],
                 supervisor: Supervisor | None = None, clock: Callable[[], float] = time.monotonic,
                 stop_timeout: float = 10.0,
                 command_for: Callable[[AgentLaunch, int], DemoCommand] | None = None) -> None:
        self.state_dir = state_dir
        self.env_for = env_for
        self.pick_port = pick_port
        self.out = out
        self.supervisor = supervisor or Supervisor()
        self.clock = clock
        self.stop_timeout = stop_timeout
        #: how an agent is run on a port: its runtime's ``demo`` (tests give a command of their own)
        self.command_for = command_for or (lambda launch, port: runtimes()[launch.runtime].demo(launch.folder, port))
        self.running: dict[str, _Running] = {}
        self.launches: dict[str, AgentLaunch] = {}  # every supervised agent, running or waiting
        self.ports: dict[str, int] = {}  # the port each agent had last (a crash restart takes it again)
        self._refused: dict[str, str] = {}  # agent -> fingerprint it could not start with (said once)

    # ------------------------------------------------------------------ after a pass

    def apply(self, launches: list[AgentLaunch]) -> None:
        """Make the running agents those of ``launches`` (the applied spec's)."""
        wanted: dict[str, str] = {}
        by_id: dict[str, AgentLaunch] = {}
        for launch in launches:
            fingerprint = launch.fingerprint()
            if self._refused.get(launch.agent_id) == fingerprint:
                continue  # it could not start with these files; said so already
            self._refused.pop(launch.agent_id, None)
            wanted[launch.agent_id], by_id[launch.agent_id] = fingerprint, launch
        changes = self.supervisor.plan(wanted)
        for agent in changes.stop:
            self._stop(agent)
            self.out(f"    demo: stopped agent {agent} (no longer in the spec)")
        for agent in changes.restart:
            self._stop(agent)
            if self._start(by_id[agent], wanted[agent], fresh_port=True):
                self.out(f"    demo: restarted agent {agent} on port {self.ports[agent]} (its compiled files changed)")
        for agent in changes.start:
            if self._start(by_id[agent], wanted[agent], fresh_port=True):
                self.out(f"    demo: started agent {agent} on port {self.ports[agent]}")

    # ------------------------------------------------------------------ between passes

    def poll(self) -> None:
        """Notice agents that exited on their own (print, schedule a restart) and restart those due."""
        for agent, run in list(self.running.items()):
            code = run.proc.poll()
            if code is None:
                continue
            self._forget(agent)
            delay = self.supervisor.exited(agent, self.clock())
            self.out(f"{time.strftime('%H:%M:%S')} agent {agent} {describe_exit(code)}; restarting in {delay:.1f}s")
            for line in self._tail(run) if code > 0 else ():  # why it failed; a signal has no story to tell
                self.out(f"    {agent}: {line}")
        for agent in self.supervisor.due(self.clock()):
            launch = self.launches[agent]
            if self._start(launch, self.supervisor.agents[agent].fingerprint, fresh_port=False, restart=True):
                self.out(f"    demo: restarted agent {agent} on port {self.ports[agent]}")

    def stop_all(self) -> None:
        """Stop every agent: all are told at once (each deregisters), then each is waited for."""
        for run in self.running.values():
            if run.proc.poll() is None:
                kill_group(run.proc.pid, signal.SIGTERM)
        for agent in sorted(self.running, reverse=True):
            self._stop(agent, signalled=True)  # once: a second SIGTERM makes uvicorn skip its shutdown

    # ------------------------------------------------------------------ processes

    def _start(self, launch: AgentLaunch, fingerprint: str, *, fresh_port: bool, restart: bool = False) -> bool:
        agent = launch.agent_id
        preferred = launch.port if fresh_port or agent not in self.ports else self.ports[agent]
        port = self.pick_port(preferred)
        demo = self.command_for(launch, port)
        missing = [tool for tool in demo.requires if shutil.which(tool) is None]
        if missing:
            self.out(f"    demo: cannot start agent {agent} (runtime {launch.runtime}): "
                     f"{', '.join(missing)} not on PATH; install it and restart swarm up")
            return self._refuse(agent, fingerprint)
        env = self.env_for(agent, port)
        log_path = agent_log(self.state_dir, agent)
        if demo.setup and not prepare_agent(agent, demo, launch.folder, log_path, env, self.out):
            return self._refuse(agent, fingerprint, retry=restart)
        try:
            proc, log = spawn_logged(f"agent {agent}", demo.command, log_path, env=env, cwd=launch.folder)
        except PermanentError as exc:
            self.out(f"    demo: cannot start agent {agent}: {exc}")
            return self._refuse(agent, fingerprint, retry=restart)
        self.running[agent] = _Running(launch, proc, log, port, log_start=log.tell())
        self.launches[agent], self.ports[agent] = launch, port
        self.supervisor.started(agent, fingerprint, self.clock())
        return True

    def _refuse(self, agent: str, fingerprint: str, *, retry: bool = False) -> bool:
        """It cannot start: a crash restart tries again later; a new start waits for other files."""
        if retry and agent in self.supervisor.agents:
            delay = self.supervisor.failed_to_start(agent, self.clock())
            self.out(f"    demo: agent {agent} did not start; trying again in {delay:.1f}s")
            return False
        self.supervisor.stopped(agent)
        self.launches.pop(agent, None)
        self._refused[agent] = fingerprint
        return False

    def _stop(self, agent: str, *, signalled: bool = False) -> None:
        """SIGTERM its process group (it deregisters; not again when ``signalled``), SIGKILL after
        ``stop_timeout``; forget it."""
        run = self.running.get(agent)
        self.supervisor.stopped(agent)
        self.launches.pop(agent, None)
        if run is None:
            return
        if run.proc.poll() is None:
            stop_process(run.proc, None if signalled else signal.SIGTERM, self.stop_timeout, group=True)
        self._forget(agent)

    def _forget(self, agent: str) -> None:
        run = self.running.pop(agent)
        end_group(run.proc.pid)  # whatever it left in its group
        run.log.close()

    def _tail(self, run: _Running) -> list[str]:
        """The last lines this run wrote to its log."""
        path = agent_log(self.state_dir, run.launch.agent_id)
        try:
            with open(path, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                start = max(run.log_start, size - 4096)
                fh.seek(start)
                text = fh.read().decode(errors="replace")
        except OSError:
            return []
        lines = [printable(line.rstrip()) for line in text.splitlines() if line.strip()]
        return lines[-TAIL_LINES:]
