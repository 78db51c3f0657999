"""Rendering of a ``runtime: python`` agent (pure: no I/O).

An agent gets ``agents/<id>/server.py`` (its configuration, registry wiring and
health routes; the shared loop is :mod:`swarm.agent_runtime`), ``requirements.txt``
(``swarm-gitops`` pinned to the compiling version, plus what the agent uses) and a
``Dockerfile``. The shared code is the ``swarm-gitops`` package itself, so the
runtime has no shared files of its own.

Images: the base image is the build argument ``PYTHON_IMAGE`` (default
:data:`PYTHON_IMAGE`), and ``PIP_FIND_LINKS`` tells pip where else to look for
``swarm-gitops`` (``swarm images build`` passes a wheel of the running swarm;
a private index is ``--build-arg PIP_INDEX_URL=...``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from swarm.runtimes import SOURCE_CONTEXT, SOURCE_DIR, DemoCommand
from swarm.spec.models import Agent, Spec

#: The distribution name on PyPI (``swarm`` there is an unrelated game).
DISTRIBUTION = "swarm-gitops"
#: Default base image of the generated Dockerfiles (build argument ``PYTHON_IMAGE``):
#: pinned to a patch release for reproducible builds.
PYTHON_IMAGE = "python:3.11.11-slim-bookworm"

#: Version ranges of the generated agents' requirements (sorted by name when written).
REQUIREMENT_RANGES: dict[str, str] = {
    "httpx": "httpx>=0.26,<1",
    "redis": "redis>=5.0,<9",
    "starlette": "starlette>=0.37,<2",
    "uvicorn": "uvicorn>=0.29,<1",
}


def uses_bus(agent: Agent) -> bool:
    return bool(agent.publishes or agent.subscribes)


def handler_copy(handler: str) -> tuple[str, str]:
    """``(source, destination)`` of the Dockerfile's ``COPY --from=source`` for a handler.

    The image gets the handler's top-level package (``pkg.mod:fn`` copies ``pkg/`` to
    ``/app/pkg/``) or, for an undotted module (``mod:fn``), the module file ``mod.py``;
    ``/app`` is uvicorn's app dir, so the import in server.py finds it. An undotted
    name is always taken to be a file: a handler in a package's ``__init__.py`` is
    named through a submodule instead, and a wrong guess fails the image build
    loudly (``mod.py: not found``) rather than the agent at startup.
    """
    module = handler.partition(":")[0]
    top, dotted, _ = module.partition(".")
    return (f"{top}/", f"./{top}/") if dotted else (f"{top}.py", "./")


def render_requirements(agent: Agent, swarm_version: str) -> bytes:
    names = ["starlette", "uvicorn"]
    if agent.registry:
        names.append("httpx")
    if uses_bus(agent):
        names.append("redis")
    # the agent's own (handler) requirements: validated by the models (one requirement,
    # no options or URLs) and checked not to repeat a project pinned here
    lines = sorted([f"{DISTRIBUTION}=={swarm_version}", *(REQUIREMENT_RANGES[n] for n in names), *agent.requirements])
    return ("\n".join(lines) + "\n").encode("utf-8")


def live_probe_command(port: int) -> list[str]:
    """A CMD-form check of ``/health/live`` with the image's Python (no curl in slim images)."""
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/health/live', timeout=2)"
    return ["CMD", "python", "-c", probe]


class PythonRuntime:
    name = "python"

    def agent_files(self, spec: Spec, agent: Agent, swarm_version: str) -> dict[str, bytes]:
        from swarm.compiler.templating import environment  # not at import: swarm.compiler imports this module

        env = environment("swarm.runtimes.python")
        bus = uses_bus(agent)
        env_names = ["AGENT_ID", "AGENT_HOST", "AGENT_PORT"]
        if bus:
            env_names.append("REDIS_URL")
        if agent.registry:
            env_names += ["REGISTRY_URL", "SWARM_AGENT_TOKEN"]
        context: dict[str, Any] = {
            "spec": spec,
            "agent": agent,
            "swarm_version": swarm_version,
            "uses_bus": bus,
            "capabilities": sorted(set(agent.capabilities)),
            "publishes": sorted(set(agent.publishes)),
            "subscribes": sorted(set(agent.subscribes)),
            "env_names": env_names,
            "python_image": PYTHON_IMAGE,
            "handler_copy": handler_copy(agent.handler) if agent.handler else None,
            "source_context": SOURCE_CONTEXT,
        }
        return {
            "Dockerfile": env.get_template("Dockerfile.j2").render(context).encode("utf-8"),
            "server.py": env.get_template("server.py.j2").render(context).encode("utf-8"),
            "requirements.txt": render_requirements(agent, swarm_version),
        }

    def shared_files(self, spec: Spec, swarm_version: str) -> dict[str, bytes]:
        return {}  # the shared code is the swarm-gitops package the image installs

    def compose_build(self, spec: Spec, agent: Agent) -> dict[str, Any]:
        build: dict[str, Any] = {"context": f"./agents/{agent.id}"}
        if agent.handler:
            build["additional_contexts"] = {SOURCE_CONTEXT: SOURCE_DIR}
        return build

    def healthcheck(self, port: int) -> list[str]:
        return live_probe_command(port)

    def demo(self, agent_dir: Path, port: int) -> DemoCommand:
        # this interpreter: it has swarm (and uvicorn) installed, whatever PATH says
        return DemoCommand(command=[sys.executable, "-m", "uvicorn", "server:app", "--host", "127.0.0.1",
                                    "--port", str(port), "--log-level", "warning"])


RUNTIME = PythonRuntime()
