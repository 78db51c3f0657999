"""The compiler: a valid spec in, the committed files of ``compiled/<swarm>/`` out.

Who calls it: ``swarm compile`` (:mod:`swarm.cli.compile_cmds`), library users
(``swarm.compile_spec``) and the reconciler (:func:`compile_loaded`, which needs
the bytes without writing them). Rendering (:mod:`.render`) is pure; writing
(:mod:`.output`) is the only adapter, so the same bytes can be compared,
written or diffed.

>>> report = compile_spec("specs", "compiled")          # doctest: +SKIP
>>> report.written, report.removed                      # doctest: +SKIP
([], [])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from swarm.compiler.output import WriteReport, diff_output, write_output
from swarm.compiler.render import Progress, render

if TYPE_CHECKING:  # pragma: no cover
    from swarm.spec.loader import LoadedSpec

__all__ = ["WriteReport", "compile_loaded", "compile_spec", "diff_output", "render", "write_output"]

SpecPaths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def compile_loaded(loaded: "LoadedSpec", *, progress: Progress | None = None) -> dict[str, bytes]:
    """Render a loaded spec with this swarm's version: ``{"<swarm>/<path>": bytes}``."""
    from swarm import __version__

    return render(loaded.spec, loaded.digest, swarm_version=__version__, progress=progress)


def compile_spec(
    spec_path: SpecPaths = "specs",
    out_dir: str | os.PathLike[str] = "compiled",
    *,
    progress: Progress | None = None,
) -> WriteReport:
    """Load, check, render and write a spec; raises :class:`~swarm.errors.SpecError`
    (every issue) for an invalid spec and :class:`~swarm.errors.CompileError` when
    the output cannot be written."""
    from swarm.spec.loader import load_spec_full

    loaded = load_spec_full(spec_path)
    files = compile_loaded(loaded, progress=progress)
    return write_output(files, Path(out_dir), loaded.spec.name)
