"""The demo agents' process runner of ``swarm up`` (:class:`AgentRunner`) on real, short-lived processes.

Each "agent" is a small Python or shell command given through ``command_for`` (the
runtimes' real commands are exercised by the slow tests of ``swarm up --demo``); the
clock the restart backoff reads is the test's, so restarts happen when the test says.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from swarm.reconcile.supervise import Supervisor
from swarm.reconcile.up_agents import AgentLaunch, AgentRunner, describe_exit, folder_digest, prepare_agent
from swarm.runtimes import DemoCommand
from tests.support.procs import alive


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _until(predicate: Callable[[], bool], what: str, poll: Callable[[], None] = lambda: None) -> None:
    deadline = time.monotonic() + 30
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        poll()
        time.sleep(0.05)


def _runner(tmp_path: Path, commands: dict[str, list[str] | DemoCommand], lines: list[str],
            clock: Clock) -> AgentRunner:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)

    def command_for(launch: AgentLaunch, port: int) -> DemoCommand:
        command = commands[launch.agent_id]
        return command if isinstance(command, DemoCommand) else DemoCommand(command=command)

    return AgentRunner(state_dir=state, env_for=lambda agent, port: {"PATH": "/usr/bin:/bin", "AGENT": agent},
                       pick_port=lambda preferred: preferred or 1, out=lines.append, clock=clock,
                       supervisor=Supervisor(stable_seconds=10.0, base=1.0, cap=4.0, rng=random.Random(3)),
                       stop_timeout=5.0, command_for=command_for)


def _launch(tmp_path: Path, agent: str, port: int = 9000) -> AgentLaunch:
    folder = tmp_path / "compiled" / agent
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "server.py").exists():
        (folder / "server.py").write_text("VERSION = '1.0.0'\n")
    return AgentLaunch(agent, "python", folder, port)


SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def test_a_crashing_agent_is_reported_with_its_last_lines_and_restarted_after_the_backoff(tmp_path: Path) -> None:
    lines: list[str] = []
    clock = Clock()
    crash = [sys.executable, "-c", "import sys; print('starting', flush=True); sys.exit('boom: no config')"]
    runner = _runner(tmp_path, {"a": crash}, lines, clock)
    runner.apply([_launch(tmp_path, "a")])
    assert lines == ["    demo: started agent a on port 9000"]
    first = runner.running["a"].proc.pid
    _until(lambda: any("exited" in line for line in lines), "the exit line", runner.poll)
    exit_line = next(line for line in lines if "exited" in line)
    assert " agent a exited with code 1; restarting in " in exit_line
    delay = runner.supervisor.agents["a"].restart_at - clock.now  # type: ignore[operator]
    assert exit_line.endswith(f"restarting in {delay:.1f}s") and 0.05 <= delay <= 1.0
    assert lines[-2:] == ["    a: starting", "    a: boom: no config"]  # this run's lines of its log
    assert "a" not in runner.running and not alive(first)

    runner.poll()  # not due yet: the backoff holds it
    assert "a" not in runner.running
    clock.now += delay
    runner.poll()
    assert lines[-1] == "    demo: restarted agent a on port 9000" and runner.running["a"].proc.pid != first
    _until(lambda: "a" not in runner.running, "the second crash", runner.poll)
    assert runner.supervisor.agents["a"].crashes == 2
    log = (tmp_path / "state" / "agent-a.log").read_text()
    assert log.count("boom: no config") == 2  # both runs, one log
    assert [line for line in lines if line.startswith("    a: ")].count("    a: starting") == 2  # never the earlier run's
    runner.stop_all()


def test_the_backoff_starts_over_after_the_agent_stayed_up(tmp_path: Path) -> None:
    lines: list[str] = []
    clock = Clock()
    marker = tmp_path / "exit-now"
    waits_then_fails = [sys.executable, "-c", (
        "import os, sys, time\n"
        f"while not os.path.exists({str(marker)!r}): time.sleep(0.02)\n"
        f"os.remove({str(marker)!r}); sys.exit(2)\n")]
    runner = _runner(tmp_path, {"a": waits_then_fails}, lines, clock)
    runner.apply([_launch(tmp_path, "a")])
    for _ in range(3):  # three quick crashes
        marker.touch()
        _until(lambda: "a" not in runner.running, "a crash", runner.poll)
        clock.now = runner.supervisor.agents["a"].restart_at  # type: ignore[assignment]
        runner.poll()
        assert "a" in runner.running
    assert runner.supervisor.agents["a"].backoff.failures == 3
    clock.now += 10.0  # it stays up the stable time
    marker.touch()
    _until(lambda: "a" not in runner.running, "the late crash", runner.poll)
    assert runner.supervisor.agents["a"].crashes == 1 and runner.supervisor.agents["a"].backoff.failures == 1
    runner.stop_all()


def test_removed_agents_stop_with_what_they_started_and_changed_ones_restart(tmp_path: Path) -> None:
    lines: list[str] = []
    clock = Clock()
    child_pid = tmp_path / "child.pid"
    with_a_child = ["/bin/sh", "-c", f"sleep 120 & echo $! > {child_pid}; wait"]  # a grandchild of up's
    runner = _runner(tmp_path, {"a": SLEEPER, "b": with_a_child}, lines, clock)
    a, b = _launch(tmp_path, "a", 9001), _launch(tmp_path, "b", 9002)
    runner.apply([a, b])
    assert lines == ["    demo: started agent a on port 9001", "    demo: started agent b on port 9002"]
    _until(lambda: child_pid.exists() and child_pid.read_text().strip() != "", "b's child")
    grandchild = int(child_pid.read_text())
    b_pid, a_pid = runner.running["b"].proc.pid, runner.running["a"].proc.pid
    assert alive(grandchild)

    runner.apply([a, b])  # nothing changed: nothing done
    assert len(lines) == 2 and runner.running["a"].proc.pid == a_pid

    (a.folder / "server.py").write_text("VERSION = '1.1.0'\n")  # a version bump
    runner.apply([a])  # and b removed from the spec
    assert lines[2:] == ["    demo: stopped agent b (no longer in the spec)",
                         "    demo: restarted agent a on port 9001 (its compiled files changed)"]
    assert not alive(b_pid) and not alive(grandchild), "the agent's own child outlived its stop"
    assert not alive(a_pid) and runner.running["a"].proc.pid != a_pid and set(runner.running) == {"a"}
    runner.poll()
    assert not [line for line in lines if "exited" in line]  # a stop of up's own is no crash
    runner.stop_all()
    assert runner.running == {} and runner.supervisor.agents == {}


def test_an_agent_that_cannot_start_is_said_once_until_its_files_change(tmp_path: Path) -> None:
    lines: list[str] = []
    clock = Clock()
    commands: dict[str, list[str] | DemoCommand] = {
        "tool": DemoCommand(command=SLEEPER, requires=["no-such-tool-swarm-test"]),
        "build": DemoCommand(command=SLEEPER, setup=[["/bin/sh", "-c", "echo compile error >&2; exit 4"]]),
    }
    runner = _runner(tmp_path, commands, lines, clock)
    tool, build = _launch(tmp_path, "tool"), _launch(tmp_path, "build")
    runner.apply([tool, build])
    assert any("cannot start agent tool (runtime python): no-such-tool-swarm-test not on PATH" in line for line in lines)
    assert any("agent build not started: `/bin/sh -c echo compile error >&2; exit 4` exited 4" in line for line in lines)
    assert runner.running == {}
    said = len(lines)
    runner.apply([tool, build])  # the same files: not tried, not said again
    assert len(lines) == said
    assert "compile error" in (tmp_path / "state" / "agent-build.log").read_text()
    commands["build"] = DemoCommand(command=SLEEPER, setup=[["/bin/true"]])
    (build.folder / "server.py").write_text("fixed = True\n")
    runner.apply([tool, build])
    assert lines[-1] == "    demo: started agent build on port 9000" and set(runner.running) == {"build"}
    runner.stop_all()


def test_setup_runs_once_per_content_of_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "agent"
    folder.mkdir()
    (folder / "package.json").write_text("{}")
    count = tmp_path / "count"
    step = ["/bin/sh", "-c", f"echo run >> {count}; mkdir -p node_modules dist; echo x > dist/main.js"]
    launch = DemoCommand(command=SLEEPER, setup=[step])
    said: list[str] = []
    before = folder_digest(folder)
    for _ in range(3):
        assert prepare_agent("a", launch, folder, tmp_path / "a.log", {"PATH": "/usr/bin:/bin"}, said.append)
    assert count.read_text() == "run\n" and len(said) == 1  # its stamp, dist/ and node_modules/ are not its source
    assert folder_digest(folder) == before
    (folder / "package.json").write_text('{"version": "2"}')
    assert prepare_agent("a", launch, folder, tmp_path / "a.log", {"PATH": "/usr/bin:/bin"}, said.append)
    assert count.read_text() == "run\nrun\n"


def test_an_agent_s_output_cannot_drive_the_terminal_of_up(tmp_path: Path) -> None:
    lines: list[str] = []
    hostile = [sys.executable, "-c", "import sys; sys.stdout.write('\\x1b[2J\\x1b]0;owned\\x07gone\\n'); sys.exit(5)"]
    runner = _runner(tmp_path, {"a": hostile}, lines, Clock())
    runner.apply([_launch(tmp_path, "a")])
    _until(lambda: "a" not in runner.running, "the exit", runner.poll)
    assert lines[-1] == "    a: \\x1b[2J\\x1b]0;owned\\x07gone"
    assert not any("\x1b" in line or "\x07" in line for line in lines)
    runner.stop_all()


def test_the_stack_says_once_when_redis_or_the_registry_exits(tmp_path: Path) -> None:
    from swarm.reconcile.up import LocalStack

    stack = LocalStack()
    try:
        stack.spawn("registry", [sys.executable, "-c", "import sys; sys.exit(3)"], tmp_path / "registry.log")
        stack.spawn("redis", SLEEPER, tmp_path / "redis.log")
        _until(lambda: stack.children[0].proc.poll() is not None, "the registry to exit")
        assert stack.exits() == [f"swarm up: error: registry exited with code 3; see {tmp_path / 'registry.log'} "
                                 "(stop swarm up with Ctrl-C and start it again)"]
        assert stack.exits() == []  # said once
    finally:
        stack.stop()
    assert stack.children == []


@pytest.mark.parametrize("code, text", [(0, "exited with code 0"), (3, "exited with code 3"),
                                        (-9, "was killed by SIGKILL"), (-15, "was killed by SIGTERM"),
                                        (-99, "was killed by signal 99")])
def test_exit_descriptions(code: int, text: str) -> None:
    assert describe_exit(code) == text
