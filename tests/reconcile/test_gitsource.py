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
    assert sorted(files) == ["specs/agents/review.yaml", "specs/agents/workers.yaml", "specs/environments/staging.yaml",
                            "specs/swarm.yaml"]
    loaded = parse_spec_texts(files)  # the committed bytes are valid, the working tree is not
    assert len(loaded.spec.agents) == 6


def test_bad_ref_and_missing_repo_are_spec_errors(spec_dir: Path, tmp_path: Path) -> None:
    assert repo_root(spec_dir) is None
    assert working_revision([spec_dir]).commit is None
    repo = spec_dir.parent
    _git(repo, "init", "-q", "-b", "main")
    with pytest.raises(SpecError, match="git rev-parse"):
        resolve_ref(repo, "no-such-branch")


def _committed(spec_dir: Path) -> tuple[Path, str]:
    repo = spec_dir.parent
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "one")
    return repo, resolve_ref(repo, "main")


def test_a_path_missing_from_the_commit_is_an_error(spec_dir: Path) -> None:
    repo, commit = _committed(spec_dir)
    extra = spec_dir / "more.yaml"  # exists in the working tree only
    extra.write_text("apiVersion: swarm/v1\n")
    with pytest.raises(SpecError, match=r"spec path 'specs/more.yaml' does not exist in commit") as info:
        read_spec_at(repo, commit, [spec_dir / "swarm.yaml", extra, spec_dir / "agents"])
    assert len(info.value.issues) == 1
    with pytest.raises(SpecError, match=r"spec path 'specs/gone' does not exist in commit"):
        read_spec_at(repo, commit, [spec_dir / "gone"])
    (spec_dir / "notes").mkdir()
    (spec_dir / "notes" / "readme.txt").write_text("x\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "two")
    with pytest.raises(SpecError, match=r"no \.yaml/\.yml files in directory 'specs/notes'"):
        read_spec_at(repo, resolve_ref(repo, "main"), [spec_dir / "notes"])
    # every named path found: read as before
    files = read_spec_at(repo, commit, [spec_dir / "swarm.yaml", spec_dir / "agents"])
    assert sorted(files) == ["specs/agents/review.yaml", "specs/agents/workers.yaml", "specs/swarm.yaml"]


def test_hidden_entries_and_other_extensions_are_skipped_like_the_working_tree(spec_dir: Path) -> None:
    from swarm.spec.loader import read_spec_files

    (spec_dir / "agents" / ".old.yaml").write_text("garbage: [\n")
    (spec_dir / ".drafts").mkdir()
    (spec_dir / ".drafts" / "wip.yaml").write_text("garbage: [\n")
    (spec_dir / "agents" / "Extra.YML").write_text("apiVersion: swarm/v1\n")  # any case: a spec file
    (spec_dir / "agents" / "notes.txt").write_text("not yaml\n")
    repo, commit = _committed(spec_dir)
    files = read_spec_at(repo, commit, [spec_dir])
    assert sorted(files) == [
        "specs/agents/Extra.YML", "specs/agents/review.yaml", "specs/agents/workers.yaml",
        "specs/environments/staging.yaml", "specs/swarm.yaml"
    ]
    tree = read_spec_files([spec_dir])
    assert sorted(Path(k).name for k in tree) == sorted(Path(k).name for k in files)
    # a file named explicitly is read whatever its name, as in the working tree
    named = read_spec_at(repo, commit, [spec_dir / "agents" / ".old.yaml"])
    assert list(named) == ["specs/agents/.old.yaml"]
