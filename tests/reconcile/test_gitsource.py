"""Reading specs from git: a commit's files, the working tree's revision and dirtiness."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from swarm.errors import SpecError
from swarm.reconcile.gitsource import read_spec_at, repo_root, resolve_ref, working_revision
from swarm.spec.loader import parse_spec_texts


def _git(repo: Path, *args: str) -> str:
    cmd = ["git", "-c", "user.email=t@e", "-c", "user.name=t", *args]
    return subprocess.run(cmd, cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def test_commit_files_not_working_tree(spec_dir: Path) -> None:
    repo = spec_dir.parent
    _git(repo, "init", "-q", "-b", "main")
    (repo / "README").write_text("not a spec\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "one")
    commit = resolve_ref(repo, "main")
    assert repo_root(spec_dir) == repo.resolve()
    clean = working_revision([spec_dir])
    assert clean.commit == commit and clean.dirty is False

    (spec_dir / "agents" / "workers.yaml").write_text("garbage: [\n")
    dirty = working_revision([spec_dir])
    assert dirty.commit == commit and dirty.dirty is True

    files = read_spec_at(repo, commit, [spec_dir])
    assert sorted(files) == ["specs/agents/review.yaml", "specs/agents/workers.yaml", "specs/swarm.yaml"]
    loaded = parse_spec_texts(files)  # the committed bytes are valid, the working tree is not
    assert len(loaded.spec.agents) == 6


def test_bad_ref_and_missing_repo_are_spec_errors(spec_dir: Path, tmp_path: Path) -> None:
    assert repo_root(spec_dir) is None
    assert working_revision([spec_dir]).commit is None
    repo = spec_dir.parent
    _git(repo, "init", "-q", "-b", "main")
    with pytest.raises(SpecError, match="git rev-parse"):
        resolve_ref(repo, "no-such-branch")
