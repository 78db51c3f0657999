"""Read a spec's files and compute its digest: no YAML, no pydantic.

Split from :mod:`swarm.spec.loader` (which re-exports every name here) so that a
command that needs only the bytes and their digest (``swarm token`` through
:mod:`swarm.spec.index`) imports neither the parser nor the models. The rules
for which files are read, and the definition of the digest, are documented in
:mod:`swarm.spec.loader`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import stat
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from swarm.errors import Position, SpecError, SpecIssue

__all__ = ["MAX_FILE_BYTES", "SPEC_SUFFIXES", "compute_digest", "is_spec_file_name", "read_spec_files"]

#: Largest spec file accepted (1 MiB): a spec is hand-written; anything larger
#: is a mistake or an attack, and it would be read on every reconcile.
MAX_FILE_BYTES = 1024 * 1024

SPEC_SUFFIXES = (".yaml", ".yml")


def is_spec_file_name(name: str) -> bool:
    """Whether a directory walk reads this file: not hidden, ending in .yaml/.yml in any case
    (``Review.YML`` is a spec file too, never silently skipped)."""
    return name.lower().endswith(SPEC_SUFFIXES) and not name.startswith(".")




def _canonical_paths(paths: Iterable[str]) -> dict[str, str]:
    paths = list(paths)
    if not paths:
        return {}
    dirs = [posixpath.dirname(p) for p in paths]
    try:
        common = posixpath.commonpath(dirs) if all(dirs) or not any(dirs) else ""
    except ValueError:  # mix of absolute and relative paths
        common = ""
    out: dict[str, str] = {}
    for p in paths:
        out[p] = posixpath.relpath(p, common) if common else p
    return out


def compute_digest(files: Mapping[str, bytes]) -> str:
    """The spec digest; see the module docstring for the exact definition."""
    canonical = _canonical_paths(files)
    h = hashlib.sha256()
    for display, name in sorted(canonical.items(), key=lambda kv: kv[1]):
        data = files[display]
        h.update(name.encode("utf-8") + b"\0" + str(len(data)).encode("ascii") + b"\0")
        h.update(data)
    return "sha256:" + h.hexdigest()




def _display(path: Path) -> str:
    try:  # the link itself is named, not its target: resolve the folder only
        return (path.absolute().parent.resolve() / path.name).relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _file_kind(mode: int) -> str:
    """What a non-regular file is, in words, for an error message."""
    for test, word in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return word
    return "not a regular file"


def _refuse(display: str, why: str, issues: list[SpecIssue]) -> None:
    issues.append(SpecIssue(Position(display, 1, 1), "", why))


def _read_one(path: Path, out: dict[str, bytes], issues: list[SpecIssue], *, named: bool = False) -> None:
    """Read one spec file without ever blocking and without following links out of the spec.

    ``named``: the path was given by the user (it may itself be a symlink, which is
    followed: the user chose it); a file found by walking a directory must be a
    regular file, not a symlink. In both cases the file opened must be a regular
    file: it is opened with ``O_NONBLOCK`` (a FIFO swapped in after the check
    cannot block the open) and checked again with ``fstat`` before reading.
    """
    display = _display(path)
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode) and not named:
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            _refuse(
                display,
                f"refusing a symbolic link (to {target}) inside a spec directory: a spec file must be "
                "a regular file (the content reviewed in a diff is the content applied); "
                "copy or move the file itself into the spec directory",
                issues,
            )
            return
        if named:
            st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):  # refused before any open: a FIFO is never opened
            _refuse(display, f"refusing {_file_kind(st.st_mode)}: a spec file must be a regular file", issues)
            return
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        if not named:
            flags |= getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(path, flags)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # swapped after the check above
                _refuse(display, f"refusing {_file_kind(st.st_mode)}: a spec file must be a regular file", issues)
                return
            if st.st_size > MAX_FILE_BYTES:
                _refuse(
                    display, f"file is {st.st_size} bytes, over the limit of {MAX_FILE_BYTES} bytes (1 MiB)", issues
                )
                return
            chunks: list[bytes] = []
            left = MAX_FILE_BYTES + 1
            while left > 0:
                chunk = os.read(fd, min(left, 1 << 16))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            data = b"".join(chunks)
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a link created after the lstat
            _refuse(display, "refusing a symbolic link inside a spec directory", issues)
            return
        issues.append(SpecIssue(None, "", f"cannot read {display}: {exc.strerror or exc}"))
        return
    out[display] = data


def _walk(path: Path, issues: list[SpecIssue]) -> list[Path]:
    """Spec files under directory ``path``; symlinked directories are refused, not followed."""
    found: list[Path] = []
    for root, dirs, names in os.walk(path):
        keep = []
        for d in sorted(dirs):
            if d.startswith("."):
                continue
            if os.path.islink(os.path.join(root, d)):
                target = os.readlink(os.path.join(root, d))
                _refuse(
                    _display(Path(root, d)),
                    f"refusing a symbolic link to a directory (to {target}) inside a spec directory: "
                    "it is not followed, and skipping it would silently drop its agents",
                    issues,
                )
                continue
            keep.append(d)
        dirs[:] = keep
        found.extend(Path(root, n) for n in names if is_spec_file_name(n))
    return found


def read_spec_files(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> dict[str, bytes]:
    """Read spec files: each path is a file or a directory searched recursively.

    In a directory, files ending in ``.yaml``/``.yml`` (in any case: ``.YML`` too) are
    read and hidden files and directories (``.name``) are skipped. Every file read
    must be a regular file: a FIFO, socket or device is refused (and never opened in
    a way that could block), and so is a symbolic link found in a directory, whether
    it points inside the directory or out of it (``ln -s ../.env specs/env.yaml``),
    file or directory. One rule for the working tree and for a git commit (where a
    link is stored as its target path, see :mod:`swarm.reconcile.gitsource`), and
    what a reviewer reads in a diff is what is applied. A path named explicitly may
    be a symlink (the user chose it); it must lead to a regular file or directory.
    Display paths are relative to the current directory when possible, POSIX form.
    Raises :class:`SpecError` for missing paths, refused, unreadable or oversized files.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: dict[str, bytes] = {}
    issues: list[SpecIssue] = []
    for raw in paths:
        path = Path(raw)
        try:
            mode: int | None = os.stat(path).st_mode
        except OSError:
            mode = None
        if mode is None:
            issues.append(SpecIssue(None, "", f"spec path {os.fspath(raw)!r} does not exist"))
        elif stat.S_ISDIR(mode):
            before = len(issues)
            found = _walk(path, issues)
            if not found and len(issues) == before:
                issues.append(SpecIssue(None, "", f"no .yaml/.yml files in directory {_display(path)}"))
            for file in sorted(found):
                _read_one(file, out, issues)
        else:
            _read_one(path, out, issues, named=True)
    if issues:
        raise SpecError(issues)
    return out


