"""Render a valid spec into the files of ``compiled/<swarm>/`` (pure: no I/O).

Called by :func:`swarm.compiler.compile_spec` (then :mod:`swarm.compiler.output`
writes the result) and by the reconciler, which compares the rendered bytes with
what is committed. Rendering is a pure function of the spec, its digest and the
compiling version, so two runs on any machine give byte-identical output:
agents, topics and keys are sorted, there are no timestamps, and every file's
sha256 lands in ``manifest.json``.

What is rendered comes from two places: each agent's runtime
(:mod:`swarm.runtimes`: the agent's folder, plus files its runtime's agents
share, once per swarm) and the targets (:mod:`swarm.compiler.targets`: the
desired state always, then those the spec's ``compile.targets`` names).
Escaping and the template environments are :mod:`swarm.compiler.templating`.
"""

from __future__ import annotations

import hashlib
import re
from typing import Callable

from swarm.compiler.targets import TargetInputs, render_targets
from swarm.compiler.targets.compose import INFRA_SERVICES
from swarm.compiler.targets.desired import render_desired
from swarm.compiler.templating import dump_json
from swarm.desired import desired_from_spec
from swarm.errors import CompileError
from swarm.runtimes import runtime_of, runtimes
from swarm.spec.models import NAME_PATTERN, Spec

MANIFEST = "manifest.json"
_NAME = re.compile(NAME_PATTERN)

Progress = Callable[[int, int], None]


def _check_ids(spec: Spec) -> None:
    """Defence in depth: ids become paths, so refuse any the models would refuse."""
    for name in [spec.name, *(a.id for a in spec.agents)]:
        if not _NAME.fullmatch(name) or len(name) > 63:
            raise CompileError(f"refusing to compile: {name!r} is not a valid swarm name or agent id")
    for agent in spec.agents:
        if agent.id in INFRA_SERVICES:
            raise CompileError(
                f"agent id {agent.id!r} collides with the docker-compose service of the same name; rename the agent"
            )


def render_agents(spec: Spec, swarm_version: str, progress: Progress | None = None) -> dict[str, bytes]:
    """Every agent's folder (``agents/<id>/...``) and the shared files of each runtime in use."""
    agents = sorted(spec.agents, key=lambda a: a.id)
    files: dict[str, bytes] = {}
    for done, agent in enumerate(agents, start=1):
        base = f"agents/{agent.id}/"
        for path, data in runtime_of(agent).agent_files(spec, agent, swarm_version).items():
            files[base + path] = data
        if progress is not None:
            progress(done, len(agents))
    used = {agent.runtime for agent in agents}
    for name, runtime in sorted(runtimes().items()):
        if name in used:
            files.update(runtime.shared_files(spec, swarm_version))
    return files


def manifest(files: dict[str, bytes], spec: Spec, spec_digest: str, swarm_version: str) -> bytes:
    """``manifest.json``: spec digest, version and the sha256 of every other file."""
    return dump_json(
        {
            "swarm": spec.name,
            "spec_digest": spec_digest,
            "swarm_version": swarm_version,
            "files": {path: "sha256:" + hashlib.sha256(data).hexdigest() for path, data in sorted(files.items())},
        }
    )


def render(
    spec: Spec,
    spec_digest: str,
    *,
    swarm_version: str,
    progress: Progress | None = None,
    output_name: str | None = None,
    environment: str | None = None,
) -> dict[str, bytes]:
    """Every output file of ``spec``, keyed by its path relative to the output directory
    (``<swarm>/agents/<id>/server.py``, ``<swarm>/acl.json``, ...); ``output_name``
    replaces ``<swarm>`` there (an environment's ``<swarm>.<env>``); ``environment`` is the
    overlay applied, for the targets that run the spec elsewhere (the in-cluster reconciler).

    ``progress(done, total)`` is called after each agent (the CLI draws a bar on a
    terminal). Raises :class:`~swarm.errors.CompileError` for an id that cannot
    become a path or a compose service.
    """
    _check_ids(spec)
    files = render_agents(spec, swarm_version, progress)
    desired = render_desired(spec, desired_from_spec(spec, spec_digest), swarm_version)
    files.update(desired)
    files.update(render_targets(spec, swarm_version, TargetInputs(desired=desired, environment=environment)))
    files[MANIFEST] = manifest(files, spec, spec_digest, swarm_version)
    top = output_name or spec.name
    return {f"{top}/{path}": data for path, data in sorted(files.items())}
