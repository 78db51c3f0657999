"""The reconciler against a real registry (uvicorn subprocess) and a real redis-server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from swarm.reconcile.loop import ReconcileConfig, Reconciler
from swarm.reconcile.observe import make_ports_factory
from swarm.reconcile.plan import ActionKind
from swarm.registry.auth import admin_token
from tests.reconcile.conftest import TEST_SECRET, run_cli
from tests.registry.conftest import RegistryProcess


def reconciler(live: RegistryProcess, spec_dir: Path, **options: Any) -> Reconciler:
    config = ReconcileConfig(spec_paths=[spec_dir], registry_url=live.url, redis_url=live.redis.url, **options)
    return Reconciler(config, make_ports_factory(admin_token(TEST_SECRET, "research"), TEST_SECRET))


def catalog_events(live: RegistryProcess) -> int:
    client: Any = live.redis.client(decode_responses=True)
    try:
        entries = client.xrange("swarm:{research}:events")
        return sum(1 for _id, fields in entries if "catalog-changed" in str(fields))
    finally:
        client.close()


def test_converges_then_second_pass_applies_nothing(live: RegistryProcess, spec_dir: Path) -> None:
    rec = reconciler(live, spec_dir)
    try:
        first = rec.run_pass("start")
        assert first.state == "synced", first.status
        assert first.applied[-1].kind is ActionKind.PUSH_CATALOG
        catalog = live.get("/catalog", timeout=5).json()
        assert sorted(catalog["catalog"]["agents"]) == [
            "architect", "auditor", "paper-researcher", "reviewer", "summarizer", "web-researcher"
        ]
        second = rec.run_pass("resync")
        assert second.state == "synced" and second.applied == []
        assert catalog_events(live) == 1
        status = live.get("/status", timeout=5).json()
        assert status["reconcile"]["state"] == "synced"
        assert status["reconcile"]["last_applied"]["digest"] == rec.good.digest  # type: ignore[union-attr]
    finally:
        rec.close()


def test_removed_agent_evicted_only_with_prune(live: RegistryProcess, spec_dir: Path) -> None:
    rec = reconciler(live, spec_dir)
    try:
        assert rec.run_pass("start").state == "synced"
        assert live.register("reviewer").status_code in (200, 201)
        review = spec_dir / "agents" / "review.yaml"
        review.write_text(review.read_text().split("---")[1].lstrip("\n"))  # keep only the auditor
        result = rec.run_pass("file")
        assert result.state == "synced"
        assert "agent reviewer will be evicted: no longer declared" in (result.status.held_back if result.status else [])
        assert live.get("/agents/reviewer", timeout=5).status_code == 200
    finally:
        rec.close()
    pruning = reconciler(live, spec_dir, prune=True)
    try:
        result = pruning.run_pass("file")
        assert result.state == "synced", result.status
        done = [a.description for a in result.applied]
        assert "agent reviewer will be evicted: no longer declared" in done
        assert live.get("/agents/reviewer", timeout=5).status_code == 404
        assert live.register("reviewer").status_code == 403, "the catalog no longer admits it"
    finally:
        pruning.close()


def test_removal_stays_held_back_across_passes_and_restarts(live: RegistryProcess, spec_dir: Path) -> None:
    """Once the smaller catalog is pushed the removed agent is no longer in it; it must not turn into drift."""
    rec = reconciler(live, spec_dir)
    try:
        assert rec.run_pass("start").state == "synced"
        assert live.register("reviewer").status_code in (200, 201)
        review = spec_dir / "agents" / "review.yaml"
        review.write_text(review.read_text().split("---")[1].lstrip("\n"))  # keep only the auditor
        assert rec.run_pass("file").state == "synced"
        again = rec.run_pass("resync")
        assert again.applied == [] and again.status is not None and again.status.retired_agents == ["reviewer"]
    finally:
        rec.close()
    restarted = reconciler(live, spec_dir)  # a new process: the memory comes from the status in Redis
    try:
        result = restarted.run_pass("start")
        assert result.state == "synced" and result.applied == []
        assert "agent reviewer will be evicted: no longer declared" in (result.status.held_back if result.status else [])
        assert live.get("/agents/reviewer", timeout=5).status_code == 200
    finally:
        restarted.close()
    plan = run_cli("plan", str(spec_dir), "--registry-url", live.url, "--redis-url", live.redis.url, cwd=spec_dir.parent)
    assert plan.returncode == 0, plan.stdout + plan.stderr  # a held-back deletion is not a pending change
    assert "held back" in plan.stdout and "agent reviewer will be evicted: no longer declared" in plan.stdout


def test_hand_made_registration_is_evicted_by_a_resync_without_prune(live: RegistryProcess, spec_dir: Path) -> None:
    rec = reconciler(live, spec_dir)
    client: Any = live.redis.client(decode_responses=True)
    try:
        assert rec.run_pass("start").state == "synced"
        assert live.register("architect").status_code in (200, 201)
        # a registration the registry would refuse (403), written around it as with redis-cli
        row = client.hgetall("swarm:{research}:agent:architect")
        row["doc"] = row["doc"].replace('"architect"', '"ghost"')
        client.hset("swarm:{research}:agent:ghost", mapping=row)
        client.zadd("swarm:{research}:leases", {"ghost": client.zscore("swarm:{research}:leases", "architect")})
        assert live.get("/agents/ghost", timeout=5).status_code == 200
        result = rec.run_pass("resync")
        assert result.state == "synced", result.status
        assert [a.target for a in result.applied if a.kind is ActionKind.EVICT_AGENT] == ["ghost"]
        assert result.status is not None and any("ghost" in d for d in result.status.drift)
        assert live.get("/agents/ghost", timeout=5).status_code == 404
        assert live.get("/agents/architect", timeout=5).status_code == 200
    finally:
        client.close()
        rec.close()


def test_status_says_what_the_next_pass_would_run(live: RegistryProcess, spec_dir: Path) -> None:
    """``pending``: unknown (None) when a pass could not plan, empty once a pass converged,
    and the planned actions when a pass stopped before applying them (here: refused)."""
    blind = Reconciler(
        ReconcileConfig(spec_paths=[spec_dir], registry_url=live.url, redis_url=live.redis.url),
        make_ports_factory(admin_token("not-the-secret", "research"), TEST_SECRET),
    )
    try:
        failed = blind.run_pass("start")
        assert failed.state == "error" and failed.status is not None and failed.status.pending is None
    finally:
        blind.close()
    rec = reconciler(live, spec_dir)
    try:
        assert rec.run_pass("start").state == "synced"
        assert live.get("/status", timeout=5).json()["reconcile"]["pending"] == []
        assert "next pass would run" not in (rec.status.render() if rec.status else "")
        for name in ("workers.yaml", "review.yaml"):  # five of six agents: a mass removal
            (spec_dir / "agents" / name).unlink()
        refused = rec.run_pass("file")
        assert refused.state == "refused", refused.status
        pending = live.get("/status", timeout=5).json()["reconcile"]["pending"]
        assert refused.plan is not None and pending == [a.description for a in refused.plan.actions] and pending
        assert "next pass would run:" in (rec.status.render() if rec.status else "")
    finally:
        rec.close()
