"""The pure planner: ordering, prune gating, the mass-prune guard, wording, convergence."""

from __future__ import annotations

from swarm.desired import DesiredState
from swarm.reconcile.apply import apply_plan
from swarm.reconcile.plan import ActionKind, Plan, acl_changes, plan_actions
from swarm.reconcile.state import ActualState, LiveAgent, RegistryObservation, UserRights, observe
from tests.reconcile.fakes import FakeBus, FakeRegistry
from tests.reconcile.specdata import desired_from_docs, edit, example_docs, swarm_doc


def _actual(reg: FakeRegistry, bus: FakeBus, desired: DesiredState) -> ActualState:
    return observe(reg, bus, desired.bus)


def _converge(desired: DesiredState, reg: FakeRegistry, bus: FakeBus, *, prune: bool = False) -> Plan:
    plan = plan_actions(desired, _actual(reg, bus, desired), prune=prune)
    apply_plan(plan, desired, reg, bus, revision="r1")
    return plan


def test_empty_system_plans_creates_before_catalog_push() -> None:
    desired = desired_from_docs(example_docs())
    plan = plan_actions(desired, _actual(FakeRegistry(), FakeBus(), desired))
    kinds = [a.kind for a in plan.actions]
    assert kinds[-1] is ActionKind.PUSH_CATALOG
    assert kinds.count(ActionKind.CREATE_STREAM) == len(desired.bus.topics)
    assert kinds.count(ActionKind.PUT_REDIS_USER) == len(desired.bus.agents)
    first_push = kinds.index(ActionKind.PUSH_CATALOG)
    assert all(k is not ActionKind.PUSH_CATALOG for k in kinds[:first_push])
    assert kinds.count(ActionKind.CREATE_MAILBOX) == 2 * len(desired.bus.agents)
    texts = [a.description for a in plan.actions]
    assert "topic results.research: create its stream (the topic's log)" in texts
    assert "agent summarizer: create its outbox (read by the router)" in texts
    assert "agent summarizer: create its inbox (read by summarizer as group summarizer)" in texts
    assert not plan.held_back and plan.refused is None


def test_mailboxes_get_the_router_group_and_the_agents_own_group() -> None:
    desired = desired_from_docs(example_docs())
    reg, bus = FakeRegistry(), FakeBus()
    _converge(desired, reg, bus)
    assert bus.outboxes == {aid: {"router"} for aid in desired.bus.agents}
    assert bus.inboxes == {aid: {aid} for aid in desired.bus.agents}
    assert bus.groups == {} or all(not g for g in bus.groups.values())  # topic logs have no groups

    bus.outboxes["summarizer"].discard("router")  # XGROUP DESTROY by hand: the router would stop reading it
    del bus.inboxes["auditor"]
    plan = plan_actions(desired, _actual(reg, bus, desired))
    assert [(a.kind, a.target, a.box, a.group) for a in plan.actions] == [
        (ActionKind.CREATE_MAILBOX, "auditor", "inbox", "auditor"),
        (ActionKind.CREATE_MAILBOX, "summarizer", "outbox", "router"),
    ]
    assert plan.actions[1].description == (
        "agent summarizer: its outbox lost consumer group router; re-create it at id 0 (read by the router)"
    )


def test_legacy_groups_on_topic_streams_are_pruned_only_with_prune() -> None:
    desired = desired_from_docs(example_docs())
    reg, bus = FakeRegistry(), FakeBus()
    _converge(desired, reg, bus)
    bus.groups["tasks.research"] = {"summarizer"}  # the layout before the router
    plan = plan_actions(desired, _actual(reg, bus, desired))
    assert plan.empty
    assert [a.kind for a in plan.held_back] == [ActionKind.DELETE_GROUP]
    pruned = plan_actions(desired, _actual(reg, bus, desired), prune=True)
    assert [(a.kind, a.target, a.group) for a in pruned.actions] == [(ActionKind.DELETE_GROUP, "tasks.research", "summarizer")]


