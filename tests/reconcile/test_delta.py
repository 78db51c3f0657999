"""The pure incremental planner (swarm.reconcile.delta): what a save touches, and that applying
only that gives the live state a full observe-and-diff pass gives, after any sequence of edits.

Worlds are the in-memory fakes (this is the pure logic); the same comparison against a real
redis-server and a real registry is tests/reconcile/test_incremental_live.py.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.desired import CatalogDelta, DesiredState, patched_catalog
from swarm.reconcile.apply import CatalogPatch, apply_plan
from swarm.reconcile.delta import desired_delta, incremental_plan
from swarm.reconcile.plan import ActionKind, plan_actions
from swarm.reconcile.state import observe
from swarm.registry.models import catalog_digest
from tests.reconcile.fakes import FakeBus, FakeRegistry
from tests.reconcile.specdata import apply_edit, desired_from_docs, edit, example_docs, swarm_doc

TOPICS = ["tasks.research", "tasks.summarize", "tasks.admin.reset", "results.research", "results.summary",
          "reviews.verdict"]
PATTERNS = ["results.*", "results.>", "tasks.*", "reviews.verdict", ">", "results.research"]


@dataclass
class PatchingRegistry(FakeRegistry):
    """A fake registry that also takes PATCH /catalog (through the registry's own pure half)."""

    patches: list[str] = field(default_factory=list)

    def patch_catalog(self, delta: CatalogDelta, base_digest: str, digest: str, revision: str) -> None:
        assert self.catalog is not None and catalog_digest(self.catalog) == base_digest, "stale base"
        out, problems = patched_catalog(self.catalog, delta, lambda s: True)
        assert out is not None and not problems, problems
        assert catalog_digest(out) == digest, "the patch does not give the catalog it was made for"
        self.catalog = out
        self.patches.append(revision)


def _full(desired: DesiredState, reg: FakeRegistry, bus: FakeBus, prune: bool) -> None:
    plan = plan_actions(desired, observe(reg, bus, desired.bus), prune=prune)
    assert plan.refused is None
    apply_plan(plan, desired, reg, bus, revision="full")


def _incremental(old: DesiredState, new: DesiredState, reg: PatchingRegistry, bus: FakeBus, prune: bool) -> bool:
    delta = desired_delta(old, new)
    plan = incremental_plan(old, new, delta, prune=prune, users_managed=True)
    if plan is None:
        _full(new, reg, bus, prune)  # what the loop does: the full comparison decides
        return False
    patch = (CatalogPatch(delta.catalog, catalog_digest(old.registry), catalog_digest(new.registry))
             if delta.catalog is not None else None)
    apply_plan(plan, new, reg, bus, revision="incr", catalog_patch=patch)
    return True


def _live(reg: FakeRegistry, bus: FakeBus) -> tuple[Any, ...]:
    return (reg.catalog, sorted(bus.streams), bus.outboxes, bus.inboxes, bus.users, bus.acl, bus.settings)


_apply_edit = apply_edit


topic_lists = st.lists(st.sampled_from(TOPICS), max_size=3, unique=True)
edits = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(["worker", "reviewer", "observer", "planner"]), topic_lists, topic_lists),
    st.tuples(st.just("remove"), st.integers(0, 20)),
    st.tuples(st.just("rule"), st.sampled_from(["worker", "reviewer", "observer"]),
              st.sampled_from(["publish", "subscribe"]), st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=2,
                                                                   unique=True)),
    st.tuples(st.just("topics"), st.integers(0, 20), topic_lists),
    st.tuples(st.just("topic+"), st.integers(0, 3)),
    st.tuples(st.just("topic-"), st.integers(0, 3)),
)


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(edits, min_size=1, max_size=8), prune=st.booleans())
def test_incremental_passes_leave_what_full_passes_leave(ops: list[tuple[Any, ...]], prune: bool) -> None:
    docs = example_docs()
    start = desired_from_docs(docs)
    full_reg, full_bus = FakeRegistry(), FakeBus()
    inc_reg, inc_bus = PatchingRegistry(), FakeBus()
    _full(start, full_reg, full_bus, prune)
    _full(start, inc_reg, inc_bus, prune)
    last = start
    for n, op in enumerate(ops):
        docs = _apply_edit(docs, op, n)
        new = desired_from_docs(docs)
        _full(new, full_reg, full_bus, prune)
        _incremental(last, new, inc_reg, inc_bus, prune)
        assert _live(inc_reg, inc_bus) == _live(full_reg, full_bus), op
        last = new
    # and a full pass after the incremental ones finds nothing left to do
    after = plan_actions(last, observe(inc_reg, inc_bus, last.bus), prune=prune)
    assert after.empty, [a.description for a in after.actions]


