"""Incremental passes against a real redis-server and a real registry (uvicorn subprocess).

After each of many random valid edits (add or remove an agent, change a role's rule,
change an agent's topics, add or remove a topic) saved to the spec folder, a
watch-triggered pass (trigger ``file``) applies only the difference, without
observing: the registry port is never read during it, and a changed catalog goes
as PATCH /catalog. Then the full comparison a resync would make (every Redis user
read back whole, the catalog, registrations, streams, groups, documents) must find
nothing to do, and the registry's catalog digest must be the desired one: the
live state the incremental passes produced is the one a full pass produces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarm.acl import AclTable
from swarm.reconcile.loop import Ports, ReconcileConfig, Reconciler
from swarm.reconcile.observe import make_ports_factory
from swarm.reconcile.plan import plan_actions
from swarm.reconcile.state import observe
from swarm.registry.auth import admin_token
from swarm.registry.models import catalog_digest
from swarm.spec.models import SwarmDocument
from tests.reconcile.conftest import TEST_SECRET
from tests.reconcile.specdata import apply_edit, example_docs, swarm_doc
from tests.registry.conftest import RegistryFactory, RegistryProcess
from tests.support.services import RedisServer

TOPICS = ["tasks.research", "tasks.summarize", "results.research", "results.summary", "reviews.verdict"]
PATTERNS = ["results.*", "results.>", "tasks.*", "reviews.verdict", ">", "results.research", "extra.>"]
ROLES = ["worker", "reviewer", "observer", "planner"]


class CountingRegistry:
    """The real registry port, counting the calls a pass makes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return target(*args, **kwargs)
        return call


def _valid(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The docs with every agent's topics cut to those declared and permitted by its role."""
    sw = swarm_doc(docs)
    table = AclTable.from_spec_roles(SwarmDocument.model_validate(sw).roles)
    declared = {t["name"] for t in sw["topics"]}
    for d in [*sw.get("agents", []), *(d for d in docs if d["kind"] == "Agent")]:
        d["publishes"] = [t for t in d.get("publishes", []) if t in declared and table.can_publish(d["role"], t)]
        d["subscribes"] = [t for t in d.get("subscribes", []) if t in declared and table.can_subscribe(d["role"], t)]
    return docs


def _edit(docs: list[dict[str, Any]], op: tuple[Any, ...], n: int) -> list[dict[str, Any]]:
    return _valid(apply_edit(docs, op, n))


def _write(spec: Path, docs: list[dict[str, Any]]) -> None:
    """One file per document; only files whose bytes change are written (as an editor saves)."""
    want: dict[Path, str] = {}
    for d in docs:
        name = "swarm.yaml" if d["kind"] == "Swarm" else f"agents/{d['id']}.yaml"
        want[spec / name] = yaml.safe_dump(d, sort_keys=False)
    for old in spec.rglob("*.yaml"):
        if old not in want:
            old.unlink()
    for path, text in want.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


topic_lists = st.lists(st.sampled_from(TOPICS + ["extra.t0", "extra.t1"]), max_size=3, unique=True)
edits = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(ROLES), topic_lists, topic_lists),
    st.tuples(st.just("remove"), st.integers(0, 20)),
    st.tuples(st.just("rule"), st.sampled_from(["worker", "reviewer", "observer"]),
              st.sampled_from(["publish", "subscribe"]),
              st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=2, unique=True)),
    st.tuples(st.just("topics"), st.integers(0, 20), topic_lists),
    st.tuples(st.just("topic+"), st.integers(0, 1)),
    st.tuples(st.just("topic-"), st.integers(0, 1)),
)


@pytest.fixture
def world(registry_factory: RegistryFactory, redis_server: RedisServer, tmp_path: Path
          ) -> Iterator[tuple[RegistryProcess, Path, Reconciler, list[Ports]]]:
    # the registry runs its router: a pruned agent's streams must stay gone although the router
    # routes with the old plan until it reloads it (tests/bus/test_prune_race.py)
    live = registry_factory(redis_server, extra_args=["--no-probe"])
    spec = tmp_path / "spec"
    spec.mkdir()
    made: list[Ports] = []
    real = make_ports_factory(admin_token(TEST_SECRET, "research"), TEST_SECRET)

    def factory(desired: Any, config: ReconcileConfig) -> Ports:
        ports = real(desired, config)
        ports.registry = CountingRegistry(ports.registry)
        made.append(ports)
        return ports

    # --force-prune: each example starts from the example spec again, whatever the last one left
    config = ReconcileConfig(spec_paths=[spec], registry_url=live.url, redis_url=live.redis.url, prune=True,
                             force_prune=True, lease_ttl=0)
    rec = Reconciler(config, factory)
    yield live, spec, rec, made
    rec.close()


