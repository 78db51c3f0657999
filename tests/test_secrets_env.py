"""``swarm secrets env``: the .env holds what the compiled compose file needs, with `swarm token`'s values."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from swarm.cli import main
from swarm.errors import InvalidRequestError
from swarm.secrets_env import AgentEntry, MARK, compose_env, env_suffix, parse, render

REPO = Path(__file__).resolve().parents[1]
COMPILED = REPO / "compiled" / "research"
SECRET = "env-file-registry-secret"
#: ${NAME}, ${NAME:-default}, ${NAME:?message}: the references compose interpolates
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?][^}]*)?\}")


def compose_references() -> dict[str, bool]:
    """Every variable the compiled compose file references -> whether it is required (``:?``)."""
    found: dict[str, bool] = {}
    for name, rest in _REFERENCE.findall((COMPILED / "docker-compose.yml").read_text()):
        found[name] = found.get(name, False) or rest.startswith((":?", "?"))
    return found


def write_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
              *args: str) -> tuple[int, dict[str, str], str]:
    monkeypatch.setenv("SWARM_REGISTRY_SECRET", SECRET)
    out = tmp_path / "research.env"
    code = main(["secrets", "env", *args, "--out", str(out)])
    printed = capsys.readouterr()
    return code, parse(out.read_text()) if out.exists() else {}, printed.out + printed.err


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SWARM_REGISTRY_SECRET", "SWARM_REDIS_PASSWORD", "SWARM_BUS_SECRET", "SWARM_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def test_the_file_sets_every_required_variable_and_every_agent_token_of_the_compose_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, values, _ = write_env(tmp_path, monkeypatch, capsys, str(COMPILED))
    assert code == 0
    references = compose_references()
    required = {name for name, needed in references.items() if needed}
    tokens = {name for name in references if name.startswith("SWARM_AGENT_TOKEN_")}
    assert required and tokens  # the compose file does reference them
    assert required | tokens <= set(values)
    assert set(values) <= set(references)  # nothing the compose file does not read
    assert all(values.values())  # no empty value (compose treats empty as unset)


def test_values_equal_what_swarm_token_prints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, values, _ = write_env(tmp_path, monkeypatch, capsys, str(COMPILED))
    assert code == 0
    for agent in ("architect", "web-researcher"):
        assert main(["token", agent, "--spec", str(REPO / "specs")]) == 0
        assert values["SWARM_AGENT_TOKEN_" + env_suffix(agent)] == capsys.readouterr().out.strip()
        assert main(["token", "--bus", agent, "--spec", str(REPO / "specs")]) == 0
        assert values["SWARM_BUS_PASSWORD_" + env_suffix(agent)] == capsys.readouterr().out.strip()
    assert values["SWARM_REGISTRY_SECRET"] == SECRET


def test_the_file_is_private_and_no_secret_is_printed(tmp_path: Path) -> None:
    out = tmp_path / "research.env"
    env = {**os.environ, "SWARM_REGISTRY_SECRET": SECRET, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "swarm", "secrets", "env", str(COMPILED), "--out", str(out)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    values = parse(out.read_text())
    assert len(values) >= 3
    for value in values.values():
        assert value not in result.stdout and value not in result.stderr
    assert str(out) in result.stdout


def test_a_spec_and_its_compiled_directory_give_the_same_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SWARM_REDIS_PASSWORD", "fixed-redis-password")
    _, from_compiled, _ = write_env(tmp_path / "a", monkeypatch, capsys, str(COMPILED))
    _, from_spec, _ = write_env(tmp_path / "b", monkeypatch, capsys, str(REPO / "specs"))
    assert from_compiled == from_spec and from_spec["SWARM_REDIS_PASSWORD"] == "fixed-redis-password"


def test_rewriting_its_own_file_keeps_the_redis_password_and_a_foreign_file_needs_force(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _, first, _ = write_env(tmp_path, monkeypatch, capsys, str(COMPILED))
    _, second, _ = write_env(tmp_path, monkeypatch, capsys, str(COMPILED))
    assert second["SWARM_REDIS_PASSWORD"] == first["SWARM_REDIS_PASSWORD"]  # a running Redis keeps working

    foreign = tmp_path / "research.env"
    foreign.write_text("MY_OWN=1\n")
    code, _, printed = write_env(tmp_path, monkeypatch, capsys, str(COMPILED))
    assert code == 2 and "not written by `swarm secrets env`" in printed and "--force" in printed
    assert foreign.read_text() == "MY_OWN=1\n"
    code, values, _ = write_env(tmp_path, monkeypatch, capsys, str(COMPILED), "--force")
    assert code == 0 and "MY_OWN" not in values and foreign.read_text().startswith(MARK)


def test_without_a_registry_secret_nothing_is_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "research.env"
    assert main(["secrets", "env", str(COMPILED), "--out", str(out)]) == 2
    assert "SWARM_REGISTRY_SECRET is not set" in capsys.readouterr().err
    assert not out.exists()


def test_secret_file_and_bus_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file\n")
    monkeypatch.setenv("SWARM_BUS_SECRET", "bus-key")
    out = tmp_path / "x.env"
    assert main(["secrets", "env", str(COMPILED), "--out", str(out), "--secret-file", str(secret_file)]) == 0
    values = parse(out.read_text())
    assert values["SWARM_REGISTRY_SECRET"] == "from-a-file"
    assert values["SWARM_BUS_SECRET"] == "bus-key"  # bus apply in compose derives the users' passwords from it
    expected = compose_env("research", [AgentEntry("architect", True)], registry_secret="from-a-file",
                           redis_password="x", bus_secret="bus-key")
    assert values["SWARM_BUS_PASSWORD_ARCHITECT"] == expected["SWARM_BUS_PASSWORD_ARCHITECT"]
    assert values["SWARM_AGENT_TOKEN_ARCHITECT"] == expected["SWARM_AGENT_TOKEN_ARCHITECT"]


def test_values_survive_the_file_format_or_are_refused() -> None:
    values = {"SWARM_REGISTRY_SECRET": "with space $HOME #hash", "SWARM_REDIS_PASSWORD": "a-b_c.d"}
    text = render("research", values)
    assert "SWARM_REGISTRY_SECRET='with space $HOME #hash'" in text  # single quotes: no interpolation
    assert parse(text) == values
    for bad in ("it's", "back\\slash", "new\nline"):
        with pytest.raises(InvalidRequestError):
            render("research", {"SWARM_REGISTRY_SECRET": bad})


def test_agents_outside_the_registry_get_no_token_and_names_follow_the_renderer() -> None:
    values = compose_env("s", [AgentEntry("watcher", registry=False)], registry_secret="k", redis_password="p")
    assert "SWARM_BUS_PASSWORD_WATCHER" in values and "SWARM_AGENT_TOKEN_WATCHER" not in values
    # one definition of the names, which the compose renderer uses too (see the compose test above)
    assert [env_suffix(a) for a in ("web-researcher", "a1-b2", "x")] == ["WEB_RESEARCHER", "A1_B2", "X"]


def test_the_default_file_is_per_environment_under_dot_swarm(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWARM_REGISTRY_SECRET", SECRET)
    assert main(["secrets", "env", str(REPO / "specs"), "--env", "staging"]) == 0
    out = tmp_path / ".swarm" / "research.staging.env"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and stat.S_IMODE(out.parent.stat().st_mode) == 0o700
    assert "compiled/research.staging/docker-compose.yml" in capsys.readouterr().out
    assert parse(out.read_text())["SWARM_REGISTRY_SECRET"] == SECRET
    assert main(["secrets", "env", str(COMPILED), "--env", "staging"]) == 2  # a compiled dir has no overlays