def test_a_removed_agents_mailboxes_go_only_with_prune() -> None:
    docs = example_docs()
    reg, bus = FakeRegistry(), FakeBus()
    _converge(desired_from_docs(docs), reg, bus)
    smaller = desired_from_docs([d for d in edit(docs) if d.get("id") != "reviewer"])
    plan = plan_actions(smaller, _actual(reg, bus, smaller))
    assert "agent reviewer: delete its outbox, inbox and receipts (no longer declared; messages not yet routed or read are lost)" in [
        a.description for a in plan.held_back]
    apply_plan(plan, smaller, reg, bus, revision="r2")
    assert "reviewer" in bus.outboxes and "reviewer" in bus.inboxes
    pruned = plan_actions(smaller, _actual(reg, bus, smaller), prune=True)
    apply_plan(pruned, smaller, reg, bus, revision="r2")
    assert "reviewer" not in bus.outboxes and "reviewer" not in bus.inboxes
    assert "delete-mailbox:reviewer" in bus.calls and "delete-user:reviewer" in bus.calls


def test_second_pass_is_empty() -> None:
    desired = desired_from_docs(example_docs())
    reg, bus = FakeRegistry(), FakeBus()
    first = _converge(desired, reg, bus)
    assert not first.empty
    second = plan_actions(desired, _actual(reg, bus, desired))
    assert second.empty, second.render()
    assert reg.pushes == 1


def test_acl_change_is_said_in_role_terms() -> None:
    docs = example_docs()
    before = desired_from_docs(docs)
    changed = edit(docs)
    swarm_doc(changed)["roles"]["worker"]["subscribe"] = ["tasks.research"]
    swarm_doc(changed)["roles"]["reviewer"]["publish"].append("results.summary")
    after = desired_from_docs(changed)
    lines = acl_changes(before.acl, after.acl)
    assert "role worker loses subscribe on tasks.summarize [default deny]" in lines
    assert "role reviewer gains publish on results.summary [publish: results.summary]" in lines
    assert not any("planner" in line for line in lines)


def test_removed_agent_is_held_back_without_prune_and_evicted_with_it() -> None:
    docs = example_docs()
    desired = desired_from_docs(docs)
    reg, bus = FakeRegistry(), FakeBus()
    _converge(desired, reg, bus)
    for aid in ("architect", "reviewer", "web-researcher"):
        reg.agents[aid] = LiveAgent(aid)
    smaller = [d for d in edit(docs) if d.get("id") != "reviewer"]
    desired2 = desired_from_docs(smaller)

    plan = plan_actions(desired2, _actual(reg, bus, desired2))
    held = [a.description for a in plan.held_back]
    assert "agent reviewer will be evicted: no longer declared" in held
    assert "agent reviewer: delete Redis user (no longer declared)" in held
    assert all(not a.prune for a in plan.actions)
    push = next(a for a in plan.actions if a.kind is ActionKind.PUSH_CATALOG)
    assert "agent reviewer is no longer declared: the registry will refuse it" in push.details

    pruned = plan_actions(desired2, _actual(reg, bus, desired2), prune=True)
    assert pruned.refused is None
    kinds = [a.kind for a in pruned.actions]
    assert kinds.index(ActionKind.PUSH_CATALOG) < kinds.index(ActionKind.EVICT_AGENT)
    assert kinds.index(ActionKind.EVICT_AGENT) < kinds.index(ActionKind.DELETE_REDIS_USER)
    apply_plan(pruned, desired2, reg, bus, revision="r2")
    assert "reviewer" not in reg.agents and "reviewer" not in bus.users
    assert plan_actions(desired2, _actual(reg, bus, desired2), prune=True).empty


def test_undeclared_registrations_stay_when_the_spec_allows_them() -> None:
    docs = example_docs()
    swarm_doc(docs)["registry"]["allow_undeclared"] = True
    desired = desired_from_docs(docs)
    reg, bus = FakeRegistry(), FakeBus()
    _converge(desired, reg, bus)
    reg.agents["visitor"] = LiveAgent("visitor")
    assert plan_actions(desired, _actual(reg, bus, desired), prune=True).empty


