"""The pre-commit hook checks what the commit records (the git index), not the work tree.

A real temporary git repository, the hook command as written in
``.pre-commit-hooks.yaml`` installed as ``.git/hooks/pre-commit``, and real
``git commit`` runs: a commit whose new agent's compiled files are untracked
must be refused, and go through once they are staged.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.spec.specdata import AGENT, SWARM

REPO = Path(__file__).resolve().parents[2]
NEW_AGENT = """\
  - id: boss2
    role: planner
    port: 8009
    publishes: [tasks.a]
    subscribes: [results.a]
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "SWARM_CACHE_DIR": ""}


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["git", "-c", "user.email=t@e", "-c", "user.name=t", *args]
    return subprocess.run(cmd, cwd=repo, check=check, capture_output=True, text=True, env=_env(), timeout=120)


def _swarm(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swarm", *args], cwd=repo, capture_output=True, text=True, env=_env(), timeout=120
    )


def _hook(hook_id: str) -> dict[str, Any]:
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    (hook,) = [h for h in hooks if h["id"] == hook_id]
    return dict(hook)


def _install_hook(repo: Path, hook_id: str) -> list[str]:
    """Install the hook the way pre-commit runs it (pass_filenames: false): entry + args."""
    hook = _hook(hook_id)
    assert hook["pass_filenames"] is False
    argv = shlex.split(hook["entry"]) + list(hook.get("args", []))
    assert argv[0] == "swarm"
    command = [sys.executable, "-m", "swarm", *argv[1:]]
    script = repo / ".git" / "hooks" / "pre-commit"
    script.write_text(f"#!/bin/sh\nexport PYTHONPATH={shlex.quote(str(REPO))}\nexec {shlex.join(command)}\n")
    script.chmod(0o755)
    return argv


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A committed spec with its committed compiled/ and the compile-check hook installed."""
    (tmp_path / "specs" / "agents").mkdir(parents=True)
    (tmp_path / "specs" / "swarm.yaml").write_text(SWARM)
    (tmp_path / "specs" / "agents" / "w1.yaml").write_text(AGENT)
    assert _swarm(tmp_path, "compile", "specs/").returncode == 0
    _git(tmp_path, "init", "-q", "-b", "main")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "spec and compiled output")
    _install_hook(tmp_path, "swarm-compile-check")
    return tmp_path


def _head(repo: Path) -> str:
    return _git(repo, "rev-parse", "HEAD").stdout.strip()


def test_the_hook_checks_the_index(repo: Path) -> None:
    argv = _install_hook(repo, "swarm-compile-check")
    assert "--index" in argv and "--check" in argv


def test_commit_am_without_the_new_agents_compiled_files_is_refused(repo: Path) -> None:
    before = _head(repo)
    with (repo / "specs" / "swarm.yaml").open("a") as fh:
        fh.write(NEW_AGENT)
    assert _swarm(repo, "compile", "specs/").returncode == 0  # writes compiled/demo/agents/boss2/ (untracked)
    assert _git(repo, "status", "--porcelain", "--", "compiled/demo/agents/boss2").stdout.startswith("??")
    # the work-tree check (what the hook used to run) passes: the files exist on disk
    assert _swarm(repo, "compile", "--check", "specs/").returncode == 0

    commit = _git(repo, "commit", "-qam", "add boss2", check=False)
    assert commit.returncode != 0
    assert _head(repo) == before  # nothing was committed
    assert "missing: demo/agents/boss2/" in commit.stderr
    assert "git add compiled/demo" in commit.stderr

    # a refused `commit -a` leaves the real index as it was: stage the new files and commit -a again
    _git(repo, "add", "compiled")
    assert _git(repo, "commit", "-qam", "add boss2 with its compiled files", check=False).returncode == 0
    assert _head(repo) != before
    files = _git(repo, "ls-tree", "-r", "--name-only", "HEAD", "compiled/demo/agents/boss2").stdout.split()
    assert files  # the commit carries the new agent's compiled files


def test_staged_spec_change_without_a_recompile_is_listed_as_changed(repo: Path) -> None:
    (repo / "specs" / "agents" / "w1.yaml").write_text(AGENT.replace("port: 8002", "port: 8012"))
    _git(repo, "add", "specs")
    result = _swarm(repo, "compile", "--check", "--index", "specs/", "-o", "json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["index"] is True and report["up_to_date"] is False
    assert any(line.startswith("changed: demo/") for line in report["differing"])


def test_unstaged_work_tree_changes_do_not_count(repo: Path) -> None:
    # the work tree is broken, the index is clean: the commit records the index, so the check passes
    (repo / "specs" / "agents" / "w1.yaml").write_text("kind: Agent\nid: [\n")
    result = _swarm(repo, "compile", "--check", "--index", "specs/")
    assert result.returncode == 0, result.stderr
    assert "up to date in the index" in result.stdout


def test_a_removed_agents_staged_files_are_extra(repo: Path) -> None:
    _git(repo, "rm", "-q", "specs/agents/w1.yaml")
    result = _swarm(repo, "compile", "--check", "--index", "specs/")
    assert result.returncode == 1
    assert "extra: demo/agents/w1/" in result.stderr


def test_an_invalid_staged_spec_fails_with_its_errors(repo: Path) -> None:
    (repo / "specs" / "agents" / "w1.yaml").write_text(AGENT.replace("role: worker", "role: wroker"))
    _git(repo, "add", "specs")
    result = _swarm(repo, "compile", "--check", "--index", "specs/")
    assert result.returncode == 2
    assert "specs/agents/w1.yaml:4:7: error: agents[1].role: role 'wroker' is not defined" in result.stderr


def test_a_staged_symlink_is_refused(repo: Path) -> None:
    (repo / ".env").write_text("SECRET=hunter2\n")
    (repo / "specs" / "env.yaml").symlink_to("../.env")
    _git(repo, "add", "specs")
    result = _swarm(repo, "compile", "--check", "--index", "specs/")
    assert result.returncode == 2
    assert "specs/env.yaml:1:1: error: refusing a symbolic link in the index" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_index_without_check_is_refused(repo: Path) -> None:
    result = _swarm(repo, "compile", "--index", "specs/")
    assert result.returncode == 2 and "--index goes with --check" in result.stderr


def test_the_documented_local_hooks_are_the_shipped_ones() -> None:
    text = (REPO / "docs" / "gitops.md").read_text()
    section = text[text.index("## pre-commit") : text.index("## CI")]
    blocks = [yaml.safe_load(b) for b in section.split("```yaml\n")[1:] for b in [b.split("```")[0]]]
    local = next(b for b in blocks if b["repos"][0]["repo"] == "local")["repos"][0]["hooks"]
    shipped = {h["id"]: h for h in yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())}
    assert {h["id"] for h in local} == set(shipped)
    for hook in local:
        for key in ("entry", "args", "pass_filenames", "files"):
            assert hook[key] == shipped[hook["id"]][key], (hook["id"], key)
    remote = next(b for b in blocks if b["repos"][0]["repo"] != "local")["repos"][0]
    assert len(str(remote["rev"])) == 40  # a commit sha: the project has no release tags to name
