"""The compiler's targets: what ``compiled/<swarm>/`` holds besides the agents' files (pure).

``desired`` (:mod:`.desired`: registry.json, bus.json, acl.json, acl.md) is always
emitted; the Swarm document's ``compile.targets`` lists the others (default
``[compose]``). ``swarm compile``, ``swarm reconcile`` and ``swarm up`` render
through :func:`swarm.compiler.render.render`, so all of them emit the same set.
"""

from __future__ import annotations

from typing import Callable

from swarm.compiler.targets import compose
from swarm.spec.models import Spec

#: Each optional target: ``(spec, swarm_version) -> {path under <swarm>/: bytes}``.
TARGETS: dict[str, Callable[[Spec, str], dict[str, bytes]]] = {
    "compose": compose.render_files,
}


def render_targets(spec: Spec, swarm_version: str) -> dict[str, bytes]:
    """The files of every target the spec's ``compile.targets`` names."""
    files: dict[str, bytes] = {}
    for name in spec.swarm.compile.targets:
        files.update(TARGETS[name](spec, swarm_version))
    return files
