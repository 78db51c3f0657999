"""What the dashboard tests and ``docs/screenshots.py`` put into a real registry + Redis.

All writes go through the real interfaces: the catalog through PUT /catalog, the bus through
``swarm bus apply`` (CLI subprocess), messages through ``swarm bus publish`` (an agent's
outbox, routed by the registry's router), registrations through POST /agents/register. Only
what a *reconciler* or *prober* would write is written to Redis directly, in their formats:
the breaker hash and its watch event (the fields ``swarm/bus/lua/breaker.lua`` writes), the
protection flag, the reconcile status (:class:`~swarm.reconcile.status.ReconcileStatus`), a
history entry (:func:`~swarm.reconcile.history.history_fields`) and the reconcile lease.

Chromium: :func:`launch_chromium` runs Debian's ``/usr/bin/chromium`` through the Python
``playwright`` package (no ``playwright install``: no browser download), headless, with a
fresh profile and every background network feature off.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from swarm.keys import SwarmKeys
from tests.support.services import python_cmd

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def swarm_cli(*args: str, secret: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SWARM_REGISTRY_SECRET": secret, "SWARM_BUS_SECRET": ""}
    return subprocess.run(python_cmd("-m", "swarm", *args), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


def apply_bus(redis_url: str, secret: str) -> None:
    done = swarm_cli("bus", "apply", str(REPO / "compiled" / "research"), "--redis-url", redis_url, secret=secret)
    assert done.returncode == 0, done.stdout + done.stderr


def publish(redis_url: str, secret: str, topic: str, payload: Any, sender: str) -> None:
    done = swarm_cli("bus", "publish", topic, json.dumps(payload), "--as", sender, "--spec", "specs",
                     "--redis-url", redis_url, "--timeout", "10", secret=secret)
    assert done.returncode == 0, done.stdout + done.stderr


def open_breaker(client: Any, swarm: str, agent_id: str, failures: int = 4, cooldown_ms: int = 30_000) -> None:
    """The breaker of ``agent_id`` opened, as breaker.lua writes it: the hash and the watch event."""
    keys = SwarmKeys(swarm)
    now = int(time.time() * 1000)
    client.hset(keys.breaker(agent_id), mapping={
        "state": "open", "failures": str(failures), "epoch": "1", "opened_at_ms": str(now),
        "cooldown_ms": str(cooldown_ms), "probe": "0"})
    data = json.dumps({"agent_id": agent_id, "state": "open", "failures": failures, "epoch": 1,
                       "cooldown_ms": cooldown_ms, "at_ms": now})
    client.xadd(keys.events, {"type": "breaker-opened", "agent": agent_id, "agent_id": agent_id, "data": data},
                maxlen=10_000, approximate=True)


def write_reconcile_state(client: Any, swarm: str, *, error: bool = True) -> None:
    """A reconcile status (with a spec error at file:line:col), two history entries and a lease holder."""
    from swarm.reconcile.history import history_fields
    from swarm.reconcile.status import Applied, Attempt, LastError, ReconcileStatus, Revision, now_iso

    keys = SwarmKeys(swarm)
    applied = Applied(revision=Revision(source="git", commit="3f2a9c1d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b", ref="main"),
                      digest="sha256:5d1e8a9f0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e",
                      at=now_iso(), trigger="git",
                      actions=[{"kind": "push-catalog", "target": swarm, "description": "push the catalog (6 agents)"},
                               {"kind": "create-group", "target": "tasks.research",
                                "description": "create inbox group of web-researcher"}])
    attempted = Attempt(revision=Revision(source="git", commit="9b8a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b", ref="main"),
                        digest=None, at=now_iso(), trigger="git")
    status = ReconcileStatus(
        swarm=swarm, state="invalid-spec" if error else "synced",
        message="the newest spec is invalid; still enforcing 3f2a9c1d5e" if error else "in sync",
        passes=42, last_applied=applied, last_attempted=attempted if error else applied,
        drift=["re-created the Redis user of summarizer (deleted by hand)"], drift_at=now_iso(),
        held_back=["agent legacy-bot will be evicted: no longer declared"],
        pending=["create inbox group of summarizer"] if error else [],
        last_error=LastError(kind="spec", message="1 problem in the spec", at=now_iso(), issues=[
            {"file": "specs/agents/workers.yaml", "line": 12, "column": 5, "path": "agents[2].role",
             "message": "role 'plnner' is not defined (did you mean 'planner'?)"}]) if error else None,
    )
    client.set(keys.status, status.to_json())
    client.xadd(keys.history, history_fields(applied, ["M specs/agents/workers.yaml"]))
    client.xadd(keys.history, history_fields(Applied(**attempted.model_dump()), [], result="invalid-spec",
                                             error="specs/agents/workers.yaml:12:5: role 'plnner' is not defined")
                if error else history_fields(applied, [], result="drift-healed"))
    client.set(keys.lease, json.dumps({"owner": "laptop-4f2a", "token": 7, "since_ms": int(time.time() * 1000) - 60_000,
                                       "pid": 4242, "host": "laptop"}), px=10_000)


def register(url: str, token: str, agent_id: str, **body: Any) -> httpx.Response:
    response = httpx.post(url + "/agents/register", json={"agent_id": agent_id, **body},
                          headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code in (200, 201), response.text
    return response


def launch_chromium(playwright: Any) -> Any:
    """A persistent context (fresh profile directory) of Debian's chromium, headless."""
    profile = tempfile.mkdtemp(prefix="swarm-ui-chromium-")
    return playwright.chromium.launch_persistent_context(
        profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1360, "height": 860})
