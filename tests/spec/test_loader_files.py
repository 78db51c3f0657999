"""Reading spec files from disk (and from a commit): what is refused and what is never shown.

The attacker-style cases: a symlink from the spec directory to a secrets file
(``ln -s ../.env specs/env.yaml``), a FIFO or a socket named like a spec, a file
that is not a spec at all. The victim is whoever reads the error: the terminal,
``-o json`` output and the reconciler's status (which the registry serves) must
never contain the secret, and nothing may block.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from swarm.errors import SpecError, SpecIssue
from swarm.reconcile.gitsource import read_spec_at, resolve_ref
from swarm.reconcile.loop import _error
from swarm.spec.loader import load_spec_full, parse_spec_texts, read_spec_files
from tests.spec.specdata import AGENT, SWARM
from tests.support.services import RedisServer

SECRET = "hunter2"
SWARM_BIN = [sys.executable, "-m", "swarm"]


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with a valid specs/ and a .env beside it holding a secret."""
    (tmp_path / "specs" / "agents").mkdir(parents=True)
    (tmp_path / "specs" / "swarm.yaml").write_text(SWARM)
    (tmp_path / "specs" / "agents" / "w1.yaml").write_text(AGENT)
    (tmp_path / ".env").write_text(f"SECRET={SECRET}\nAPI_KEY=sk-{SECRET}-live\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _swarm(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real CLI; the timeout turns a hang (a FIFO opened for reading) into a failure."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run([*SWARM_BIN, *args], cwd=cwd, capture_output=True, text=True, timeout=60, env=env)


def _issues(paths: str | list[str]) -> list[SpecIssue]:
    with pytest.raises(SpecError) as info:
        load_spec_full(paths)
    return info.value.issues


def _assert_secret_nowhere(repo: Path, issues: list[SpecIssue]) -> None:
    """Not in the CLI's text or JSON output, not in what the reconciler stores in its status."""
    text = _swarm("validate", "specs", cwd=repo)
    as_json = _swarm("validate", "specs", "-o", "json", cwd=repo)
    assert text.returncode == 2 and as_json.returncode == 2
    status = _error("spec", SpecError(issues)).model_dump_json()
    for output in (text.stdout, text.stderr, as_json.stdout, as_json.stderr, status):
        assert SECRET not in output
    assert json.loads(as_json.stdout)  # the JSON report is there, it just does not quote the file


def test_symlink_to_a_secrets_file_outside_is_refused_unread(repo: Path) -> None:
    (repo / "specs" / "env.yaml").symlink_to("../.env")
    (issue,) = _issues("specs")
    assert issue.position is not None and issue.position.file == "specs/env.yaml"
    assert "symbolic link" in issue.message and "regular file" in issue.message
    _assert_secret_nowhere(repo, [issue])


def test_symlink_inside_the_spec_directory_is_refused_too(repo: Path) -> None:
    (repo / "specs" / "agents" / "w1.yaml").rename(repo / "specs" / "w1.txt")
    (repo / "specs" / "agents" / "w1.yaml").symlink_to("../w1.txt")
    (issue,) = _issues("specs")
    assert issue.position is not None and issue.position.file == "specs/agents/w1.yaml"
    assert "symbolic link (to ../w1.txt)" in issue.message


def test_symlinked_directory_is_an_error_not_a_silent_skip(repo: Path) -> None:
    (repo / "more").mkdir()
    (repo / "more" / "w2.yaml").write_text(AGENT.replace("w1", "w2").replace("8002", "8003"))
    (repo / "specs" / "more").symlink_to("../more", target_is_directory=True)
    (issue,) = _issues("specs")
    assert issue.position is not None and issue.position.file == "specs/more"
    assert "symbolic link to a directory" in issue.message


def test_a_named_symlink_is_followed(repo: Path) -> None:
    (repo / "one.yaml").symlink_to("specs/swarm.yaml")
    assert load_spec_full("one.yaml").spec.name == "demo"


def test_fifo_in_the_spec_directory_is_refused_without_blocking(repo: Path) -> None:
    os.mkfifo(repo / "specs" / "agents" / "pipe.yaml")  # nobody ever writes to it
    result = _swarm("validate", "specs", cwd=repo)
    assert result.returncode == 2
    assert "specs/agents/pipe.yaml:1:1: error: refusing a FIFO (named pipe)" in result.stderr
    (issue,) = _issues("specs")
    assert "regular file" in issue.message


def test_fifo_named_explicitly_is_refused_not_missing(repo: Path) -> None:
    os.mkfifo(repo / "pipe.yaml")
    result = _swarm("validate", "specs", "pipe.yaml", cwd=repo)
    assert result.returncode == 2
    assert "pipe.yaml:1:1: error: refusing a FIFO" in result.stderr and "does not exist" not in result.stderr


def test_socket_and_device_are_refused(repo: Path) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(repo / "specs" / "s.yaml"))
        found = _issues(["specs", "/dev/null"])
    messages = {i.position.file if i.position else "": i.message for i in found}
    assert "refusing a socket" in messages["specs/s.yaml"]
    assert "refusing a character device" in messages["/dev/null"]


