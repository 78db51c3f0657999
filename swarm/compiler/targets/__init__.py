"""The compiler's targets: what ``compiled/<swarm>/`` holds besides the agents' files (pure).

``desired`` (:mod:`.desired`: registry.json, bus.json, acl.json, acl.md) is always
emitted; the Swarm document's ``compile.targets`` lists the others (default
``[compose]``): ``compose`` (:mod:`.compose`) and ``kubernetes`` (:mod:`.kubernetes`).
A target gets the desired target's files too (the kubernetes ConfigMap holds them).
``swarm compile``, ``swarm reconcile`` and ``swarm up`` render
through :func:`swarm.compiler.render.render`, so all of them emit the same set.
"""

from __future__ import annotations

from typing import Callable, Mapping

from swarm.compiler.targets import compose, kubernetes
from swarm.spec.models import Spec

#: Each optional target: ``(spec, swarm_version, desired files) -> {path under <swarm>/: bytes}``.
TargetRenderer = Callable[[Spec, str, Mapping[str, bytes]], dict[str, bytes]]
TARGETS: dict[str, TargetRenderer] = {
    "compose": lambda spec, swarm_version, _desired: compose.render_files(spec, swarm_version),
    "kubernetes": kubernetes.render_files,
}


def render_targets(spec: Spec, swarm_version: str, desired: Mapping[str, bytes]) -> dict[str, bytes]:
    """The files of every target the spec's ``compile.targets`` names; ``desired`` is the
    desired target's output (``registry.json``, ``bus.json``, ``acl.json``...)."""
    files: dict[str, bytes] = {}
    for name in spec.swarm.compile.targets:
        files.update(TARGETS[name](spec, swarm_version, desired))
    return files
