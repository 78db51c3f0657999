"""The in-process ``watch`` loop with in-memory ports: file events, resync, a bug in a pass, stop."""

from __future__ import annotations

import pytest
import asyncio
from pathlib import Path

from swarm.desired import DesiredState
from swarm.reconcile.loop import PassResult, Ports, ReconcileConfig, Reconciler
from tests.reconcile.fakes import FakeBus, FakeRegistry
from tests.reconcile.test_loop import FakeStatus
from tests.reconcile.test_watch import NEW_AGENT


class FlakyBus(FakeBus):
    """Raises a non-swarm exception once: a bug, not a fault."""

    bugs = 1

    def observe(self, bus, assumed_users=None):  # type: ignore[no-untyped-def]
        if self.bugs:
            self.bugs -= 1
            raise RuntimeError("boom")
        return super().observe(bus, assumed_users)


async def _until(results: list[PassResult], predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not any(predicate(r) for r in results):
        assert asyncio.get_running_loop().time() < deadline, [r.state for r in results]
        await asyncio.sleep(0.01)


async def test_watch_survives_a_bug_applies_saves_and_stops(spec_dir: Path) -> None:
    registry, bus, status = FakeRegistry(), FlakyBus(), FakeStatus()

    def factory(_d: DesiredState, _c: ReconcileConfig) -> Ports:
        return Ports(registry=registry, bus=bus, status=status)

    target = spec_dir / "agents" / "review.yaml"
    files = [spec_dir / "swarm.yaml", target, spec_dir / "agents" / "workers.yaml"]
    rec = Reconciler(ReconcileConfig(spec_paths=files, resync_seconds=0.2, backoff_initial=0.01), factory)
    assert rec.watch_paths() == [spec_dir.resolve()]
    results: list[PassResult] = []
    stop = asyncio.Event()
    task = asyncio.create_task(rec.watch(stop, on_pass=results.append))
    try:
        await _until(results, lambda r: r.state == "error")
        await _until(results, lambda r: r.state == "synced" and bool(r.applied))
        (spec_dir / "agents" / "unwatched.yaml").write_text("not: watched\n")
        target.write_text(target.read_text() + NEW_AGENT)
        await _until(results, lambda r: any("fact-checker" in a.description for a in r.applied))
        assert registry.catalog is not None and "fact-checker" in registry.catalog.agents
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    assert task.done() and task.exception() is None


def test_watch_filter_takes_exactly_the_files_the_spec_read_reads(spec_dir: Path, tmp_path: Path) -> None:
    """A folder and a file named together: saves in both count; in a folder the walk's rules apply."""
    named = tmp_path / "extra-spec.txt"  # a file named explicitly is read whatever its name
    named.write_text("")
    agents = spec_dir / "agents"
    rec = Reconciler(ReconcileConfig(spec_paths=[agents, named]), lambda _d, _c: Ports(FakeRegistry(), FakeBus(), FakeStatus()))
    keep = rec._watch_filter()
    assert keep(None, str(named))
    assert keep(None, str(agents / "review.yaml"))
    assert keep(None, str(agents / "deep" / "Extra.YML"))  # any case, as the walk reads it
    assert not keep(None, str(agents / ".hidden.yaml"))
    assert not keep(None, str(agents / ".git" / "x.yaml"))  # hidden folders are not walked
    assert not keep(None, str(agents / "notes.txt"))
    assert not keep(None, str(spec_dir / "swarm.yaml"))  # outside every path named
    assert not keep(None, str(tmp_path / "other.txt"))
