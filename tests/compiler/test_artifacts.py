"""Generated artifacts pass real validators: hadolint on every Dockerfile, the
Compose specification's JSON schema (check-jsonschema's vendored ``compose-spec``)
on docker-compose.yml, and the compose file's wiring (health checks, depends_on)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import yaml

from swarm.compiler import compile_loaded, write_output
from swarm.spec.loader import LoadedSpec, load_spec_full

from .conftest import REPO, agent_doc
from .test_render import HOSTILE_NAMES

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (pip install -e '.[test]')")
    return found


@pytest.fixture
def varied_output(tmp_path: Path, make_spec: Callable[..., LoadedSpec]) -> Path:
    """The example plus a spec with every kind of agent and hostile names, written out."""
    out = tmp_path / "out"
    write_output(compile_loaded(load_spec_full(REPO / "specs")), out, "research")
    agents = [
        agent_doc(f"hostile{i}", 9100 + i, name=name, registry=i % 2 == 0, role="worker", subscribes=["tasks.work"])
        for i, name in enumerate(HOSTILE_NAMES)
    ]
    agents += [
        agent_doc("plain", 9001, registry=False),
        agent_doc("noder", 9002, runtime="node"),
        agent_doc("handled", 9003, role="worker", publishes=["results.work"], handler="pkg.mod:fn"),
    ]
    write_output(compile_loaded(make_spec(agents, metadata={"name": "demo", "description": HOSTILE_NAMES[0]})), out, "demo")
    return out


def test_hadolint_passes_on_every_generated_dockerfile(varied_output: Path) -> None:
    dockerfiles = sorted(str(p) for p in varied_output.rglob("Dockerfile"))
    assert len(dockerfiles) == 6 + 1 + 10 + 1
    result = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "info", "--no-color", *dockerfiles],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_compose_files_are_valid_per_the_compose_specification(varied_output: Path) -> None:
    files = sorted(str(p) for p in varied_output.rglob("docker-compose.yml"))
    assert len(files) == 2
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", *files],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_validator_rejects_a_broken_file(tmp_path: Path) -> None:
    """The validator really validates: an unknown service key fails."""
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(yaml.safe_dump({"services": {"a": {"image": "x", "depends_on": {"b": {"condition": "nope"}}}}}))
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(bad)], capture_output=True
    )
    assert result.returncode == 1


def test_compose_wires_redis_registry_and_agents() -> None:
    compose = yaml.safe_load((REPO / "compiled" / "research" / "docker-compose.yml").read_text())
    services = compose["services"]
    redis = services["redis"]
    assert "--appendonly" in redis["command"] and redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert any(v.endswith(":/data") for v in redis["volumes"])
    registry = services["registry"]
    assert registry["command"][:3] == ["swarm", "registry", "serve"]
    assert registry["command"][registry["command"].index("--swarm") + 1] == "research"
    assert registry["command"][registry["command"].index("--redis-url") + 1].startswith("redis://:${SWARM_REDIS_PASSWORD:?")
    assert registry["environment"]["SWARM_REGISTRY_SECRET"].startswith("${SWARM_REGISTRY_SECRET:?")
    assert registry["depends_on"] == {"redis": {"condition": "service_healthy"}}
    catalog = load_spec_full(REPO / "specs").spec
    for agent in catalog.agents:
        svc = services[agent.id]
        env = svc["environment"]
        assert env["AGENT_ID"] == agent.id and env["AGENT_HOST"] == agent.id
        assert env["AGENT_PORT"] == str(agent.port)
        assert env["REDIS_URL"].startswith(f"redis://swarm.research.{agent.id}:${{SWARM_BUS_PASSWORD_")
        assert env["REDIS_URL"].endswith("}@redis:6379/0")
        if agent.runtime == "node":  # the context holds the shared node package too
            assert svc["build"] == {"context": ".", "dockerfile": f"agents/{agent.id}/Dockerfile"}
        else:
            assert svc["build"]["context"] == f"./agents/{agent.id}"
        assert "/health/live" in " ".join(svc["healthcheck"]["test"])
        assert svc["depends_on"]["redis"] == {"condition": "service_healthy"}
        if agent.registry:
            assert env["REGISTRY_URL"] == "http://registry:8700"
            assert svc["depends_on"]["registry"] == {"condition": "service_healthy"}
        else:
            assert "REGISTRY_URL" not in env and "registry" not in svc["depends_on"]