def test_mass_prune_is_refused_unless_forced() -> None:
    docs = example_docs()
    desired = desired_from_docs(docs)
    reg, bus = FakeRegistry(), FakeBus()
    _converge(desired, reg, bus)
    lean = edit(docs)
    lean = [d for d in lean if d["kind"] == "Swarm"]
    desired2 = desired_from_docs(lean)  # one agent left of six
    refused = plan_actions(desired2, _actual(reg, bus, desired2), prune=True)
    assert refused.refused is not None and "5 of 6 agents" in refused.refused
    forced = plan_actions(desired2, _actual(reg, bus, desired2), prune=True, force_prune=True)
    assert forced.refused is None
    assert sum(a.kind is ActionKind.DELETE_REDIS_USER for a in forced.actions) == 5


def test_removed_topic_needs_prune_and_a_dropped_subscriber_is_said() -> None:
    docs = example_docs()
    desired = desired_from_docs(docs)
    reg, bus = FakeRegistry(), FakeBus()
    _converge(desired, reg, bus)
    changed = edit(docs)
    sw = swarm_doc(changed)
    sw["topics"] = [t for t in sw["topics"] if t["name"] != "tasks.admin.reset"]
    auditor = next(d for d in changed if d.get("id") == "auditor")
    auditor["subscribes"].remove("reviews.verdict")
    desired2 = desired_from_docs(changed)
    plan = plan_actions(desired2, _actual(reg, bus, desired2), prune=True)
    texts = [a.description for a in plan.actions]
    assert "topic tasks.admin.reset will be deleted: no longer declared (its messages are lost)" in texts
    settings = next(a for a in plan.actions if a.kind is ActionKind.WRITE_BUS_SETTINGS)
    assert "topic reviews.verdict subscribers: architect, auditor -> architect" in settings.details
    # rights are declared AND permitted by the role: the auditor's shrink with its declaration
    user = next(a for a in plan.actions if a.kind is ActionKind.PUT_REDIS_USER and a.target == "auditor")
    assert user.details == ("loses subscribe on reviews.verdict",)


def test_hand_made_drift_is_planned_back() -> None:
    desired = desired_from_docs(example_docs())
    reg, bus = FakeRegistry(), FakeBus()
    _converge(desired, reg, bus)
    bus.acl = None
    bus.users["summarizer"] = UserRights(publish=frozenset({"tasks.admin.reset"}))
    plan = plan_actions(desired, _actual(reg, bus, desired))
    kinds = {a.kind for a in plan.actions}
    assert kinds == {ActionKind.WRITE_ACL_TABLE, ActionKind.PUT_REDIS_USER}
    user = next(a for a in plan.actions if a.kind is ActionKind.PUT_REDIS_USER)
    assert "loses publish on tasks.admin.reset" in user.details
    assert "gains publish on results.summary" in user.details


def test_render_and_json_agree() -> None:
    desired = desired_from_docs(example_docs())
    actual = ActualState(registry=RegistryObservation(catalog=None), bus=FakeBus().observe(desired.bus))
    plan = plan_actions(desired, actual)
    data = plan.to_dict()
    assert data["changes"] is True
    assert len(data["actions"]) == len(plan.actions)  # type: ignore[arg-type]
    assert plan.render().count("\n") >= len(plan.actions)
    assert "the registry has no catalog yet: 6 declared agent(s)" in plan.actions[-1].details


def test_never_declared_registration_is_drift_evicted_without_prune() -> None:
    desired = desired_from_docs(example_docs())
    reg, bus = FakeRegistry(), FakeBus()
    _converge(desired, reg, bus)
    reg.agents["ghost"] = LiveAgent("ghost")  # written by hand: the catalog never admitted it
    plan = plan_actions(desired, _actual(reg, bus, desired))
    assert [(a.kind, a.target) for a in plan.actions] == [(ActionKind.EVICT_AGENT, "ghost")]
    assert "never declared" in plan.actions[0].description and not plan.held_back
    assert plan.retired == frozenset()
    apply_plan(plan, desired, reg, bus, revision="r1")
    assert "ghost" not in reg.agents
    assert plan_actions(desired, _actual(reg, bus, desired)).empty


