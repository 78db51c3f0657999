"""``swarm plan``, ``swarm reconcile --once/--dry-run`` and ``swarm status`` as real subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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

    assert "spec differs" not in run_cli("status", str(spec_dir), *urls, cwd=tmp_path).stdout
    original = (spec_dir / "swarm.yaml").read_text()
    (spec_dir / "swarm.yaml").write_text(original.replace("ttl_seconds: 30", "ttl_seconds: 40"))
    edited = run_cli("status", str(spec_dir), *urls, cwd=tmp_path)
    assert edited.returncode == 1, edited.stdout + edited.stderr  # synced, but not with this spec
    assert "spec differs from the applied one (not yet applied)" in edited.stdout
    assert json.loads(run_cli("status", str(spec_dir), *urls, "-o", "json", cwd=tmp_path).stdout)["given_spec"]["applied"] is False

    (spec_dir / "swarm.yaml").write_text(original.replace("ttl_seconds: 30", "ttl_seconds: -1"))
    broken = run_cli("status", str(spec_dir), "--redis-url", live.redis.url, cwd=tmp_path)
    assert broken.returncode == 2, broken.stdout + broken.stderr  # invalid spec: its issues, then the last pass's status
    assert broken.stdout.startswith("swarm research: synced")
    assert "the given spec is invalid" in broken.stdout
    assert "the given spec is invalid (1 error(s))" in broken.stderr
    assert "swarm.yaml:11:" in broken.stderr, broken.stderr  # with its position

    down = run_cli("status", str(spec_dir), "--redis-url", "redis://127.0.0.1:9/0", cwd=tmp_path)
    assert down.returncode == 2 and "swarm.yaml:11:" in down.stderr, down.stderr  # Redis down: the spec issues still show


def test_plan_from_the_desired_cache_is_the_plan_of_a_fresh_load(live: RegistryProcess, spec_dir: Path,
                                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from swarm.spec.index import cache_subdir

    urls = ["--registry-url", live.url, "--redis-url", live.redis.url]
    folder = cache_subdir("desired")
    assert folder is not None
    with monkeypatch.context() as off:
        off.setenv("SWARM_CACHE_DIR", "")
        fresh = run_cli("plan", str(spec_dir), *urls, "-o", "json", cwd=tmp_path)
    assert fresh.returncode == 1, fresh.stderr
    assert json.loads(fresh.stdout)["actions"], "a plan with actions to compare"
    assert not folder.exists(), "SWARM_CACHE_DIR='' wrote nothing"
    miss = run_cli("plan", str(spec_dir), *urls, "-o", "json", cwd=tmp_path)
    assert len(list(folder.glob("*.json"))) == 1, "the first plan keeps the desired state"
    hit = run_cli("plan", str(spec_dir), *urls, "-o", "json", cwd=tmp_path)
    assert (miss.returncode, hit.returncode) == (1, 1), miss.stderr + hit.stderr
    assert miss.stdout == fresh.stdout and hit.stdout == fresh.stdout


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


EMPTY_SPEC = """apiVersion: swarm/v1
kind: Swarm
metadata: {name: research}
registry: {url: "http://127.0.0.1:8700", ttl_seconds: 30}
bus: {redis_url: "redis://127.0.0.1:6379/0"}
"""


def test_empty_spec_is_refused_without_force_prune(live: RegistryProcess, spec_dir: Path, tmp_path: Path) -> None:
    import httpx

    urls = ["--registry-url", live.url, "--redis-url", live.redis.url, "--compiled-dir", ""]
    first = run_cli("reconcile", str(spec_dir), *urls, "--once", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    empty = tmp_path / "empty.yaml"
    empty.write_text(EMPTY_SPEC)

    refused = run_cli("reconcile", str(empty), *urls, "--once", "-o", "json", cwd=tmp_path)  # no --prune either
    assert refused.returncode == 1, refused.stdout + refused.stderr
    doc = json.loads(refused.stdout)
    assert doc["state"] == "refused" and doc["applied"] == []
    assert "6 of 6 agents" in doc["status"]["last_error"]["message"] and "--force-prune" in doc["status"]["message"]
    catalog = live.get("/catalog", timeout=5).json()["catalog"]
    assert len(catalog["agents"]) == 6, "nothing was applied"
    status = json.loads(run_cli("status", str(spec_dir), "--redis-url", live.redis.url, "-o", "json", cwd=tmp_path).stdout)
    assert status["state"] == "refused"

    forced = run_cli("reconcile", str(empty), *urls, "--once", "--force-prune", cwd=tmp_path)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert live.get("/catalog", timeout=5).json()["catalog"]["agents"] == {}


def test_up_passes_force_prune_to_the_watch_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    import swarm.reconcile.up as up
    from swarm.cli import main

    seen: list[up.UpOptions] = []
    monkeypatch.setattr(up, "run_up", lambda options: seen.append(options) or 0)
    assert main(["up", "specs", "--prune", "--force-prune"]) == 0
    assert seen[0].prune and seen[0].force_prune
    assert main(["up", "specs"]) == 0 and not seen[1].force_prune
