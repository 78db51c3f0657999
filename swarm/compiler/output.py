"""Write rendered files to ``<out_dir>/<swarm>/``: the compiler's only file-system adapter.

Called by :func:`swarm.compiler.compile_spec` (and ``swarm compile``) with the
bytes from :func:`swarm.compiler.render.render`. Built so that a compile can
never damage anything outside its own directory and never leaves a half file:

* every path is checked before the first write: relative, under ``<swarm>/``,
  no ``..``, and (after resolving symlinks) inside ``<out_dir>/<swarm>/``;
  ``<out_dir>/<swarm>`` itself and every directory below it must not be a
  symlink (a linked directory would make compile write into and delete from
  the link's target);
* each file is written to a temporary file in the same directory and renamed
  over the target (``os.replace`` is atomic on POSIX), so readers — the
  reconciler, git, docker — see the old file or the new one, never a mix;
* a file whose bytes are already right is not touched (its mtime stays), so a
  recompile with nothing changed writes nothing;
* files under ``<out_dir>/<swarm>/`` that the new render does not contain
  (a removed agent, a leftover temp file) are deleted and empty directories
  pruned. Nothing outside ``<out_dir>/<swarm>/`` is ever deleted.

No fsync: compiled output is regenerable from the spec, and rename atomicity
already guarantees no torn files for concurrent readers.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Mapping

from swarm.errors import CompileError
from swarm.spec.models import NAME_MAX, NAME_PATTERN

_NAME = re.compile(NAME_PATTERN)
#: Permissions of written files (before the umask): readable by docker COPY and other users.
FILE_MODE = 0o644


@dataclass(frozen=True)
class WriteReport:
    """What a write did; paths are relative to the output directory, sorted."""

    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.written or self.removed)

    def to_dict(self) -> dict[str, list[str]]:
        return {"written": self.written, "unchanged": self.unchanged, "removed": self.removed}


def _valid_output_name(name: str) -> bool:
    """``<swarm>`` or an environment's ``<swarm>.<env>``: both parts valid names."""
    parts = name.split(".")
    return len(parts) <= 2 and all(_NAME.fullmatch(p) and len(p) <= NAME_MAX for p in parts)


def _swarm_root(out_dir: Path, swarm: str) -> Path:
    if not _valid_output_name(swarm):
        raise CompileError(f"refusing to write: {swarm!r} is not a valid swarm name (or <swarm>.<environment>)")
    root = out_dir / swarm
    if root.is_symlink():
        raise CompileError(
            f"refusing to use {root}: it is a symlink (to {os.readlink(root)}); compile writes and deletes "
            "only inside a real directory: remove the link or compile with --out pointing at the real location"
        )
    return root.resolve()


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _targets(files: Mapping[str, bytes], out_dir: Path, swarm: str) -> dict[str, Path]:
    """Map each relative path to its target, refusing anything outside ``out_dir/swarm``."""
    root = _swarm_root(out_dir, swarm)
    targets: dict[str, Path] = {}
    for rel in files:
        pure = PurePosixPath(rel)
        parts = pure.parts
        if (
            pure.is_absolute()
            or "\\" in rel
            or len(parts) < 2
            or parts[0] != swarm
            or any(p in ("", ".", "..") for p in parts)
            or str(pure) != rel
        ):
            raise CompileError(f"refusing to write {rel!r}: output paths must be relative and under {swarm}/")
        target = out_dir.joinpath(*parts)
        # resolve() follows symlinks already in the tree: a link pointing outside is refused too
        if not _inside(target.resolve(), root) or target.resolve() == root:
            raise CompileError(f"refusing to write {rel!r}: it resolves outside {root}")
        for depth in range(2, len(parts)):  # the directories compile creates below <swarm>/
            directory = out_dir.joinpath(*parts[:depth])
            if directory.is_symlink():
                raise CompileError(
                    f"refusing to write {rel!r}: {directory} is a symlink; compile writes only into real "
                    "directories: remove the link"
                )
        targets[rel] = target
    return targets