def test_adding_an_agent_touches_only_that_agent() -> None:
    docs = example_docs()
    old = desired_from_docs(docs)
    docs.append({"apiVersion": "swarm/v1", "kind": "Agent", "id": "fact-checker", "role": "worker", "port": 8100,
                 "publishes": ["results.research"], "subscribes": ["tasks.research"]})
    new = desired_from_docs(docs)
    delta = desired_delta(old, new)
    assert delta.agents_added == {"fact-checker"} and delta.agents_touched == {"fact-checker"}
    assert not delta.agents_removed and old.acl.roles == new.acl.roles and not delta.topics_added
    assert delta.catalog is not None and [a.agent_id for a in delta.catalog.upsert] == ["fact-checker"]
    assert delta.catalog.remove == [] and delta.catalog.spec_digest == new.registry.spec_digest
    plan = incremental_plan(old, new, delta, prune=False, users_managed=True)
    assert plan is not None
    assert [(a.kind, a.target, a.box) for a in plan.actions] == [
        (ActionKind.CREATE_MAILBOX, "fact-checker", "outbox"),
        (ActionKind.CREATE_MAILBOX, "fact-checker", "inbox"),
        (ActionKind.WRITE_ACL_TABLE, "research", None),
        (ActionKind.WRITE_BUS_SETTINGS, "research", None),
        (ActionKind.PUT_REDIS_USER, "fact-checker", None),
        (ActionKind.PUSH_CATALOG, "research", None),
    ]
    assert "agent fact-checker is declared: role worker, version 0.1.0" in plan.actions[-1].details


def test_a_role_rule_change_touches_only_the_agents_of_that_role_whose_rights_change() -> None:
    docs = example_docs()
    old = desired_from_docs(docs)
    docs2 = edit(docs)
    swarm_doc(docs2)["roles"]["worker"]["publish"] = ["results.research"]  # narrower: summarizer loses its topic
    new = desired_from_docs(docs2)
    delta = desired_delta(old, new)
    workers = {aid for aid, a in new.bus.agents.items() if a.role == "worker"}
    assert old.acl.roles["worker"] != new.acl.roles["worker"] and delta.agents_touched == {"summarizer"}
    plan = incremental_plan(old, new, delta, prune=False, users_managed=True)
    assert plan is not None
    users = {a.target: a for a in plan.actions if a.kind is ActionKind.PUT_REDIS_USER}
    # every worker's rights are derived again; only the one whose rights change gets its user rewritten
    assert set(users) == {"summarizer"} and "summarizer" in workers and len(workers) > 1
    assert "loses publish on results.summary" in users["summarizer"].details
    # the catalog declares topics, not rights: only the spec digest changes there
    assert delta.catalog == CatalogDelta(spec_digest=new.registry.spec_digest)
    # without Redis users managed (no bus secret) none is written
    bare = incremental_plan(old, new, delta, prune=False, users_managed=False)
    assert bare is not None and not any(a.kind is ActionKind.PUT_REDIS_USER for a in bare.actions)


