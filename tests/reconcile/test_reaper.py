"""The children of ``swarm up`` and what they start in turn die with it, even when it is SIGKILLed.

A real parent process starts a child through :func:`swarm.reconcile.children.spawn_logged`
(what ``up`` uses for redis-server, the registry and the agents); the child is a shell that
starts a grandchild (as ``npm run build`` starts ``sh -c tsc``). The parent is SIGKILLed: the
kernel's parent-death signal ends the child, the reaper ends the grandchild. The control
case, the death signal alone, shows the grandchild would otherwise survive.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.procs import alive
from tests.support.services import python_cmd

pytestmark = pytest.mark.slow

PARENT = """
import subprocess, sys, time
from pathlib import Path
from swarm.reconcile import children
shell = ["/bin/sh", "-c", "sleep 300 & echo $! > grandchild.pid; wait"]
if sys.argv[1] == "reaper":
    proc, _log = children.spawn_logged("shell", shell, Path("child.log"))
else:  # the death signal only, as before the reaper
    proc = subprocess.Popen(shell, start_new_session=True, preexec_fn=children.die_with_parent)
Path("child.pid").write_text(str(proc.pid))
time.sleep(300)
"""


def _run_and_kill(tmp_path: Path, mode: str) -> tuple[int, int]:
    """Start the parent, wait for its child and grandchild, SIGKILL it: (child pid, grandchild pid)."""
    parent = subprocess.Popen(python_cmd("-c", PARENT, mode), cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not ((tmp_path / "grandchild.pid").is_file() and (tmp_path / "grandchild.pid").read_text().strip()
                   and (tmp_path / "child.pid").is_file()):
            assert parent.poll() is None and time.monotonic() < deadline, "the parent did not start its child"
            time.sleep(0.05)
        child, grandchild = int((tmp_path / "child.pid").read_text()), int((tmp_path / "grandchild.pid").read_text())
        assert alive(child) and alive(grandchild)
    finally:
        parent.kill()
        parent.wait()
    return child, grandchild


def _gone_within(pids: tuple[int, ...], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    left = list(pids)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    return left


def test_the_reaper_ends_the_grandchildren_of_a_sigkilled_parent(tmp_path: Path) -> None:
    child, grandchild = _run_and_kill(tmp_path, "reaper")
    assert _gone_within((child, grandchild), 30) == []


def test_without_the_reaper_a_grandchild_survives(tmp_path: Path) -> None:
    """The control: the death signal alone ends the child only."""
    child, grandchild = _run_and_kill(tmp_path, "death-signal-only")
    try:
        assert _gone_within((child,), 30) == []
        time.sleep(1.0)
        assert alive(grandchild), "the grandchild died without the reaper: the test above proves nothing"
    finally:
        if alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)


def test_a_clean_close_ends_the_reaper_and_nothing_else(tmp_path: Path) -> None:
    code = (
        "import os, subprocess, sys\n"
        "from pathlib import Path\n"
        "from swarm.reconcile import children\n"
        "keep = subprocess.Popen(['sleep', '300'], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"  # not up's: never told to the reaper
        "proc, log = children.spawn_logged('t', ['true'], Path('t.log'))\n"
        "proc.wait(); children.end_group(proc.pid)\n"
        "reaper = children.REAPER.proc\n"
        "children.REAPER.close()\n"
        "print(keep.pid, reaper.returncode)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    keep, reaper_code = (int(word) for word in done.stdout.split())
    try:
        assert reaper_code == 0 and alive(keep)
    finally:
        os.kill(keep, signal.SIGKILL)
