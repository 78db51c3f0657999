"""``swarm logs AGENT [--follow] [-n N]``: the log ``swarm up`` writes for each demo agent.

The reading is tested on real files; the command as a real ``python -m swarm logs``
process, its ``--follow`` against a real process appending to the log.
"""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swarm.errors import InvalidRequestError, NotDeclaredError
from swarm.reconcile.up_agents import agent_log
from swarm.reconcile.up_logs import find_agent_log, known_agents, last_lines
from tests.support.services import python_cmd


def _state(tmp_path: Path) -> Path:
    state = tmp_path / ".swarm"
    state.mkdir()
    agent_log(state, "reviewer").write_bytes(b"".join(b"line %d\n" % i for i in range(1, 201)))
    agent_log(state, "web-researcher").write_bytes(b"hello\n")
    (state / "registry.log").write_bytes(b"not an agent\n")
    return state


def test_known_agents_are_those_with_a_log(tmp_path: Path) -> None:
    assert known_agents(_state(tmp_path)) == ["reviewer", "web-researcher"]
    assert known_agents(tmp_path / "nowhere") == []


@pytest.mark.parametrize("bad", ["../x", "../../etc/passwd", "a/b", "/etc/passwd", "", "Reviewer", ".", "x" * 64])
def test_an_id_that_is_no_agent_id_is_refused(tmp_path: Path, bad: str) -> None:
    state = _state(tmp_path)
    (tmp_path / "agent-x.log").write_text("outside the state folder")
    with pytest.raises(InvalidRequestError, match="is not an agent id"):
        find_agent_log(state, bad)


def test_an_unknown_agent_names_the_known_ones(tmp_path: Path) -> None:
    state = _state(tmp_path)
    assert find_agent_log(state, "reviewer") == state / "agent-reviewer.log"
    with pytest.raises(NotDeclaredError, match="no log of agent 'nobody'.*agents with a log: reviewer, web-researcher"):
        find_agent_log(state, "nobody")
    with pytest.raises(NotDeclaredError, match="does not exist: has swarm up run here"):
        find_agent_log(tmp_path / "nowhere", "reviewer")


def test_last_lines_reads_from_the_end(tmp_path: Path) -> None:
    data = b"".join(b"line %d\n" % i for i in range(1, 2001))
    assert last_lines(io.BytesIO(data), 3, chunk=16) == b"line 1998\nline 1999\nline 2000\n"
    assert last_lines(io.BytesIO(data), None) == data
    assert last_lines(io.BytesIO(data), 0) == b""
    assert last_lines(io.BytesIO(data), 5000, chunk=100) == data
    assert last_lines(io.BytesIO(b"no newline at the end"), 2) == b"no newline at the end"
    assert last_lines(io.BytesIO(b"a\nb\npartial"), 2) == b"b\npartial"


def _logs(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(python_cmd("-m", "swarm", "logs", *args), cwd=cwd, capture_output=True, text=True, timeout=60)


def test_the_command_prints_the_log_and_says_what_is_wrong(tmp_path: Path) -> None:
    _state(tmp_path)
    done = _logs(tmp_path, "reviewer", "-n", "2")
    assert done.returncode == 0 and done.stdout == "line 199\nline 200\n", done.stderr
    whole = _logs(tmp_path, "web-researcher")
    assert whole.returncode == 0 and whole.stdout == "hello\n"
    unknown = _logs(tmp_path, "nobody")
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert "agents with a log: reviewer, web-researcher" in unknown.stderr and "Traceback" not in unknown.stderr
    escape = _logs(tmp_path, "../x")
    assert escape.returncode == 2 and "not an agent id" in escape.stderr and escape.stdout == ""
    negative = _logs(tmp_path, "reviewer", "-n", "-1")
    assert negative.returncode == 2 and "must be a whole number >= 0, got -1" in negative.stderr
    elsewhere = _logs(tmp_path / ".swarm", "reviewer", "--state-dir", ".")
    assert elsewhere.returncode == 0 and elsewhere.stdout.endswith("line 200\n")


def test_follow_prints_what_is_appended(tmp_path: Path) -> None:
    state = _state(tmp_path)
    follower = subprocess.Popen(python_cmd("-m", "swarm", "logs", "web-researcher", "--follow", "-n", "1"),
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    writer = None
    try:
        assert follower.stdout is not None and follower.stderr is not None
        assert follower.stdout.read1(4096) == b"hello\n"  # type: ignore[attr-defined]
        writer = subprocess.Popen([sys.executable, "-u", "-c", (
            "import sys, time\n"
            "with open(sys.argv[1], 'ab', buffering=0) as fh:\n"
            "    for i in range(5):\n"
            "        time.sleep(0.1); fh.write(b'new %d\\n' % i)\n"), str(agent_log(state, "web-researcher"))])
        assert writer.wait(timeout=30) == 0
        seen = b""
        deadline = time.monotonic() + 30
        while b"new 4\n" not in seen and time.monotonic() < deadline:
            seen += follower.stdout.read1(4096)  # type: ignore[attr-defined]
        assert seen == b"".join(b"new %d\n" % i for i in range(5))
        assert follower.poll() is None  # still following
        follower.send_signal(signal.SIGINT)  # Ctrl-C: a quiet exit
        code = follower.wait(timeout=30)
        err = follower.stderr.read().decode()
        assert code == 0 and "Traceback" not in err, err
    finally:
        follower.kill()
        follower.wait()
        for stream in (follower.stdout, follower.stderr):
            if stream is not None:
                stream.close()
        if writer is not None:
            writer.kill()
            writer.wait()
