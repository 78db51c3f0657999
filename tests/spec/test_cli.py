"""``swarm validate``, ``swarm schema`` and ``swarm acl check``: output and exit codes.

The parser is built from this part's ``register`` only, so these tests do not
depend on the other command modules; one test runs the real ``swarm`` entry point.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from swarm.cli import spec_cmds
from swarm.errors import SpecError
from swarm.spec.schema import SCHEMA_FILE, schema_files
from tests.spec.specdata import AGENT, SWARM


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="swarm")
    spec_cmds.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except SpecError as exc:  # what swarm.cli.main does
        for issue in exc.issues:
            print(issue.format(), file=sys.stderr)
        return 2
    return code


@pytest.fixture
def spec_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "specs" / "agents").mkdir(parents=True)
    (tmp_path / "specs" / "swarm.yaml").write_text(SWARM)
    (tmp_path / "specs" / "agents" / "w1.yaml").write_text(AGENT)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "specs"


def test_validate_ok_defaults_to_specs(spec_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["validate"]) == 0
    assert capsys.readouterr().out == "ok: 2 agents, 3 topics\n"


def test_validate_reports_issues_in_compiler_form(spec_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (spec_dir / "agents" / "w1.yaml").write_text(AGENT.replace("role: worker", "role: wroker"))
    assert run(["validate", "specs"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "specs/agents/w1.yaml:4:7: error: agents[1].role: role 'wroker' is not defined (did you mean 'worker'?)\n"
    )


def test_validate_json(spec_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["validate", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    (spec_dir / "agents" / "w1.yaml").write_text(AGENT.replace("8002", "8001"))
    assert run(["validate", "-o", "json", "specs/"]) == 2
    out, err = capsys.readouterr()
    (issue,) = json.loads(out)
    assert issue["file"] == "specs/agents/w1.yaml" and issue["line"] == 5 and issue["column"] == 7
    assert issue["path"] == "agents[1].port" and issue["severity"] == "error"
    assert issue["related"] == [{"file": "specs/swarm.yaml", "line": 24, "column": 11}]
    assert err == ""


def test_validate_missing_path_is_exit_2(spec_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["validate", "nope/"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_schema_write_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "schemas"
    assert run(["schema", "--check", "--out", str(out)]) == 1
    assert f"stale: {out.as_posix()}/{SCHEMA_FILE}" in capsys.readouterr().out
    assert not out.exists()  # --check writes nothing
    assert run(["schema", "--out", str(out)]) == 0
    assert (out / SCHEMA_FILE).read_text() == schema_files()[SCHEMA_FILE]
    assert run(["schema", "--check", "--out", str(out)]) == 0
    mtime = (out / SCHEMA_FILE).stat().st_mtime_ns
    assert run(["schema", "--out", str(out)]) == 0
    assert (out / SCHEMA_FILE).stat().st_mtime_ns == mtime  # unchanged file not rewritten
    assert sorted(p.name for p in out.iterdir()) == [SCHEMA_FILE]  # no temp files left


def test_schema_check_passes_on_the_committed_schema(repo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo_root)
    assert run(["schema", "--check"]) == 0


@pytest.mark.parametrize(
    ("argv", "code", "printed"),
    [
        (["planner", "publish", "tasks.a"], 0, "allow (publish: tasks.>)\n"),
        (["planner", "publish", "tasks.admin.reset"], 1, "deny (deny.publish: tasks.admin.>)\n"),
        (["planner", "subscribe", "tasks.a"], 1, "deny (default deny)\n"),
        (["worker", "subscribe", "tasks.a"], 0, "allow (subscribe: tasks.*)\n"),
    ],
)
def test_acl_check(
    spec_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, printed: str
) -> None:
    assert run(["acl", "check", *argv]) == code
    assert capsys.readouterr().out == printed


def test_acl_check_unknown_role_and_bad_topic(spec_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["acl", "check", "--spec", "specs", "plannr", "publish", "tasks.a"]) == 2
    assert "role 'plannr' is not defined (did you mean 'planner'?)" in capsys.readouterr().err
    assert run(["acl", "check", "planner", "publish", "tasks.>"]) == 2
    assert "is not a topic name" in capsys.readouterr().err


def test_acl_check_undeclared_topic_is_noted(spec_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["acl", "check", "planner", "publish", "tasks.new"]) == 0
    out, err = capsys.readouterr()
    assert out == "allow (publish: tasks.>)\n" and "not declared" in err


def test_real_entry_point_validates_the_example(repo_root: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "swarm", "validate", "-o", "json"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_acl_check_exit_codes_through_the_real_entry_point(spec_dir: Path) -> None:
    """0 allow, 1 deny, 2 invalid spec or usage — as a script sees them."""

    def acl(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "swarm", "acl", "check", *argv],
            cwd=spec_dir.parent, capture_output=True, text=True, timeout=60,
        )

    assert acl("planner", "publish", "tasks.a").returncode == 0
    assert acl("planner", "subscribe", "tasks.a").returncode == 1
    assert acl("planner", "delete", "tasks.a").returncode == 2  # usage
    (spec_dir / "agents" / "w1.yaml").write_text(AGENT.replace("role: worker", "role: wroker"))
    broken = acl("planner", "publish", "tasks.a")
    assert broken.returncode == 2 and broken.stdout == ""
    assert "specs/agents/w1.yaml:4:7: error: agents[1].role: role 'wroker' is not defined" in broken.stderr
