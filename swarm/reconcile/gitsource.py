"""Reading the spec from git: a commit's files, the working tree's revision, ref changes.

Called by the reconcile loop. With ``--rev REF`` the spec is read from the
commit REF points to (``git ls-tree`` + ``git cat-file --batch``), never from
the working tree, so what is applied is exactly what was reviewed and committed;
:func:`swarm.spec.loader.parse_spec_texts` parses those bytes (pure); which
files are read follows the working tree's rules (hidden entries skipped, only
``.yaml``/``.yml`` under a directory, a missing path is an error). Without
``--rev`` the working tree is read and :func:`working_revision` records which
commit it was on and whether the spec paths had uncommitted changes.

Everything shells out to the ``git`` CLI (no library dependency); failures are
wrapped into :class:`swarm.errors.SpecError` (a bad ref or path is a spec input
problem the user must fix, not something to retry).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from swarm.git import run_git as _git
from swarm.git import split_cat_file_batch
from swarm.errors import Position, SpecError, SpecIssue, TransientError
from swarm.reconcile.status import Revision
from swarm.spec.files import is_spec_file_name


def repo_root(path: Path) -> Path | None:
    """The top of the git work tree containing ``path``, or ``None``."""
    start = path if path.is_dir() else path.parent
    try:
        out = _git(start.resolve(), "rev-parse", "--show-toplevel")
    except SpecError:
        return None
    return Path(out.decode().strip())


def resolve_ref(repo: Path, ref: str) -> str:
    """The commit id ``ref`` points to now."""
    return _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").decode().strip()


def working_revision(paths: list[Path]) -> Revision:
    """The HEAD commit of the repository holding ``paths`` and whether they have changes."""
    root = repo_root(paths[0])
    if root is None:
        return Revision(source="working-tree")
    try:
        head = _git(root, "rev-parse", "HEAD").decode().strip()
    except SpecError:  # a repository without commits
        return Revision(source="working-tree", dirty=True)
    rel = [str(p.resolve().relative_to(root)) for p in paths]
    changes = _git(root, "status", "--porcelain", "--untracked-files=all", "--", *rel)
    return Revision(source="working-tree", commit=head, dirty=bool(changes.strip()))


def walked(rel: str) -> bool:
    """Whether a directory walk of the working tree reads ``rel`` (a path below the directory)."""
    *dirs, name = rel.split("/")
    return not any(d.startswith(".") for d in dirs) and is_spec_file_name(name)


def read_spec_at(repo: Path, commit: str, spec_paths: list[Path]) -> dict[str, bytes]:
    """The spec files under ``spec_paths`` as committed in ``commit``.

    The same rules as :func:`swarm.spec.loader.read_spec_files` on the working
    tree: a path naming a file is read whatever its name; under a path naming a
    directory, files ending in ``.yaml``/``.yml`` in any case are read
    (:func:`~swarm.spec.loader.is_spec_file_name`) and hidden files and
    directories (any component ``.name`` below it) are skipped. Every path must
    exist in the commit (and a directory hold a spec file), else SpecError.
    Keys are repository-relative paths, so error positions name the file as it is in git.
    """
    root = repo.resolve()
    rel: list[str] = []
    for p in spec_paths:
        try:
            rel.append(p.resolve().relative_to(root).as_posix())
        except ValueError:
            raise SpecError([SpecIssue(None, "", f"spec path {str(p)!r} is not inside the repository {root}")]) from None
    listing = _git(repo, "ls-tree", "-r", "-z", commit, "--", *rel)
    modes: dict[str, str] = {}
    for line in listing.decode().split("\0"):
        if line:
            meta, _, name = line.partition("\t")
            modes[name] = meta.split(" ", 1)[0]
    entries = list(modes)
    short = commit[:10]
    issues: list[SpecIssue] = []
    chosen: set[str] = set()
    for path in rel:
        if path in entries:  # a file, named explicitly
            chosen.add(path)
            continue
        prefix = "" if path == "." else path.rstrip("/") + "/"
        under = [n for n in entries if n.startswith(prefix)]
        if not under:
            issues.append(SpecIssue(None, "", f"spec path {path!r} does not exist in commit {short}"))
            continue
        found = [n for n in under if walked(n[len(prefix):])]
        if not found:
            issues.append(SpecIssue(None, "", f"no .yaml/.yml files in directory {path!r} in commit {short}"))
        chosen.update(found)
    for name in sorted(chosen):
        # A symlink is stored as a blob holding its target path, a submodule as a commit:
        # refused like a symlink or non-regular file in the working tree (swarm.spec.loader).
        if modes[name] in ("120000", "160000"):
            what = "a symbolic link" if modes[name] == "120000" else "a submodule"
            issues.append(SpecIssue(Position(name, 1, 1), "", f"refusing {what} in commit {short}: "
                                    "a spec file must be a regular file"))
    if issues:
        raise SpecError(issues)
    names = sorted(chosen)
    batch = "".join(f"{commit}:{n}\n" for n in names).encode()
    out = _git(repo, "cat-file", "--batch", input_bytes=batch)
    return split_cat_file_batch(out, names)


def ref_watch_paths(repo: Path) -> list[Path]:
    """Files and folders whose change may move a ref: HEAD, refs/, packed-refs."""
    git_dir = Path(_git(repo, "rev-parse", "--absolute-git-dir").decode().strip())
    return [git_dir]


def remote_branch(repo: Path, ref: str) -> tuple[str, str] | None:
    """``(remote, branch)`` when ``ref`` names a remote-tracking branch (``origin/main``,
    ``refs/remotes/origin/main``), else None (a local branch, tag or commit: nothing to fetch)."""
    try:
        full = _git(repo, "rev-parse", "--symbolic-full-name", ref).decode().strip()
    except SpecError:
        return None
    if not full.startswith("refs/remotes/"):
        return None
    rest = full[len("refs/remotes/"):]
    remotes = _git(repo, "remote").decode().split()
    # the longest remote name that prefixes the ref (remote names may hold '/')
    for remote in sorted(remotes, key=len, reverse=True):
        if rest.startswith(remote + "/"):
            return remote, rest[len(remote) + 1:]
    return None


def fetch_branch(repo: Path, remote: str, branch: str, timeout: float = 120.0) -> str:
    """``git fetch`` one branch of ``remote`` into its remote-tracking ref; the commit it
    points to now. Raises :class:`~swarm.errors.TransientError` when the fetch fails (the
    network, the remote): the loop keeps enforcing what it has and tries again."""
    refspec = f"+refs/heads/{branch}:refs/remotes/{remote}/{branch}"
    try:
        proc = subprocess.run(["git", "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", remote, refspec],
                              cwd=repo, capture_output=True, timeout=timeout, check=False,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except subprocess.TimeoutExpired as exc:
        raise TransientError(f"git fetch {remote} {branch}: no answer within {timeout:.0f} s") from exc
    except OSError as exc:
        raise TransientError(f"cannot run git fetch: {exc}") from exc
    if proc.returncode != 0:
        words = proc.stderr.decode(errors="replace").strip().splitlines()
        raise TransientError(f"git fetch {remote} {branch}: {words[-1] if words else f'exit {proc.returncode}'}")
    return resolve_ref(repo, f"refs/remotes/{remote}/{branch}")


def changed_files(repo: Path, old: str, new: str, spec_paths: list[Path]) -> list[str]:
    """The spec files that differ between two commits (``git diff --name-status``), as
    ``M path`` / ``A path`` / ``D path`` lines; empty when either commit is unknown."""
    rel = []
    for p in spec_paths:
        try:
            rel.append(str(p.resolve().relative_to(repo.resolve())) or ".")
        except ValueError:
            continue
    try:
        out = _git(repo, "diff", "--name-status", "--no-renames", old, new, "--", *rel)
    except SpecError:
        return []
    return [" ".join(line.split("\t")) for line in out.decode("utf-8", "replace").splitlines() if line]
