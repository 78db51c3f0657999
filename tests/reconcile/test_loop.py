"""The reconcile pass with in-memory ports: invalid specs, drift, transient faults, refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from swarm.desired import DesiredState
from swarm.errors import RedisUnavailableError
from swarm.reconcile.loop import Ports, ReconcileConfig, Reconciler
from swarm.reconcile.state import LiveAgent
from swarm.reconcile.status import parse_status
from tests.reconcile.fakes import FakeBus, FakeRegistry
from tests.reconcile.specdata import REPO


class FakeStatus:
    def __init__(self) -> None:
        self.text: str | None = None
        self.applied_spec: str | None = None
        self.down = False

    def read_applied_spec(self) -> str | None:
        return self.applied_spec

    def write_applied_spec(self, text: str) -> None:
        if self.down:
            raise RedisUnavailableError("fake redis is down")
        self.applied_spec = text

    def read_status(self) -> str | None:
        return self.text

    history: list[dict[str, str]]
    pin: str | None = None

    def append_history(self, fields: dict[str, str]) -> None:
        self.__dict__.setdefault("history", []).append(fields)

    def read_pin(self) -> str | None:
        return self.pin

    def write_pin(self, text: str | None) -> None:
        self.pin = text

    def read_hook(self) -> str | None:
        return None

    def write_status(self, text: str) -> None:
        if self.down:
            raise RedisUnavailableError("fake redis is down")
        self.text = text


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    target = tmp_path / "specs"
    shutil.copytree(REPO / "specs", target)
    return target


class World:
    def __init__(self) -> None:
        self.registry = FakeRegistry()
        self.bus = FakeBus()
        self.status = FakeStatus()

    def factory(self, _desired: DesiredState, _config: ReconcileConfig) -> Ports:
        return Ports(registry=self.registry, bus=self.bus, status=self.status)


def _reconciler(spec_dir: Path, world: World, **options: object) -> Reconciler:
    return Reconciler(ReconcileConfig(spec_paths=[spec_dir], **options), world.factory)  # type: ignore[arg-type]


def test_pass_applies_then_is_idempotent(spec_dir: Path) -> None:
    world = World()
    rec = _reconciler(spec_dir, world)
    first = rec.run_pass("start")
    assert first.state == "synced" and first.applied
    second = rec.run_pass("resync")
    assert second.state == "synced" and second.applied == []
    status = parse_status(world.status.text)
    assert status is not None and status.state == "synced"
    assert status.last_applied is not None and status.last_applied.digest == rec.good.digest  # type: ignore[union-attr]
    assert world.registry.pushes == 1 and world.bus.calls.count("apply") == 1


def test_invalid_save_is_never_applied_and_last_good_stays_enforced(spec_dir: Path) -> None:
    world = World()
    rec = _reconciler(spec_dir, world)
    rec.run_pass("start")
    good_digest = rec.good.digest  # type: ignore[union-attr]
    pushed = world.registry.catalog
    (spec_dir / "agents" / "review.yaml").write_text("kind: Agent\nid: [unclosed\n")
    world.bus.acl = None  # hand-made drift while the spec is broken
    result = rec.run_pass("file")
    assert result.state == "invalid-spec"
    assert world.registry.catalog == pushed and world.registry.pushes == 1
    assert world.bus.acl is not None, "the last good ACL table was enforced again"
    status = parse_status(world.status.text)
    assert status is not None and status.last_error is not None
    assert status.last_error.kind == "spec"
    assert all(i["file"] and i["line"] for i in status.last_error.issues)
    assert status.last_applied is not None and status.last_applied.digest == good_digest
    assert status.last_attempted is not None and status.last_attempted.digest != good_digest


def test_transient_fault_waits_then_converges(spec_dir: Path) -> None:
    world = World()
    rec = _reconciler(spec_dir, world, backoff_initial=0.01)
    world.bus.down = True
    result = rec.run_pass("start")
    assert result.state == "waiting" and result.retry_in is not None
    assert rec.status is not None and "fake redis is down" in (rec.status.waiting_for or "")
    world.bus.down = False
    assert rec.run_pass("retry").state == "synced"
    assert rec.status.waiting_for is None and rec.status.last_error is None


def test_drift_is_recorded(spec_dir: Path) -> None:
    world = World()
    rec = _reconciler(spec_dir, world)
    rec.run_pass("start")
    world.bus.users.pop("summarizer")
    rec.run_pass("resync")
    status = parse_status(world.status.text)
    assert status is not None
    assert any("summarizer" in d for d in status.drift)


def test_mass_prune_refused_applies_nothing(spec_dir: Path) -> None:
    world = World()
    rec = _reconciler(spec_dir, world, prune=True)
    rec.run_pass("start")
    for aid in ("architect", "reviewer", "summarizer"):
        world.registry.agents[aid] = LiveAgent(aid)
    shutil.rmtree(spec_dir / "agents")
    (spec_dir / "agents").mkdir()
    pushes = world.registry.pushes
    result = rec.run_pass("file")
    assert result.state == "refused"
    assert world.registry.pushes == pushes and len(world.registry.agents) == 3
    status = parse_status(world.status.text)
    assert status is not None and status.last_error is not None and "--force-prune" in status.last_error.message


def test_restart_onto_an_invalid_spec_enforces_the_last_applied_one(spec_dir: Path) -> None:
    world = World()
    first = _reconciler(spec_dir, world)
    assert first.run_pass("start").state == "synced"
    good = first.good
    assert good is not None and world.status.applied_spec is not None
    first.close()

    workers = spec_dir / "agents" / "workers.yaml"
    fixed = workers.read_text()
    workers.write_text(fixed.replace("role: worker", "role: wroker", 1))
    world.bus.acl = None  # drift while no daemon runs
    pushes = world.registry.pushes
    restarted = Reconciler(ReconcileConfig(spec_paths=[spec_dir]), world.factory, lambda _name, _url: world.status)
    result = restarted.run_pass("start")
    assert result.state == "invalid-spec"
    assert restarted.good is not None and restarted.good.digest == good.digest
    assert world.bus.acl is not None, "the recovered spec is enforced: drift healed"
    assert world.registry.pushes == pushes
    status = parse_status(world.status.text)
    assert status is not None and "read back from Redis" in status.message
    assert status.last_applied is not None and status.last_applied.digest == good.digest
    assert status.last_error is not None and any(i["file"].endswith("workers.yaml") for i in status.last_error.issues)

    workers.write_text(fixed.replace("version: 1.2.0", "version: 1.3.0", 1))
    result = restarted.run_pass("file")
    assert result.state == "synced" and world.registry.pushes == pushes + 1
    assert restarted.good is not None and restarted.good.digest != good.digest
    assert "1.3.0" in (world.status.applied_spec or "")


def test_stored_spec_of_another_swarm_or_tampered_is_ignored(spec_dir: Path) -> None:
    from swarm.reconcile.loop import applied_spec_json, parse_applied_spec

    world = World()
    rec = _reconciler(spec_dir, world)
    rec.run_pass("start")
    assert rec.good is not None
    text = applied_spec_json(rec.good)
    assert parse_applied_spec(text, "research") is not None
    assert parse_applied_spec(text, "other") is None
    assert parse_applied_spec(text.replace("Architect", "Archie"), "research") is None  # digest mismatch
    assert parse_applied_spec("{not json", "research") is None and parse_applied_spec(None, "research") is None


def test_a_pass_that_changed_something_stores_its_spec_again(spec_dir: Path) -> None:
    world = World()
    rec = _reconciler(spec_dir, world)
    rec.run_pass("start")
    stored = world.status.applied_spec
    world.status.applied_spec = "written by another process"
    assert rec.run_pass("resync").applied == [] and world.status.applied_spec == "written by another process"
    world.registry.catalog = None  # that process's apply, undone by ours
    assert rec.run_pass("resync").applied
    assert world.status.applied_spec == stored


def test_dry_run_onto_an_invalid_spec_recovers_nothing(spec_dir: Path) -> None:
    world = World()
    _reconciler(spec_dir, world).run_pass("start")
    assert world.status.applied_spec is not None
    (spec_dir / "agents" / "review.yaml").write_text("kind: Agent\nid: [unclosed\n")
    dry = Reconciler(ReconcileConfig(spec_paths=[spec_dir], dry_run=True), world.factory, lambda _n, _u: world.status)
    result = dry.run_pass("once")
    assert result.state == "invalid-spec" and dry.good is None and result.plan is None


def test_a_registry_of_another_swarm_is_an_error_before_any_change(spec_dir: Path) -> None:
    from swarm.desired import RegistryCatalog

    world = World()
    mine = _reconciler(spec_dir, world)
    mine.run_pass("start")
    assert world.registry.catalog is not None
    world.registry.catalog = RegistryCatalog.model_validate({**world.registry.catalog.model_dump(), "swarm": "other"})
    world.registry.agents["someone"] = LiveAgent("someone")
    world.bus.calls.clear()
    world.registry.calls.clear()
    result = _reconciler(spec_dir, world, prune=True, force_prune=True).run_pass("start")
    assert result.state == "error" and not result.applied
    message = str(result.error)
    assert "'other'" in message and "'research'" in message
    assert world.bus.calls == [] and world.registry.calls == [] and "someone" in world.registry.agents
    status = parse_status(world.status.text)
    assert status is not None and status.last_error is not None and status.last_error.kind == "permanent"