def _same_bytes(path: Path, data: bytes) -> bool:
    try:
        if path.is_symlink() or path.stat().st_size != len(data):
            return False
        return path.read_bytes() == data
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return False


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to ``.<name>.<pid>.tmp`` beside ``path`` and rename it over ``path``.

    The temp name is unique per process (O_EXCL refuses a stale one, which is then
    replaced); mode 0644 minus the umask, like any file the user creates.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, FILE_MODE)
    except FileExistsError:
        tmp.unlink()
        fd = os.open(tmp, flags, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _existing_files(root: Path) -> list[Path]:
    """Every file (and symlink) under ``root``, without following directory links."""
    found: list[Path] = []
    if not root.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        found.extend(base / name for name in filenames)
        # a symlink to a directory is listed in dirnames but not descended: treat it as a file
        found.extend(base / name for name in dirnames if (base / name).is_symlink())
    return found


def _relative(path: Path, out_dir: Path) -> str:
    return path.relative_to(out_dir).as_posix()


def write_output(files: Mapping[str, bytes], out_dir: Path, swarm: str) -> WriteReport:
    """Make ``out_dir/swarm`` hold exactly ``files``; see the module docstring for guarantees.

    Raises :class:`~swarm.errors.CompileError` (before writing anything) when a
    path would land outside ``out_dir/swarm``, and wraps file-system errors.
    """
    out_dir = Path(out_dir).absolute()
    targets = _targets(files, out_dir, swarm)
    root = out_dir / swarm
    written: list[str] = []
    unchanged: list[str] = []
    removed: list[str] = []
    made_dirs: set[Path] = set()
    try:
        for rel in sorted(targets):
            target = targets[rel]
            if _same_bytes(target, files[rel]):
                unchanged.append(rel)
                continue
            if target.is_symlink() or target.is_dir():
                _remove(target)
            if target.parent not in made_dirs:
                target.parent.mkdir(parents=True, exist_ok=True)
                made_dirs.add(target.parent)
            _atomic_write(target, files[rel])
            written.append(rel)
        wanted = {t.absolute() for t in targets.values()}
        for path in sorted(_existing_files(root)):
            if path.absolute() not in wanted:
                path.unlink()
                removed.append(_relative(path, out_dir))
        _prune_empty_dirs(root)
    except OSError as exc:
        raise CompileError(f"writing {root} failed: {exc}") from exc
    return WriteReport(written=written, unchanged=unchanged, removed=sorted(removed))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        for child in sorted(path.rglob("*"), reverse=True):
            if child.is_dir() and not child.is_symlink():
                child.rmdir()
            else:
                child.unlink()
        path.rmdir()
    else:
        path.unlink()


def _prune_empty_dirs(root: Path) -> None:
    if not root.is_dir():
        return
    for dirpath, _dirnames, _filenames in sorted(os.walk(root, followlinks=False), reverse=True):
        path = Path(dirpath)
        if path != root and not any(path.iterdir()):
            path.rmdir()


def diff_output(files: Mapping[str, bytes], out_dir: Path, swarm: str) -> list[str]:
    """What ``--check`` reports: ``changed: <path>``, ``missing: <path>``, ``extra: <path>``,
    sorted by path. Empty when ``out_dir/swarm`` already holds exactly ``files``."""
    out_dir = Path(out_dir).absolute()
    targets = _targets(files, out_dir, swarm)
    lines: list[tuple[str, str]] = []
    try:
        for rel, target in targets.items():
            if not target.exists() and not target.is_symlink():
                lines.append((rel, "missing"))
            elif not _same_bytes(target, files[rel]):
                lines.append((rel, "changed"))
        wanted = {t.absolute() for t in targets.values()}
        for path in _existing_files(out_dir / swarm):
            if path.absolute() not in wanted:
                lines.append((_relative(path, out_dir), "extra"))
    except OSError as exc:
        raise CompileError(f"reading {out_dir / swarm} failed: {exc}") from exc
    return [f"{status}: {rel}" for rel, status in sorted(lines)]
