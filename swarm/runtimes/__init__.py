"""Agent runtimes: what a compiled agent of each ``runtime:`` is made of (pure: no I/O).

A runtime says which files an agent gets under ``compiled/<swarm>/agents/<id>/``,
which files its agents share (emitted once per swarm, when some agent uses the
runtime), how its compose service is built, the healthcheck command its image
runs, and how ``swarm up --demo`` starts it on this machine. The compiler's
targets (:mod:`swarm.compiler.targets`) ask the runtime of each agent; nothing
else in the compiler knows a runtime by name.

* ``python`` (:mod:`swarm.runtimes.python`): a Starlette server run by uvicorn; the
  shared code is the ``swarm-gitops`` package itself (:mod:`swarm.agent_runtime`).
* ``node`` (:mod:`swarm.runtimes.node`): a NestJS application in TypeScript; the
  shared code is a local npm package emitted once per swarm.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from swarm.spec.models import Agent, Spec


#: The named build context a handler's code is copied from (``COPY --from=source``), and
#: where docker-compose.yml points it: the directory above ``<out>/`` (the repository
#: root when the output is the default ``compiled/``), or ``$SWARM_SOURCE_DIR``.
SOURCE_CONTEXT = "source"
SOURCE_DIR = "${SWARM_SOURCE_DIR:-../..}"


@dataclass(frozen=True)
class DemoCommand:
    """How ``swarm up --demo`` runs one compiled agent from its folder.

    ``setup`` runs once, in order, before the first start (install and build);
    ``command`` is the long-running process (cwd: the agent's folder; identity and
    addresses come from the environment). ``requires`` names the executables that
    must be on PATH, so a missing one is reported before anything starts.
    """

    command: list[str]
    setup: list[list[str]] = field(default_factory=list)
    requires: list[str] = field(default_factory=list)


class Runtime(Protocol):
    """The interface every runtime module implements (see the module docstring)."""

    name: str

    def agent_files(self, spec: Spec, agent: Agent, swarm_version: str) -> dict[str, bytes]:
        """The agent's files, keyed by their path under ``agents/<id>/``."""
        ...

    def shared_files(self, spec: Spec, swarm_version: str) -> dict[str, bytes]:
        """Files shared by this runtime's agents, keyed by their path under ``<swarm>/``."""
        ...

    def compose_build(self, spec: Spec, agent: Agent) -> dict[str, Any]:
        """The ``build:`` section of the agent's compose service (paths relative to ``<swarm>/``)."""
        ...

    def healthcheck(self, port: int) -> list[str]:
        """The compose healthcheck ``test`` (CMD form) probing ``/health/live`` on ``port``."""
        ...

    def demo(self, agent_dir: Path, port: int) -> DemoCommand:
        """How ``swarm up --demo`` starts the agent compiled in ``agent_dir`` on ``port``."""
        ...


@functools.cache
def runtimes() -> dict[str, Runtime]:
    """Every runtime by its ``runtime:`` name (imported on first use: a compiled agent
    imports :mod:`swarm.runtimes.python.agent_runtime` and needs none of this)."""
    from swarm.runtimes.node import RUNTIME as node
    from swarm.runtimes.python.runtime import RUNTIME as python

    return {"python": python, "node": node}


def runtime_of(agent: Agent) -> Runtime:
    """The runtime of ``agent`` (its ``runtime:`` field)."""
    return runtimes()[agent.runtime]