def test_removals_are_held_back_without_prune_and_a_mass_removal_is_left_to_the_full_pass() -> None:
    docs = example_docs()
    old = desired_from_docs(docs)
    fewer = [d for d in docs if not (d["kind"] == "Agent" and d["id"] == "auditor")]
    new = desired_from_docs(fewer)
    delta = desired_delta(old, new)
    assert delta.agents_removed == {"auditor"}
    held = incremental_plan(old, new, delta, prune=False, users_managed=True)
    assert held is not None and held.retired == {"auditor"}
    assert {(a.kind, a.target) for a in held.held_back} == {
        (ActionKind.EVICT_AGENT, "auditor"), (ActionKind.DELETE_MAILBOX, "auditor"),
        (ActionKind.DELETE_REDIS_USER, "auditor")}
    assert not any(a.prune for a in held.actions)
    pruned = incremental_plan(old, new, delta, prune=True, users_managed=True)
    assert pruned is not None and not pruned.held_back
    assert [a.kind for a in pruned.actions][-3:] == [ActionKind.EVICT_AGENT, ActionKind.DELETE_MAILBOX,
                                                     ActionKind.DELETE_REDIS_USER]
    nearly_none = [d for d in docs if d["kind"] != "Agent"]
    sw = swarm_doc(nearly_none)
    sw["agents"] = []
    gone = desired_from_docs(nearly_none)
    assert incremental_plan(old, gone, desired_delta(old, gone), prune=True, users_managed=True) is None


def test_nothing_changed_is_an_empty_delta() -> None:
    old = desired_from_docs(example_docs())
    same = copy.deepcopy(old)
    delta = desired_delta(old, same)
    assert delta.empty and not delta.catalog_changed
    plan = incremental_plan(old, same, delta, prune=True, users_managed=True)
    assert plan is not None and plan.empty


def test_desired_memo_and_the_document_cache_give_what_a_fresh_build_gives() -> None:
    """Reused agent pieces (same Agent objects from the parse cache) never change the result:
    not when an agent is added, nor when a role rule changes the rights of agents left unparsed."""
    from swarm.desired import DesiredMemo, desired_from_spec
    from swarm.spec.loader import DocumentCache, parse_spec_texts
    from tests.reconcile.specdata import REPO

    files = {p.relative_to(REPO).as_posix(): p.read_bytes()
             for p in [REPO / "specs/swarm.yaml", *sorted((REPO / "specs/agents").glob("*.yaml"))]}
    cache, memo = DocumentCache(), DesiredMemo()

    def both(fs: dict[str, bytes]) -> tuple[DesiredState, DesiredState]:
        loaded = parse_spec_texts(fs, None, cache=cache)
        fresh = parse_spec_texts(fs, None)
        return desired_from_spec(loaded.spec, loaded.digest, memo), desired_from_spec(fresh.spec, fresh.digest)

    a, b = both(files)
    assert a == b
    files["specs/agents/extra.yaml"] = (b"apiVersion: swarm/v1\nkind: Agent\nid: extra\nrole: worker\nport: 9999\n"
                                        b"publishes: [results.research]\nsubscribes: [tasks.research]\n")
    a, b = both(files)
    assert a == b and "extra" in a.bus.agents
    narrower = files["specs/swarm.yaml"].replace(b'subscribe: ["tasks.*"]', b'subscribe: ["tasks.research"]')
    assert narrower != files["specs/swarm.yaml"]
    files["specs/swarm.yaml"] = narrower
    files["specs/agents/workers.yaml"] = files["specs/agents/workers.yaml"].replace(
        b"subscribes: [tasks.summarize]", b"subscribes: [tasks.research]")
    a, b = both(files)
    assert a == b
    assert a.acl.agents["extra"].subscribe == ["tasks.research"]


