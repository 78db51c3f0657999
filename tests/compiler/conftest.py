"""Helpers for compiler tests: small specs written to temporary directories.

Specs are plain dicts dumped with ``yaml.safe_dump`` (so hostile strings are
valid YAML) and loaded with the real loader, exactly as ``swarm compile`` does.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from swarm.spec.loader import LoadedSpec, load_spec_full
from tests.support.services import ProcessServer, python_cmd

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"


def swarm_doc(name: str = "demo", **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "swarm/v1",
        "kind": "Swarm",
        "metadata": {"name": name},
        "registry": {"url": "http://127.0.0.1:8700", "ttl_seconds": 30, "heartbeat_interval": 10},
        "topics": [{"name": "tasks.work"}, {"name": "results.work"}],
        "roles": {
            "worker": {"publish": ["results.*"], "subscribe": ["tasks.>"]},
            "idle": {},
        },
    }
    doc.update(extra)
    return doc


def agent_doc(agent_id: str, port: int, **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"apiVersion": "swarm/v1", "kind": "Agent", "id": agent_id, "role": "idle", "port": port}
    doc.update(fields)
    return doc


def write_spec(directory: Path, swarm: dict[str, Any], agents: list[dict[str, Any]]) -> Path:
    """Write the Swarm document and one file per agent; returns the spec directory."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "swarm.yaml").write_text(yaml.safe_dump(swarm, sort_keys=False, allow_unicode=True), "utf-8")
    for index, agent in enumerate(agents):
        path = directory / f"agent{index}.yaml"  # not named by id: hostile ids must reach the loader
        path.write_text(yaml.safe_dump(agent, sort_keys=False, allow_unicode=True), "utf-8")
    return directory


@pytest.fixture
def make_spec(tmp_path: Path) -> Callable[..., LoadedSpec]:
    """``make_spec(agents, **swarm_fields)`` → a loaded spec from a fresh temp directory."""
    count = 0

    def make(agents: list[dict[str, Any]], **swarm_fields: Any) -> LoadedSpec:
        nonlocal count
        count += 1
        directory = write_spec(tmp_path / f"spec{count}", swarm_doc(**swarm_fields), agents)
        return load_spec_full(directory)

    return make


@pytest.fixture
def example_copy(tmp_path: Path) -> Path:
    """A private copy of the example spec (tests may edit it)."""
    target = tmp_path / "specs"
    shutil.copytree(REPO / "specs", target)
    return target


@pytest.fixture(autouse=True)
def private_compile_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own no-op stamp directory (never the user's ~/.cache)."""
    directory = tmp_path / "compile-cache"
    monkeypatch.setenv("SWARM_CACHE_DIR", str(directory))
    return directory


def start_agent(
    out: Path, agent_id: str, port: int, env: dict[str, str], log: Path, path: tuple[Path, ...] = ()
) -> ProcessServer:
    """Run the compiled ``out/demo/agents/<agent_id>/server.py`` under uvicorn (real HTTP);
    ``path`` goes on PYTHONPATH before the repository (handler modules)."""
    server = ProcessServer(
        python_cmd("-m", "uvicorn", "server:app", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"),
        port=port,
        cwd=out / "demo" / "agents" / agent_id,
        env={
            "AGENT_PORT": str(port),
            "AGENT_HOST": "127.0.0.1",
            "PYTHONPATH": ":".join(str(p) for p in (*path, REPO)),
            **env,
        },
        log=log,
    )
    return server.start()
