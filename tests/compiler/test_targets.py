"""The compiler's targets and runtimes: ``compile.targets`` chooses the output, image
tags name what ``swarm images build`` builds, and Dockerfiles take their base image
and swarm's wheel location as build arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import yaml

from swarm.compiler import compile_loaded
from swarm.compiler.targets import TARGETS
from swarm.errors import SpecError
from swarm.runtimes import runtimes
from swarm.runtimes.python.runtime import PYTHON_IMAGE
from swarm.spec import models
from swarm.spec.loader import LoadedSpec, load_spec_full

from .conftest import REPO, agent_doc, swarm_doc, write_spec

Make = Callable[..., LoadedSpec]


def compose_of(files: dict[str, bytes], swarm: str = "demo") -> dict[str, object]:
    doc = yaml.safe_load(files[f"{swarm}/docker-compose.yml"])
    assert isinstance(doc, dict)
    return doc


def test_every_target_the_models_accept_has_a_renderer() -> None:
    assert sorted(TARGETS) == sorted(models.TARGETS)
    assert set(runtimes()) == {"python", "node"}


def test_default_targets_emit_compose_and_the_desired_state(make_spec: Make) -> None:
    files = compile_loaded(make_spec([agent_doc("a1", 9001)]))
    for name in ("acl.json", "acl.md", "bus.json", "registry.json", "docker-compose.yml", "registry/Dockerfile"):
        assert f"demo/{name}" in files, name


def test_no_targets_emit_only_the_desired_state_and_the_agents(make_spec: Make) -> None:
    files = compile_loaded(make_spec([agent_doc("a1", 9001)], compile={"targets": []}))
    assert "demo/docker-compose.yml" not in files and "demo/registry/Dockerfile" not in files
    assert {"demo/acl.json", "demo/bus.json", "demo/registry.json", "demo/agents/a1/server.py"} <= set(files)


def test_an_unknown_or_repeated_target_is_an_error_at_its_position(tmp_path: Path) -> None:
    for targets, expected in ((["compose", "helm"], "helm"), (["compose", "compose"], "listed once")):
        directory = write_spec(tmp_path / expected.replace(" ", "-"), swarm_doc(compile={"targets": targets}), [])
        with pytest.raises(SpecError) as info:
            load_spec_full(directory)
        (issue,) = info.value.issues
        assert issue.position is not None and issue.position.file.endswith("swarm.yaml")
        assert issue.position.line > 1
        assert "compile" in str(issue) or "targets" in str(issue)
        assert expected in str(issue) or "compose" in str(issue)


def test_services_name_the_image_tags_with_the_repository(make_spec: Make) -> None:
    loaded = make_spec([agent_doc("a1", 9001, version="1.2.3+build.7")], images={"repository": "registry.example.com:5000/team"})
    services = compose_of(compile_loaded(loaded))["services"]
    assert isinstance(services, dict)
    # '+' is not allowed in an image tag: build metadata keeps its text with '_'
    assert services["a1"]["image"] == "registry.example.com:5000/team/demo-a1:1.2.3_build.7"
    setup = {services[name]["image"] for name in ("registry", "swarm-bus-apply", "swarm-catalog-push", "swarm-reconciler")}
    assert setup == {"registry.example.com:5000/team/demo-swarm:0.1.0"}


def test_without_a_repository_the_tags_are_local(make_spec: Make) -> None:
    services = compose_of(compile_loaded(make_spec([agent_doc("a1", 9001)])))["services"]
    assert isinstance(services, dict)
    assert services["a1"]["image"] == "demo-a1:0.1.0"


@pytest.mark.parametrize("repository", ["Upper/case", "team//double", "https://registry/x", "team/", "-lead"])
def test_a_bad_repository_is_refused(tmp_path: Path, repository: str) -> None:
    directory = write_spec(tmp_path / "s", swarm_doc(images={"repository": repository}), [])
    with pytest.raises(SpecError) as info:
        load_spec_full(directory)
    assert "repository" in str(info.value)


def test_dockerfiles_take_the_base_image_and_wheel_location_as_build_arguments(make_spec: Make) -> None:
    files = compile_loaded(make_spec([agent_doc("a1", 9001)]))
    for path in ("demo/agents/a1/Dockerfile", "demo/registry/Dockerfile"):
        text = files[path].decode()
        lines = text.splitlines()
        assert f"ARG PYTHON_IMAGE={PYTHON_IMAGE}" in lines, path
        assert lines.index(f"ARG PYTHON_IMAGE={PYTHON_IMAGE}") < lines.index("FROM ${PYTHON_IMAGE}"), path
        # declared after FROM, so pip in the RUN steps sees it
        assert lines.index("FROM ${PYTHON_IMAGE}") < lines.index('ARG PIP_FIND_LINKS=""'), path


def test_the_python_demo_runs_the_compiled_server_under_this_interpreter(tmp_path: Path) -> None:
    import sys

    launch = runtimes()["python"].demo(tmp_path, 9123)
    assert launch.command[:3] == [sys.executable, "-m", "uvicorn"] and "9123" in launch.command
    assert launch.setup == [] and launch.requires == []


def test_the_example_compiles_to_the_committed_bytes_through_the_targets() -> None:
    loaded = load_spec_full(REPO / "specs")
    files = compile_loaded(loaded)
    for path, data in files.items():
        assert (REPO / "compiled" / path).read_bytes() == data, path
