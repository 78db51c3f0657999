"""``swarm agents`` and ``swarm events`` against a real registry (and Redis)."""

from __future__ import annotations

import pytest
import json
import os
import signal
import subprocess
import time

import httpx

from tests.registry.conftest import REPO, TEST_SECRET, RegistryProcess
from tests.support.services import python_cmd


def _swarm(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SWARM_REGISTRY_SECRET": TEST_SECRET, "SWARM_ADMIN_TOKEN": ""}
    return subprocess.run(python_cmd("-m", "swarm", *args), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_agents_lists_the_live_registrations(registry: RegistryProcess) -> None:
    assert registry.register("architect", host="127.0.0.1", port=8001).status_code == 201
    assert registry.register("reviewer").status_code == 201
    done = _swarm("agents", "specs", "--registry-url", registry.url, "-o", "json")
    assert done.returncode == 0, done.stderr
    assert sorted(a["agent_id"] for a in json.loads(done.stdout)) == ["architect", "reviewer"]
    text = _swarm("agents", "specs", "--registry-url", registry.url).stdout.splitlines()
    assert text[0].split() == ["ID", "ROLE", "VERSION", "STATUS", "LEASE", "LAST", "HEARTBEAT"]
    assert [line.split()[0] for line in text[1:]] == ["architect", "reviewer"]
    assert all("healthy" in line and "left" in line and "ago" in line for line in text[1:])
    wide = _swarm("agents", "specs", "--registry-url", registry.url, "-o", "wide").stdout
    assert "127.0.0.1:8001" in wide and "CAPABILITIES" in wide
    only = _swarm("agents", "specs", "--registry-url", registry.url, "--status", "critical", "-o", "json")
    assert json.loads(only.stdout) == []
    refused = subprocess.run(python_cmd("-m", "swarm", "agents", "specs", "--registry-url", registry.url), cwd=REPO,
                             env={**os.environ, "SWARM_REGISTRY_SECRET": "", "SWARM_ADMIN_TOKEN": ""},
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "401" in refused.stderr  # no token: said, not a traceback
    assert "Traceback" not in refused.stderr


@pytest.mark.slow  # moved out of the quick suite (CI time budget)
def test_events_prints_the_backlog_and_follows(registry: RegistryProcess) -> None:
    registry.register("architect")
    httpx.delete(registry.url + "/agents/architect", headers=registry.agent_headers("architect"), timeout=10)
    done = _swarm("events", "specs", "--registry-url", registry.url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(" registered architect" in line for line in lines), lines
    assert any(" deregistered architect" in line for line in lines), lines
    first_id = lines[0].split()[0]
    after = _swarm("events", "specs", "--registry-url", registry.url, "--since", first_id, "-o", "json")
    assert [json.loads(line)["id"] for line in after.stdout.splitlines()] == [l.split()[0] for l in lines[1:]]
    env = {**os.environ, "SWARM_REGISTRY_SECRET": TEST_SECRET, "SWARM_ADMIN_TOKEN": ""}
    follow = subprocess.Popen(python_cmd("-m", "swarm", "events", "specs", "--registry-url", registry.url,
                                         "--follow"), cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # connected
        registry.register("reviewer")
        assert follow.stdout is not None
        line = follow.stdout.readline()
        assert " registered reviewer" in line, line
    finally:
        follow.send_signal(signal.SIGINT)
        follow.wait(10)
        if follow.stdout:
            follow.stdout.close()
