"""The compiler: a valid spec in, the committed files of ``compiled/<swarm>/`` out.

Who calls it: ``swarm compile`` (:mod:`swarm.cli.compile_cmds`), library users
(``swarm.compile_spec``) and the reconciler (:func:`compile_loaded`, which needs
the bytes without writing them). Rendering (:mod:`.render`) is pure; writing
(:mod:`.output`) and the no-op stamp (:mod:`.cache`) are the adapters, so the
same bytes can be compared, written or diffed.

>>> report = compile_spec("specs", "compiled")          # doctest: +SKIP
>>> report.written, report.removed                      # doctest: +SKIP
([], [])
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from swarm.compiler.output import WriteReport, diff_output, write_output
from swarm.compiler.render import Progress, render
from swarm.errors import CompileError

if TYPE_CHECKING:  # pragma: no cover
    from swarm.spec.loader import LoadedSpec

__all__ = [
    "CompileResult",
    "WriteReport",
    "compile_loaded",
    "compile_spec",
    "compile_to",
    "diff_output",
    "refuse_output_overlapping_spec",
    "render",
    "write_output",
]

SpecPaths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


@dataclass(frozen=True)
class CompileResult:
    """What one compile did: the swarm, its spec digest, the write report, and whether
    the no-op stamp proved the output current without rendering."""

    swarm: str
    spec_digest: str
    report: WriteReport
    from_stamp: bool = False


def compile_loaded(loaded: "LoadedSpec", *, progress: Progress | None = None) -> dict[str, bytes]:
    """Render a loaded spec with this swarm's version: ``{"<swarm>/<path>": bytes}``."""
    from swarm import __version__

    return render(loaded.spec, loaded.digest, swarm_version=__version__, progress=progress,
                  output_name=loaded.output_name, environment=loaded.environment)


def refuse_output_overlapping_spec(spec_path: SpecPaths, out_dir: str | os.PathLike[str], swarm: str) -> None:
    """Raise :class:`~swarm.errors.CompileError` when ``out_dir/swarm`` lies inside a spec
    path or holds one: compiled files (docker-compose.yml...) would be read back as spec
    by the next load, and a recompile would prune the spec's own files."""
    root = (Path(out_dir) / swarm).absolute().resolve()
    paths = [spec_path] if isinstance(spec_path, (str, os.PathLike)) else list(spec_path)
    for raw in paths:
        spec = Path(raw).absolute().resolve()
        if spec == root or spec in root.parents or root in spec.parents:
            raise CompileError(
                f"refusing to write {Path(out_dir) / swarm}: it overlaps the spec path {os.fspath(raw)} "
                "(the next load would read the compiled files as spec); choose an --out outside the spec"
            )


def compile_to(
    spec_path: SpecPaths,
    out_dir: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
    use_stamp: bool = True,
    environment: str | None = None,
) -> CompileResult:
    """Read, check, render and write (with the overlay of ``environment`` applied, into
    ``<out_dir>/<swarm>.<environment>/``); skip parsing and rendering when the stamp of
    the last compile into ``out_dir`` proves the output current (see :mod:`.cache`)."""
    from swarm import __version__
    from swarm.compiler import cache
    from swarm.spec.loader import compute_digest, parse_spec_texts, read_spec_files

    out = Path(out_dir)
    raw = read_spec_files(spec_path)
    digest = compute_digest(raw)
    # the key covers every byte read and the environment chosen
    key = cache.stamp_key(digest if environment is None else f"{digest}\0env={environment}", __version__)
    if use_stamp:
        stamp = cache.load_stamp(out, key)
        if stamp is not None and cache.outputs_match(stamp, out):
            refuse_output_overlapping_spec(spec_path, out, stamp.swarm)
            return CompileResult(stamp.swarm, stamp.spec_digest, WriteReport(unchanged=sorted(stamp.files)),
                                 from_stamp=True)
    loaded = parse_spec_texts(raw, environment)
    files = compile_loaded(loaded, progress=progress)
    name = loaded.output_name
    refuse_output_overlapping_spec(spec_path, out, name)
    report = write_output(files, out, name)
    if use_stamp:
        cache.save_stamp(out, key, name, loaded.digest, files)
    return CompileResult(name, loaded.digest, report)


def compile_spec(
    spec_path: SpecPaths = "specs",
    out_dir: str | os.PathLike[str] = "compiled",
    *,
    progress: Progress | None = None,
    environment: str | None = None,
) -> WriteReport:
    """Load, check, render and write a spec (see :func:`compile_to`); raises :class:`~swarm.errors.SpecError`
    (every issue) for an invalid spec and :class:`~swarm.errors.CompileError` when
    the output cannot be written."""
    return compile_to(spec_path, out_dir, progress=progress, environment=environment).report
