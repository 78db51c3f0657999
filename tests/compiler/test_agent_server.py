"""Generated server.py files run: started with uvicorn in a subprocess (real HTTP).

* a ``registry: false`` agent without topics needs neither registry nor Redis and
  answers /health, /health/live and /health/ready with 200;
* a ``registry: true`` agent whose registry is down still starts (live 200) and
  reports not ready (503, waiting for the registry) instead of crashing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import httpx

from swarm.compiler import compile_loaded, write_output
from swarm.spec.loader import LoadedSpec
from tests.support.services import free_port

from .conftest import agent_doc, start_agent


def test_registry_false_agent_answers_its_three_health_endpoints(
    tmp_path: Path, make_spec: Callable[..., LoadedSpec]
) -> None:
    port = free_port()
    loaded = make_spec([agent_doc("standalone", port, name='Stand "alone"\nagent ü', registry=False)])
    write_output(compile_loaded(loaded), tmp_path / "out", "demo")
    server = start_agent(tmp_path / "out", "standalone", port, {}, tmp_path / "agent.log")
    try:
        for path in ("/health", "/health/live", "/health/ready"):
            response = httpx.get(server.url + path, timeout=5)
            assert response.status_code == 200, (path, response.text)
        health = httpx.get(server.url + "/health", timeout=5).json()
        assert health == {"status": "ok", "swarm": "demo", "agent_id": "standalone", "version": "0.1.0", "ready": True}
        assert httpx.get(server.url + "/nope", timeout=5).status_code == 404
    finally:
        code = server.stop()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal (exit -15)
    assert code in (0, -15)
    assert "Application shutdown complete" in (tmp_path / "agent.log").read_text()


def test_registry_true_agent_starts_while_the_registry_is_down(
    tmp_path: Path, make_spec: Callable[..., LoadedSpec]
) -> None:
    port, dead_port = free_port(), free_port()
    loaded = make_spec([agent_doc("leased", port)])
    write_output(compile_loaded(loaded), tmp_path / "out", "demo")
    log = tmp_path / "agent.log"
    server = start_agent(
        tmp_path / "out", "leased", port, {"REGISTRY_URL": f"http://127.0.0.1:{dead_port}"}, log
    )
    try:
        assert httpx.get(server.url + "/health/live", timeout=5).status_code == 200
        ready = httpx.get(server.url + "/health/ready", timeout=5)
        assert ready.status_code == 503
        assert ready.json()["waiting_for"] == ["registry"]
        assert httpx.get(server.url + "/health", timeout=5).json()["ready"] is False
    finally:
        code = server.stop()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal (exit -15)
    assert code in (0, -15)
    assert "Application shutdown complete" in (tmp_path / "agent.log").read_text()
    assert "Traceback" not in log.read_text()