class _Parsed:
    """Agent models kept by their document's content, as the parse cache hands back the very
    same objects for the files that did not change (what lets the memo patch its last result)."""

    def __init__(self) -> None:
        self.kept: dict[str, Any] = {}

    def spec(self, docs: list[dict[str, Any]]) -> Any:
        import json

        from swarm.spec.models import AgentDocument, Spec, SwarmDocument

        swarm = SwarmDocument.model_validate(swarm_doc(docs))
        agents = []
        for d in docs:
            if d["kind"] == "Agent":
                key = json.dumps(d, sort_keys=True)
                if key not in self.kept:
                    self.kept[key] = AgentDocument.model_validate(d).to_agent()
                agents.append(self.kept[key])
        return Spec(swarm=swarm, agents=[*swarm.agents, *agents])


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(edits, min_size=1, max_size=10), share=st.sampled_from([1, 8, 10**9]))
def test_a_patched_desired_state_is_the_one_built_afresh(ops: list[tuple[Any, ...]], share: int) -> None:
    """After any sequence of edits, the memo's result (patched from the last one when few agents
    changed, built afresh otherwise) equals a build without memo: same models, same JSON, same order;
    and the documents' JSON made from reused agent texts is byte for byte ``model_dump_json()``."""
    from swarm.desired import DesiredMemo, desired_from_spec

    from swarm.desired import AgentsDocumentText

    memo, parsed = DesiredMemo(), _Parsed()
    bus_text, acl_text, catalog_text = AgentsDocumentText(), AgentsDocumentText(), AgentsDocumentText()
    # 1: patch even when every agent changed (the patch alone must be right); 10**9: never patch
    # (the walk over every agent, reusing the last build's pieces, must be right too)
    memo.PATCH_SHARE = share
    docs = example_docs()
    patched = hinted = 0
    prev: DesiredState | None = None
    for n, op in enumerate([("topics", 0, [])] + ops):
        docs = _apply_edit(docs, op, n)
        spec = parsed.spec(docs)
        before = memo._last
        got = desired_from_spec(spec, f"digest-{n}", memo)
        want = desired_from_spec(spec, f"digest-{n}")
        if prev is not None:
            # the delta from the memo's hint (only the agents it may have changed compared) is the
            # delta that compares every agent, and so is the plan made of it, word for word
            maybe = memo.changed_since(prev, got)
            hinted += maybe is not None
            full, quick = desired_delta(prev, got), desired_delta(prev, got, maybe)
            assert dataclasses.replace(quick, maybe=None) == full, op
            assert incremental_plan(prev, got, quick, prune=True, users_managed=True) == \
                incremental_plan(prev, got, full, prune=True, users_managed=True), op
        assert memo.changed_since(want, got) is None  # a hint holds only for the pair it was made for
        prev = got
        patched += before is not None and got.registry is not before.state.registry and \
            got.acl.table is before.state.acl.table
        assert got == want, op
        assert got.model_dump_json() == want.model_dump_json(), op
        # bus.json and acl.json as the reconciler writes them: agent texts reused, same bytes
        assert bus_text.text(got.bus) == want.bus.model_dump_json() and acl_text.text(got.acl) == want.acl.model_dump_json()
        assert catalog_text.text(got.registry) == want.registry.model_dump_json()  # GET /catalog's body
    assert patched or share > 8 or all(op[0] in ("rule", "topic+", "topic-") for op in ops)
    assert hinted or share > 8 or all(op[0] in ("rule", "topic+", "topic-") for op in ops)


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(edits, min_size=1, max_size=6))
def test_same_answers_what_comparing_the_dumps_answers(ops: list[tuple[Any, ...]]) -> None:
    # _same compares field by field without dumping; its answer must be the dumps' one,
    # for documents that differ (random edits) and for equal ones built apart (no shared entries)
    from swarm.reconcile.plan import _same, _strip

    docs = example_docs()
    last = desired_from_docs(docs)
    for n, op in enumerate(ops):
        docs = _apply_edit(docs, op, n)
        new = desired_from_docs(docs)
        again = desired_from_docs(docs)
        for old_doc, new_doc, twin in ((last.acl, new.acl, again.acl), (last.bus, new.bus, again.bus)):
            assert _same(old_doc, new_doc) == (_strip(old_doc) == _strip(new_doc)), op
            assert _same(new_doc, twin) and _same(twin, new_doc)
        last = new
