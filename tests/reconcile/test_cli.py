"""``swarm plan``, ``swarm reconcile --once/--dry-run`` and ``swarm status`` as real subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

from tests.reconcile.conftest import run_cli
from tests.registry.conftest import RegistryProcess


def test_plan_reconcile_status_round_trip(live: RegistryProcess, spec_dir: Path, tmp_path: Path) -> None:
    urls = ["--registry-url", live.url, "--redis-url", live.redis.url]

    plan = run_cli("plan", str(spec_dir), *urls, "-o", "json", cwd=tmp_path)
    assert plan.returncode == 1, plan.stderr
    data = json.loads(plan.stdout)
    assert data["changes"] is True and data["actions"][-1]["kind"] == "push-catalog"

    dry = run_cli("reconcile", str(spec_dir), *urls, "--dry-run", cwd=tmp_path)
    assert dry.returncode == 1 and "push the registry catalog" in dry.stdout
    assert run_cli("plan", str(spec_dir), *urls, cwd=tmp_path).returncode == 1, "dry-run changed nothing"

    once = run_cli("reconcile", str(spec_dir), *urls, "--once", "--compiled-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert once.returncode == 0, once.stdout + once.stderr
    assert (tmp_path / "out" / "research" / "registry.json").is_file()
    same = run_cli("compile", str(spec_dir), "--out", str(tmp_path / "out"), "--check", cwd=tmp_path)
    assert same.returncode == 0, same.stdout + same.stderr  # written as `swarm compile` writes it

    again = run_cli("plan", str(spec_dir), *urls, cwd=tmp_path)
    assert again.returncode == 0 and "no changes" in again.stdout

    status = run_cli("status", str(spec_dir), *urls, "-o", "json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["state"] == "synced" and doc["live"]["agents_declared"] == 6
    assert doc["last_applied"]["revision"]["source"] == "working-tree"

    (spec_dir / "swarm.yaml").write_text((spec_dir / "swarm.yaml").read_text().replace("ttl_seconds: 30", "ttl_seconds: -1"))
    broken = run_cli("status", str(spec_dir), "--redis-url", live.redis.url, cwd=tmp_path)
    assert broken.returncode == 0, broken.stderr  # the status of the last pass, found without a valid spec
    assert broken.stdout.startswith("swarm research: synced")


def test_invalid_spec_exits_2_with_positions(live: RegistryProcess, spec_dir: Path, tmp_path: Path) -> None:
    (spec_dir / "agents" / "workers.yaml").write_text("apiVersion: swarm/v1\nkind: Agent\nid: x\nrole: nobody\nport: \"80\"\n")
    result = run_cli("plan", str(spec_dir), "--registry-url", live.url, "--redis-url", live.redis.url, cwd=tmp_path)
    assert result.returncode == 2
    assert "workers.yaml:5:" in result.stderr


def test_unreachable_registry_is_reported_not_a_traceback(spec_dir: Path, tmp_path: Path, redis_server: object) -> None:
    url = redis_server.url  # type: ignore[attr-defined]
    result = run_cli("reconcile", str(spec_dir), "--registry-url", "http://127.0.0.1:9", "--redis-url", url,
                     "--once", "--timeout", "0.5", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "waiting" in result.stdout + result.stderr