def test_removed_agent_stays_a_removal_after_the_smaller_catalog_is_pushed() -> None:
    docs = example_docs()
    desired = desired_from_docs(docs)
    reg, bus = FakeRegistry(), FakeBus()
    _converge(desired, reg, bus)
    reg.agents["reviewer"] = LiveAgent("reviewer")
    desired2 = desired_from_docs([d for d in edit(docs) if d.get("id") != "reviewer"])
    first = plan_actions(desired2, _actual(reg, bus, desired2))
    assert first.retired == {"reviewer"}
    apply_plan(first, desired2, reg, bus, revision="r2")  # the catalog no longer declares reviewer
    assert "reviewer" in reg.agents

    forgetful = plan_actions(desired2, _actual(reg, bus, desired2))
    assert any(a.target == "reviewer" for a in forgetful.actions), "without the memory it looks like drift"
    second = plan_actions(desired2, _actual(reg, bus, desired2), retired=first.retired)
    assert not second.actions and second.retired == {"reviewer"}
    assert "agent reviewer will be evicted: no longer declared" in [a.description for a in second.held_back]
    del reg.agents["reviewer"]  # its lease ran out: nothing to remember
    assert plan_actions(desired2, _actual(reg, bus, desired2), retired=first.retired).retired == frozenset()


def test_registrations_admitted_by_a_permissive_catalog_are_removals() -> None:
    docs = example_docs()
    swarm_doc(docs)["registry"]["allow_undeclared"] = True
    reg, bus = FakeRegistry(), FakeBus()
    _converge(desired_from_docs(docs), reg, bus)
    reg.agents["visitor"] = LiveAgent("visitor")
    strict = edit(docs)
    swarm_doc(strict)["registry"]["allow_undeclared"] = False
    desired2 = desired_from_docs(strict)
    plan = plan_actions(desired2, _actual(reg, bus, desired2))
    assert [a.target for a in plan.held_back] == ["visitor"] and plan.retired == {"visitor"}
    assert all(a.kind is not ActionKind.EVICT_AGENT for a in plan.actions)


def test_documents_say_which_agents_and_groups_change() -> None:
    docs = example_docs()
    desired = desired_from_docs(docs)
    reg, bus = FakeRegistry(), FakeBus()
    _converge(desired, reg, bus)
    desired2 = desired_from_docs([d for d in edit(docs) if d.get("id") != "reviewer"])
    plan = plan_actions(desired2, _actual(reg, bus, desired2))
    acl = next(a for a in plan.actions if a.kind is ActionKind.WRITE_ACL_TABLE)
    assert acl.details == ("agent reviewer leaves the table (no longer declared)",)
    settings = next(a for a in plan.actions if a.kind is ActionKind.WRITE_BUS_SETTINGS)
    assert "topic results.research subscribers: architect, auditor, reviewer -> architect, auditor" in settings.details
    assert "topic reviews.verdict publishers: reviewer -> (none)" in settings.details


def _empty(docs: list[dict[str, object]]) -> DesiredState:
    """The spec with every agent and topic gone (roles kept): what an empty render looks like."""
    sw = edit([d for d in docs if d["kind"] == "Swarm"])
    swarm_doc(sw)["agents"] = []
    swarm_doc(sw)["topics"] = []
    return desired_from_docs(sw)


def test_mass_removal_is_refused_without_prune_too() -> None:
    docs = example_docs()
    reg, bus = FakeRegistry(), FakeBus()
    _converge(desired_from_docs(docs), reg, bus)
    empty = _empty(docs)
    plan = plan_actions(empty, _actual(reg, bus, empty))  # no --prune: the ACL table and catalog would still empty
    assert plan.refused is not None
    assert "6 of 6 agents" in plan.refused and "--force-prune" in plan.refused
    forced = plan_actions(empty, _actual(reg, bus, empty), force_prune=True)
    assert forced.refused is None and all(not a.prune for a in forced.actions)
    apply_plan(forced, empty, reg, bus, revision="r2")
    assert reg.catalog is not None and not reg.catalog.agents