@pytest.mark.slow  # moved out of the quick suite (CI time budget)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(edits, min_size=1, max_size=8))
def test_incremental_passes_leave_what_a_full_pass_leaves(
    world: tuple[RegistryProcess, Path, Reconciler, list[Ports]], ops: list[tuple[Any, ...]]
) -> None:
    live, spec, rec, made = world
    docs = _valid(example_docs())
    _write(spec, docs)
    first = rec.run_pass("resync")  # a full comparison: back to the example spec
    assert first.state == "synced", first.status
    ports = made[-1]
    registry: Any = ports.registry
    for n, op in enumerate(ops):
        before_digest = rec.good.digest if rec.good else None
        docs = _edit(docs, op, n)
        _write(spec, docs)
        registry.calls.clear()
        result = rec.run_pass("file")
        assert result.state == "synced", (op, result.status.message if result.status else None)
        assert result.status is not None and result.status.pending == []  # nothing left for the next pass
        desired = rec.good.desired if rec.good else None
        assert desired is not None
        if rec.good is not None and rec.good.digest != before_digest:
            # incremental: the registry was not read (no observation), the catalog went as a patch
            assert "get_catalog" not in registry.calls and "list_agents" not in registry.calls, (op, registry.calls)
            assert "push_catalog" not in registry.calls, (op, registry.calls)
        # what the full comparison of a resync sees: nothing left to do
        seen = observe(ports.registry, ports.bus, desired.bus, None)
        plan = plan_actions(desired, seen, prune=True, force_prune=True)
        assert plan.empty, (op, [a.description for a in plan.actions])
        assert seen.registry.catalog is not None and catalog_digest(seen.registry.catalog) == catalog_digest(desired.registry)
        assert set(seen.bus.users) == set(desired.bus.agents) and set(seen.bus.inboxes) == set(desired.bus.agents)


def test_an_incremental_pass_re_reads_the_live_summary_without_listing_the_agents(
    world: tuple[RegistryProcess, Path, Reconciler, list[Ports]]
) -> None:
    """An agent that registers, and a breaker that opens, between two saves show in the status of
    the second, incremental, pass; at most once per ``live_refresh_seconds``."""
    import redis

    from swarm.keys import SwarmKeys

    live, spec, rec, made = world
    docs = _valid(example_docs())
    _write(spec, docs)
    first = rec.run_pass("resync")
    assert first.state == "synced" and first.status is not None and first.status.live is not None
    assert first.status.live.agents_live == 0 and first.status.live.breakers_open == []
    ids = sorted(rec.good.desired.registry.agents) if rec.good else []
    assert len(ids) >= 3
    assert live.register(ids[0]).status_code in (200, 201)
    client = redis.Redis.from_url(live.redis.url, decode_responses=True)
    try:
        client.hset(SwarmKeys("research").breaker(ids[1]), mapping={"state": "open"})
    finally:
        client.close()
    registry: Any = made[-1].registry
    rec.live_refresh_seconds = 0.0
    docs = _edit(docs, ("topic+", 0), 0)
    _write(spec, docs)
    registry.calls.clear()
    second = rec.run_pass("file")
    assert second.state == "synced" and second.status is not None and second.status.live is not None
    assert "list_agents" not in registry.calls and "get_catalog" not in registry.calls, registry.calls  # incremental
    assert "agent_counts" in registry.calls
    summary = second.status.live
    assert (summary.agents_live, summary.agents_expired, summary.breakers_open) == (1, 0, [ids[1]])
    assert summary.agents_declared == len(rec.good.desired.registry.agents) if rec.good else False
    assert summary.observed_at != first.status.live.observed_at
    # within the interval the figures are kept (only the declared count follows the spec)
    rec.live_refresh_seconds = 3600.0
    assert live.register(ids[2]).status_code in (200, 201)
    docs = _edit(docs, ("remove", 5), 1)
    _write(spec, docs)
    registry.calls.clear()
    third = rec.run_pass("file")
    assert third.state == "synced" and third.status is not None and third.status.live is not None
    assert "agent_counts" not in registry.calls
    assert third.status.live.agents_live == 1 and third.status.live.observed_at == summary.observed_at
    assert third.status.live.agents_declared == len(rec.good.desired.registry.agents) if rec.good else False
