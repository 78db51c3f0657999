"""``swarm up --demo`` supervises its agents: it follows the spec, restarts crashed agents, and
none of its children outlives it, even when it is SIGKILLed.

Real processes throughout: ``swarm up`` in a subprocess on a one-file spec of its own
(free ports for Redis, the registry and every agent), its agents under uvicorn.
Processes are found and watched by pid in /proc (with their start time, so a pid
reused meanwhile is not mistaken for one of ours).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.reconcile.test_up import Up
from tests.support.services import free_port, python_cmd
from tests.support.procs import cmdline, depths, descendants, processes_in, start_time

pytestmark = pytest.mark.slow

SWARM = "tiny"


def _agent_doc(agent_id: str, version: str = "1.0.0") -> str:
    return (f"  - id: {agent_id}\n    version: {version}\n    role: worker\n    port: {free_port()}\n"
            "    publishes: [results.work]\n    subscribes: [tasks.work]\n    registry: true\n")


def _write_spec(spec: Path, agents: list[str]) -> None:
    """A one-file spec: two topics, one role, ``agents`` (already rendered by :func:`_agent_doc`)."""
    head = spec.read_text().split("agents:\n")[0] if spec.exists() else (
        "apiVersion: swarm/v1\nkind: Swarm\nmetadata:\n  name: tiny\n"
        f"registry:\n  url: http://127.0.0.1:{free_port()}\n  ttl_seconds: 4\n  heartbeat_interval: 1\n"
        f"bus:\n  redis_url: redis://127.0.0.1:{free_port()}/0\n"
        "topics:\n  - name: tasks.work\n  - name: results.work\n"
        "roles:\n  worker:\n    publish: [\"results.*\"]\n    subscribe: [\"tasks.*\"]\n")
    tmp = spec.with_suffix(".tmp")
    tmp.write_text(head + "agents:\n" + "".join(agents))
    os.replace(tmp, spec)  # one change event, never a half-written spec


def _project(tmp_path: Path, agents: list[str]) -> Path:
    (tmp_path / "specs").mkdir()
    _write_spec(tmp_path / "specs" / "swarm.yaml", agents)
    return tmp_path


def _agent_pid(project: Path, agent: str) -> int | None:
    """The pid of the process running in compiled/tiny/agents/AGENT, if any."""
    folder = str(project / "compiled" / SWARM / "agents" / agent)
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "cwd") == folder and start_time(int(entry.name)):
                return int(entry.name)
        except OSError:
            continue
    return None


def _serves(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _env() -> dict[str, str]:
    return {**os.environ, "SWARM_REGISTRY_SECRET": "", "SWARM_ADMIN_TOKEN": ""}


def _registered(up: Up, project: Path) -> dict[str, str]:
    """agent id -> version, as the registry lists them."""
    try:
        reply = httpx.get(up.url("registry") + "/agents", headers=_read_headers_tiny(project), timeout=5)
    except httpx.HTTPError:
        return {}
    return {a["agent_id"]: a["version"] for a in reply.json()["agents"]}


def _read_headers_tiny(project: Path) -> dict[str, str]:
    from swarm.registry.auth import read_token

    return {"Authorization": f"Bearer {read_token((project / '.swarm' / 'secret').read_text().strip(), SWARM)}"}


def test_up_demo_follows_the_spec_and_restarts_crashed_agents(tmp_path: Path) -> None:
    alpha = _agent_doc("alpha")
    project = _project(tmp_path, [alpha])
    spec = project / "specs" / "swarm.yaml"
    up = Up(project, "specs", "--demo", env=_env())
    try:
        up.wait_until(lambda: "demo: started agent alpha on port" in up.text(), "alpha to start")
        up.wait_until(lambda: _registered(up, project) == {"alpha": "1.0.0"}, "alpha to register")
        first = _agent_pid(project, "alpha")
        assert first is not None

        # a crash: the kernel kills it; up says so and starts it again
        os.kill(first, signal.SIGKILL)
        up.wait_until(lambda: "agent alpha was killed by SIGKILL; restarting in " in up.text(), "the crash line")
        up.wait_until(lambda: "demo: restarted agent alpha on port" in up.text(), "alpha's restart")
        up.wait_until(lambda: _agent_pid(project, "alpha") not in (None, first), "a new alpha process")
        # a stop it did not ask for (SIGTERM once it serves: uvicorn shuts down, deregisters, and ends
        # by the signal it caught): restarted too
        port = int(re.findall(r"restarted agent alpha on port (\d+)", up.text())[-1])
        up.wait_until(lambda: _serves(port), "the restarted alpha to serve")
        second = _agent_pid(project, "alpha")
        assert second is not None
        os.kill(second, signal.SIGTERM)
        up.wait_until(lambda: "agent alpha was killed by SIGTERM; restarting in " in up.text(), "the exit line")
        up.wait_until(lambda: _agent_pid(project, "alpha") not in (None, second), "alpha again")
        assert re.search(r"agent alpha was killed by SIGTERM; restarting in \d+\.\ds", up.text())
        up.wait_until(lambda: _registered(up, project) == {"alpha": "1.0.0"}, "alpha to register again")

        # an agent added to the spec while up runs is started
        beta = _agent_doc("beta")
        _write_spec(spec, [alpha, beta])
        up.wait_until(lambda: "demo: started agent beta on port" in up.text(), "beta to start")
        up.wait_until(lambda: _registered(up, project) == {"alpha": "1.0.0", "beta": "1.0.0"}, "beta to register")

        # a new version of alpha: its compiled files change, it is restarted on them
        before = _agent_pid(project, "alpha")
        _write_spec(spec, [alpha.replace("version: 1.0.0", "version: 1.1.0"), beta])
        up.wait_until(lambda: "restarted agent alpha on port" in up.text()
                      and "(its compiled files changed)" in up.text(), "alpha's restart on new files")
        up.wait_until(lambda: _registered(up, project).get("alpha") == "1.1.0", "alpha 1.1.0 to register")
        assert _agent_pid(project, "alpha") != before

        # an invalid save: the error is printed with where it is; the agents keep running as they are
        running = _agent_pid(project, "alpha")
        _write_spec(spec, [alpha.replace("version: 1.0.0", "version: 1.1.0").replace("role: worker", "role: nobody"), beta])
        up.wait_until(lambda: "role 'nobody' is not defined" in up.text(), "the spec error")
        assert re.search(r"^    specs/swarm\.yaml:\d+:\d+: error: agents\[0\]\.role: role 'nobody' is not defined",
                         up.text(), flags=re.M), up.text()
        assert _agent_pid(project, "alpha") == running and _registered(up, project).get("alpha") == "1.1.0"

        # an agent removed from the spec is stopped (and deregisters)
        beta_pid = _agent_pid(project, "beta")
        assert beta_pid is not None
        _write_spec(spec, [alpha.replace("version: 1.0.0", "version: 1.1.0")])
        up.wait_until(lambda: "demo: stopped agent beta (no longer in the spec)" in up.text(), "beta to stop")
        up.wait_until(lambda: start_time(beta_pid) is None, "beta's process to end")
        up.wait_until(lambda: "beta" not in _registered(up, project), "beta to deregister")
        assert "started agent beta" in up.text().split("stopped agent beta")[0]

        # its log, through swarm logs, while up runs
        logs = subprocess.run(python_cmd("-m", "swarm", "logs", "alpha"), cwd=project, capture_output=True,
                              text=True, timeout=60)
        assert logs.returncode == 0 and "alpha" in logs.stdout, logs.stderr
        assert logs.stdout == (project / ".swarm" / "agent-alpha.log").read_text()[:len(logs.stdout)]
        unknown = subprocess.run(python_cmd("-m", "swarm", "logs", "gamma"), cwd=project, capture_output=True,
                                 text=True, timeout=60)
        assert unknown.returncode == 2 and "agents with a log: alpha, beta" in unknown.stderr

        assert up.interrupt() == 0, up.text()
    finally:
        up.kill()
    assert "Traceback" not in up.text() and "swarm up: error" not in up.text(), up.text()
    assert processes_in(project) == [], "swarm up left processes behind"


def test_a_sigkilled_up_demo_leaves_no_process_behind(tmp_path: Path) -> None:
    """SIGKILL: no handler of up runs; the kernel's parent-death signal ends every child."""
    project = _project(tmp_path, [_agent_doc("alpha"), _agent_doc("beta")])
    up = Up(project, "specs", "--demo", env=_env())
    try:
        up.wait_until(lambda: "started agent alpha " in up.text() and "started agent beta " in up.text(), "the agents")
        up.wait_until(lambda: set(_registered(up, project)) == {"alpha", "beta"}, "the agents to register")
        children = descendants(up.proc.pid)
        names = " | ".join(cmdline(pid) for pid in children)
        assert "redis-server" in names and "registry serve" in names and names.count("uvicorn server:app") == 2, names
    finally:
        up.kill()  # SIGKILL
    deadline = time.monotonic() + 30
    left = dict(children)
    while left and time.monotonic() < deadline:
        left = {pid: started for pid, started in left.items() if start_time(pid) == started}
        time.sleep(0.1)
    assert left == {}, f"outlived a SIGKILLed swarm up: {[cmdline(p) for p in left]}"
    assert processes_in(project) == []


