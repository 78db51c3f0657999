"""``swarm compile --check --index``: compare what a commit would record, not the work tree.

Who calls it: :mod:`swarm.cli.compile_cmds` (the pre-commit hook in
``.pre-commit-hooks.yaml`` runs ``swarm compile --check --index``).

Why: a pre-commit hook that checks the work tree passes when the compiled files
of a new agent exist on disk but were never staged (``git commit -am`` stages
only tracked files), so the commit lands without them. This module reads both
the spec and ``compiled/<swarm>/`` from the git index (``git ls-files --stage``
and ``git cat-file --batch``: what ``git commit`` records), compiles the staged
spec in memory and lists every compiled file that is missing from the index,
differs from the staged blob, or is staged but no longer produced.

The spec is read from the index with the rules of the work tree
(:func:`swarm.spec.loader.read_spec_files`): a path naming a file is read, under
a directory the ``.yaml``/``.yml`` files not under a hidden name; a staged
symlink or submodule is refused; a path with a merge conflict is an error.
Everything shells out to the ``git`` CLI; failures become
:class:`~swarm.errors.SpecError` (a spec input the user must fix).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from swarm.errors import Position, SpecError, SpecIssue
from swarm.git import run_git as run_git
from swarm.git import split_cat_file_batch as split_cat_file_batch

__all__ = ["IndexCheck", "StagedEntry", "check_index", "staged_entries"]

_LINK = "120000"
_GITLINK = "160000"


@dataclass(frozen=True)
class StagedEntry:
    """One path in the index: its mode, blob id and merge stage (0 when not conflicted)."""

    path: str
    mode: str
    blob: str
    stage: int


@dataclass(frozen=True)
class IndexCheck:
    """The result of :func:`check_index`: the swarm, how many files it compiles to, what differs."""

    swarm: str
    out_dir: str
    compiled: int
    differing: list[str]


def _repo_relative(root: Path, path: str | os.PathLike[str]) -> str:
    absolute = Path(path).absolute()
    try:
        rel = absolute.relative_to(root).as_posix()
    except ValueError:
        try:  # the repository's path may be spelled through a symlink (/tmp -> /private/tmp)
            rel = absolute.resolve().relative_to(root).as_posix()
        except ValueError:
            raise SpecError([SpecIssue(None, "", f"{os.fspath(path)!r} is not inside the repository {root}")]) from None
    return "" if rel == "." else rel


def staged_entries(root: Path, rel: str) -> list[StagedEntry]:
    """Index entries at or under the repository-relative path ``rel`` ("" for all)."""
    args = ["ls-files", "--stage", "-z", "--"] + ([rel] if rel else [])
    out: list[StagedEntry] = []
    for line in run_git(root, *args).decode("utf-8", "surrogateescape").split("\0"):
        if not line:
            continue
        meta, _, path = line.partition("\t")
        mode, blob, stage = meta.split(" ")
        out.append(StagedEntry(path, mode, blob, int(stage)))
    return out


def _blobs(root: Path, entries: Sequence[StagedEntry]) -> dict[str, bytes]:
    if not entries:
        return {}
    batch = "".join(f"{e.blob}\n" for e in entries).encode()
    raw = run_git(root, "cat-file", "--batch", input_bytes=batch)
    return split_cat_file_batch(raw, [e.path for e in entries])


def _walked(rel: str) -> bool:
    from swarm.spec.loader import is_spec_file_name

    *dirs, name = rel.split("/")
    return not any(d.startswith(".") for d in dirs) and is_spec_file_name(name)


def read_staged_spec(root: Path, spec_paths: Sequence[str | os.PathLike[str]]) -> dict[str, bytes]:
    """The staged spec files, keyed by repository-relative path."""
    issues: list[SpecIssue] = []
    chosen: dict[str, StagedEntry] = {}
    for raw in spec_paths:
        rel = _repo_relative(root, raw)
        entries = staged_entries(root, rel)
        if not entries:
            issues.append(SpecIssue(None, "", f"spec path {os.fspath(raw)!r} is not in the git index (git add it)"))
            continue
        exact = [e for e in entries if e.path == rel]
        if exact:
            found = exact
        else:
            prefix = rel + "/" if rel else ""
            found = [e for e in entries if _walked(e.path[len(prefix):])]
            if not found:
                issues.append(SpecIssue(None, "", f"no .yaml/.yml files staged in directory {rel or '.'!r}"))
        for entry in found:
            chosen[entry.path] = entry
    for entry in sorted(chosen.values(), key=lambda e: e.path):
        where = Position(entry.path, 1, 1)
        if entry.stage != 0:
            issues.append(SpecIssue(where, "", "has a merge conflict in the index: resolve it and git add it"))
        elif entry.mode == _LINK:
            issues.append(SpecIssue(where, "", "refusing a symbolic link in the index: a spec file must be a regular file"))
        elif entry.mode == _GITLINK:
            issues.append(SpecIssue(where, "", "refusing a submodule in the index: a spec file must be a regular file"))
    if issues:
        raise SpecError(issues)
    return _blobs(root, sorted(chosen.values(), key=lambda e: e.path))


def check_index(spec_paths: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str]) -> IndexCheck:
    """Compile the staged spec and diff it with the staged ``out_dir/<swarm>/``.

    Lines as in :func:`swarm.compiler.output.diff_output`: ``missing: <swarm>/path``
    (produced, not staged: ``git add`` it), ``changed: ...`` (the staged blob differs,
    or is a symlink), ``extra: ...`` (staged, no longer produced: ``git rm`` it).
    Raises :class:`SpecError` for an invalid staged spec or a git failure.
    """
    from swarm.compiler import compile_loaded
    from swarm.spec.loader import parse_spec_texts

    here = Path.cwd()
    root = Path(run_git(here, "rev-parse", "--show-toplevel").decode().strip())
    loaded = parse_spec_texts(read_staged_spec(root, spec_paths))
    files = compile_loaded(loaded)
    swarm = loaded.spec.name
    out_rel = _repo_relative(root, out_dir)
    prefix = (out_rel + "/" if out_rel else "") + swarm + "/"
    staged = {e.path: e for e in staged_entries(root, prefix.rstrip("/")) if e.path.startswith(prefix)}
    wanted = {prefix + rel[len(swarm) + 1 :]: rel for rel in files}
    blobs = _blobs(root, [e for p, e in staged.items() if p in wanted and e.stage == 0 and e.mode != _LINK])
    lines: list[tuple[str, str]] = []
    for path, rel in wanted.items():
        entry = staged.get(path)
        if entry is None:
            lines.append((rel, "missing"))
        elif path not in blobs or blobs[path] != files[rel]:
            lines.append((rel, "changed"))
    for path in staged:
        if path not in wanted:
            lines.append((swarm + "/" + path[len(prefix) :], "extra"))
    differing = [f"{status}: {rel}" for rel, status in sorted(lines)]
    return IndexCheck(swarm=swarm, out_dir=os.fspath(out_dir), compiled=len(files), differing=differing)