def test_non_spec_file_is_named_but_never_quoted(repo: Path) -> None:
    (repo / "specs" / "env.yaml").write_text((repo / ".env").read_text())  # copied, not linked
    (issue,) = _issues("specs")
    assert issue.position is not None and issue.position.file == "specs/env.yaml"
    assert issue.message.startswith("not a swarm spec: it holds no Swarm or Agent document")
    _assert_secret_nowhere(repo, [issue])


def test_yaml_syntax_error_in_a_non_spec_file_does_not_echo_it(repo: Path) -> None:
    (repo / "specs" / "creds.yaml").write_text(f'password: "{SECRET}\ntoken: [{SECRET}\n  : {{\n')
    (issue,) = _issues("specs")
    assert issue.position is not None and issue.position.file == "specs/creds.yaml"
    assert issue.message.startswith("not a swarm spec: it is not valid YAML")
    _assert_secret_nowhere(repo, [issue])


@pytest.mark.parametrize(
    "text",
    [
        f"{SECRET}: 1\n{SECRET}: 2\n",  # duplicate keys name the key
        f"x: !{SECRET} 1\n",  # tags are quoted
        f"when: 2024-13-45 {SECRET}\nport: !!int {SECRET}\n",  # unreadable values are quoted
        f"\xe9{SECRET}".encode("latin-1").decode("latin-1"),  # not UTF-8 once written as latin-1
    ],
)
def test_no_yaml_level_message_quotes_a_non_spec_file(text: str) -> None:
    raw = {"specs/swarm.yaml": SWARM.encode(), "specs/x.yaml": text.encode("latin-1")}
    with pytest.raises(SpecError) as info:
        parse_spec_texts(raw)
    (issue,) = info.value.issues
    assert issue.position is not None and issue.position.file == "specs/x.yaml"
    assert SECRET not in issue.format() and "not a swarm spec" in issue.message


def test_a_scalar_document_in_a_spec_is_not_quoted() -> None:
    raw = {"specs/swarm.yaml": (SWARM + f"---\nSECRET={SECRET}\n").encode()}
    with pytest.raises(SpecError) as info:
        parse_spec_texts(raw)
    (issue,) = info.value.issues
    assert "must be a mapping, got a scalar (str)" in issue.message and SECRET not in issue.format()


def test_a_spec_with_errors_is_still_explained_in_full(repo: Path) -> None:
    # the content rule only hides files without kind/apiVersion: a spec's own errors keep their detail
    (repo / "specs" / "agents" / "w1.yaml").write_text(AGENT.replace("port: 8002", "port: [8002"))
    (issue,) = _issues("specs")
    assert "YAML syntax error" in issue.message


def _git(repo: Path, *args: str) -> None:
    cmd = ["git", "-c", "user.email=t@e", "-c", "user.name=t", *args]
    subprocess.run(cmd, cwd=repo, check=True, capture_output=True)


def test_a_symlink_committed_to_git_is_refused(repo: Path) -> None:
    (repo / "specs" / "env.yaml").symlink_to("../.env")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "spec with a link")
    with pytest.raises(SpecError) as info:
        read_spec_at(repo, resolve_ref(repo, "main"), [repo / "specs"])
    (issue,) = info.value.issues
    assert issue.position is not None and issue.position.file == "specs/env.yaml"
    assert "refusing a symbolic link in commit" in issue.message
    assert SECRET not in issue.format()


def test_walked_spec_directory_still_reads_regular_files(repo: Path) -> None:
    (repo / "specs" / "README").write_text("notes, not read\n")
    os.mkfifo(repo / "specs" / "not-a-spec-name")  # not a spec name: never opened
    assert sorted(read_spec_files("specs")) == ["specs/agents/w1.yaml", "specs/swarm.yaml"]


def test_the_reconcilers_status_never_holds_the_secret(repo: Path, redis_server: RedisServer) -> None:
    """The real daemon (one pass) on a spec dir with a copied .env and one linked: status names, never quotes."""
    (repo / "specs" / "env.yaml").write_text((repo / ".env").read_text())
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "SWARM_REGISTRY_SECRET": "x"}
    args = [*SWARM_BIN, "reconcile", "specs", "--once", "--redis-url", redis_server.url]
    result = subprocess.run(args, cwd=repo, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    client = redis_server.client(decode_responses=True)
    try:
        raw = client.get("swarm:{demo}:status")
        assert isinstance(raw, str)
        status = json.loads(raw)
        assert status["state"] == "invalid-spec"
        assert [i["file"] for i in status["last_error"]["issues"]] == ["specs/env.yaml"]
        assert SECRET not in raw and SECRET not in result.stdout + result.stderr

        (repo / "specs" / "env.yaml").unlink()
        (repo / "specs" / "env.yaml").symlink_to("../.env")
        result = subprocess.run(args, cwd=repo, capture_output=True, text=True, timeout=60, env=env)
        assert result.returncode == 2 and "symbolic link" in result.stderr
        assert SECRET not in result.stdout + result.stderr
        assert SECRET not in str(client.get("swarm:{demo}:status"))
    finally:
        client.close()
