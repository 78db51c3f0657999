"""The compiler's targets: what ``compiled/<swarm>/`` holds besides the agents' files (pure).

``desired`` (:mod:`.desired`: registry.json, bus.json, acl.json, acl.md) is always
emitted; the Swarm document's ``compile.targets`` lists the others (default
``[compose]``): ``compose`` (:mod:`.compose`) and ``kubernetes`` (:mod:`.kubernetes`).
A target gets :class:`TargetInputs` too: the desired target's files (the kubernetes
ConfigMaps hold them) and the environment compiled (``--env``; the in-cluster
reconciler enforces the same one).
``swarm compile``, ``swarm reconcile`` and ``swarm up`` render
through :func:`swarm.compiler.render.render`, so all of them emit the same set.
"""

from __future__ import annotations

from typing import Callable

from swarm.compiler.targets import compose, kubernetes
from swarm.compiler.targets.inputs import TargetInputs
from swarm.spec.models import Spec

__all__ = ["TARGETS", "TargetInputs", "TargetRenderer", "render_targets"]

#: Each optional target: ``(spec, swarm_version, inputs) -> {path under <swarm>/: bytes}``.
TargetRenderer = Callable[[Spec, str, TargetInputs], dict[str, bytes]]
TARGETS: dict[str, TargetRenderer] = {
    "compose": lambda spec, swarm_version, _inputs: compose.render_files(spec, swarm_version),
    "kubernetes": kubernetes.render_files,
}


def render_targets(spec: Spec, swarm_version: str, inputs: TargetInputs) -> dict[str, bytes]:
    """The files of every target the spec's ``compile.targets`` names."""
    files: dict[str, bytes] = {}
    for name in spec.swarm.compile.targets:
        files.update(TARGETS[name](spec, swarm_version, inputs))
    return files