def test_topics_leaving_the_bus_settings_count_without_prune() -> None:
    docs = example_docs()
    reg, bus = FakeRegistry(), FakeBus()
    _converge(desired_from_docs(docs), reg, bus)
    few = edit(docs)
    keep = {"tasks.research", "results.research"}  # 4 of 6 topics go; every agent stays
    swarm_doc(few)["topics"] = [t for t in swarm_doc(few)["topics"] if t["name"] in keep]
    desired2 = desired_from_docs(few)
    plan = plan_actions(desired2, _actual(reg, bus, desired2))
    assert plan.refused is not None and "4 of 6 topics" in plan.refused
    one = edit(docs)  # one agent of six removed: not a mass removal
    desired3 = desired_from_docs([d for d in one if d.get("id") != "reviewer"])
    assert plan_actions(desired3, _actual(reg, bus, desired3)).refused is None


def test_render_of_only_held_back_deletions_does_not_claim_equality() -> None:
    docs = example_docs()
    reg, bus = FakeRegistry(), FakeBus()
    _converge(desired_from_docs(docs), reg, bus)
    desired2 = desired_from_docs([d for d in edit(docs) if d.get("id") != "reviewer"])
    apply_plan(plan_actions(desired2, _actual(reg, bus, desired2)), desired2, reg, bus, revision="r2")
    plan = plan_actions(desired2, _actual(reg, bus, desired2))
    assert plan.empty and plan.held_back
    text = plan.render()
    assert "equals the spec" not in text
    assert text.startswith(f"no changes to apply; {len(plan.held_back)} deletion(s) held back (run with --prune):")
    assert "agent reviewer: delete Redis user (no longer declared)" in text
    converged = plan_actions(desired2, _actual(reg, bus, desired2), prune=True)
    apply_plan(converged, desired2, reg, bus, revision="r3")
    assert plan_actions(desired2, _actual(reg, bus, desired2)).render() == "no changes: the live system equals the spec"


def test_a_big_plan_is_summarised_unless_full() -> None:
    desired = desired_from_docs(example_docs())
    plan = plan_actions(desired, _actual(FakeRegistry(), FakeBus(), desired))
    n = len(plan.actions)
    assert n > 10
    short = plan.render(limit=5)
    assert f"{n} action(s), in apply order:" in short
    kinds = {a.kind.value for a in plan.actions}
    by_kind = next(line for line in short.splitlines() if line.startswith("by kind: "))
    assert {part.rsplit(" ", 1)[0] for part in by_kind[len("by kind: "):].split(", ")} == kinds
    assert sum(int(part.rsplit(" ", 1)[1]) for part in by_kind[len("by kind: "):].split(", ")) == n
    assert f"... and {n - 5} more (--full lists every action)" in short
    assert "  6. " not in short and "  5. " in short
    full = plan.render(limit=None)
    assert f"{n:3}. " in full and "more (--full" not in full and "by kind" not in full


def test_a_big_status_is_summarised_unless_full() -> None:
    from swarm.reconcile.status import Applied, ReconcileStatus, Revision

    actions = [{"kind": "put-redis-user", "description": f"agent a{i}: write its Redis user"} for i in range(120)]
    actions += [{"kind": "push-catalog", "description": "push the catalog"}]
    status = ReconcileStatus(swarm="big", last_applied=Applied(revision=Revision(), digest="sha256:x", at="t",
                                                               trigger="file", actions=actions))
    short = status.render()
    assert "by kind: put-redis-user 120, push-catalog 1" in short
    assert "... and 71 more (--full lists them all)" in short
    assert len(short.splitlines()) < 60
    assert len(status.render(None).splitlines()) > 121


def test_documents_equal_but_for_the_digest_are_the_same_and_any_other_change_is_not() -> None:
    from swarm.reconcile.plan import _same, _strip

    desired = desired_from_docs(example_docs())
    for doc in (desired.acl, desired.bus):
        other = type(doc).model_validate_json(doc.model_dump_json()).model_copy(update={"spec_digest": "sha256:other"})
        assert _same(other, doc) and _strip(other) == _strip(doc)
        assert not _same(None, doc)
    first = sorted(desired.bus.agents)[0]
    moved = desired.bus.agents[first].model_copy(update={"inbox": "swarm:{research}:inbox:elsewhere"})
    changed = desired.bus.model_copy(update={"agents": {**desired.bus.agents, first: moved}})
    assert not _same(changed, desired.bus) and _strip(changed) != _strip(desired.bus)