@pytest.mark.skipif(not all(shutil.which(tool) for tool in ("node", "npm")), reason="needs node and npm")
def test_a_sigkilled_up_takes_the_npm_build_and_what_it_started_with_it(tmp_path: Path) -> None:
    """SIGKILL while a node agent is being installed or built: npm gets the death signal, and what npm
    started (``sh -c tsc``, ``node``), which the death signal does not reach, is ended by the reaper."""
    node = _agent_doc("planner").replace("    role: worker\n", "    role: worker\n    runtime: node\n")
    project = _project(tmp_path, [node])
    up = Up(project, "specs", "--demo", env=_env())
    try:
        up.wait_until(lambda: "installing and building agent planner" in up.text(), "the npm setup")
        up.wait_until(lambda: any(d >= 2 for d in depths(up.proc.pid).values()),
                      "npm to start a process of its own", timeout=120)
        tree = {pid: start_time(pid) for pid, d in depths(up.proc.pid).items()}
        deep = [cmdline(pid) for pid, d in depths(up.proc.pid).items() if d >= 2]
        assert any(word in line for line in deep for word in ("npm", "node", "tsc", "sh -c")), deep
    finally:
        up.kill()  # SIGKILL
    deadline = time.monotonic() + 30
    left = {pid: started for pid, started in tree.items() if started is not None}
    while left and time.monotonic() < deadline:
        left = {pid: started for pid, started in left.items() if start_time(pid) == started}
        time.sleep(0.1)
    assert left == {}, f"outlived a SIGKILLed swarm up: {[cmdline(p) for p in left]} (grandchildren were {deep})"


def test_up_says_when_its_registry_dies(tmp_path: Path) -> None:
    project = _project(tmp_path, [_agent_doc("alpha")])
    up = Up(project, "specs", env=_env())
    try:
        up.wait_until(lambda: "push the registry catalog" in up.text(), "the first pass")
        registry = [pid for pid in descendants(up.proc.pid) if "registry serve" in cmdline(pid)]
        assert len(registry) == 1, [cmdline(p) for p in descendants(up.proc.pid)]
        os.kill(registry[0], signal.SIGKILL)
        up.wait_until(lambda: "swarm up: error: registry was killed by SIGKILL; see .swarm/registry.log" in up.text(),
                      "the line saying so")
        assert up.text().count("registry was killed") == 1
        assert up.interrupt() == 0, up.text()
    finally:
        up.kill()
    assert processes_in(project) == []
