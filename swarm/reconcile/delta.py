"""Incremental passes: the plan from the last applied desired state to the new one, without observing.

Pure. The reconcile loop keeps the desired state its last converged pass applied
(in memory) and, on a watch-triggered pass, plans only what the spec change
touches: :func:`desired_delta` says which agents and topics changed, and
:func:`incremental_plan` turns that into the same kind of :class:`Plan` the full
diff (:func:`~swarm.reconcile.plan.plan_actions`) makes, with the same
descriptions:

* new topics get their stream; removed ones are deleted (``--prune``) or held back;
* new agents get their outbox and inbox; removed ones have their registration
  evicted, mailboxes and Redis user deleted (``--prune``) or held back;
* the agents touched are those added, with their rights or role changed, or of a
  role whose rules changed (an ACL rule change touches every agent of that role:
  its rights are derived again); a Redis user is written for those added and
  those whose rights came out different, as the full diff would;
* the ACL table and bus settings are rewritten when they differ beyond the spec digest;
* the catalog goes as a :class:`~swarm.desired.CatalogDelta` (PATCH /catalog).

It assumes the live system still equals the last applied state; the resync timer,
the first pass and any failure run the full comparison, which heals whatever
drifted meanwhile. :func:`incremental_plan` returns None where only the full
comparison can decide (a mass removal, which it refuses or confirms with what is live).
"""

from __future__ import annotations

from dataclasses import dataclass

from swarm.desired import CatalogDelta, DesiredState, agents_moved, catalog_delta
from swarm.reconcile.plan import (
    Action,
    Plan,
    _same,
    create_mailbox_action,
    create_redis_user_action,
    create_stream_action,
    delete_mailbox_action,
    delete_redis_user_action,
    delete_stream_action,
    evict_removed_action,
    in_order,
    mailboxes,
    push_catalog_action,
    rights_changes,
    update_redis_user_action,
    write_acl_table_action,
    write_bus_settings_action,
)


@dataclass(frozen=True)
class DesiredDelta:
    """What differs between two desired states of one swarm."""

    agents_added: frozenset[str]
    agents_removed: frozenset[str]
    #: agents whose Redis user is rewritten: added, rights or role changed, or of a role whose rules changed
    agents_touched: frozenset[str]
    topics_added: frozenset[str]
    topics_removed: frozenset[str]
    acl_changed: bool
    bus_changed: bool
    #: the catalog's change as a patch; None when only a whole push can express it
    catalog: CatalogDelta | None
    catalog_changed: bool
    #: the only agents whose entries may differ, when known (every agent was compared otherwise)
    maybe: frozenset[str] | None = None

    @property
    def empty(self) -> bool:
        return not (self.agents_added or self.agents_removed or self.agents_touched or self.topics_added
                    or self.topics_removed or self.acl_changed or self.bus_changed or self.catalog_changed)


def desired_delta(old: DesiredState, new: DesiredState, maybe: frozenset[str] | None = None) -> DesiredDelta:
    """The difference from ``old`` (last applied) to ``new``.

    ``maybe``: the only agents whose entries may differ (the desired memo knows them when it
    patched ``new`` from ``old``: :meth:`~swarm.desired.DesiredMemo.changed_since`); the other
    agents are then not compared at all, and a save that adds one agent to 10,000 compares one.
    Without it every agent is compared. The same delta either way (a hypothesis test keeps it so).
    """
    ob, nb, oa, na = old.bus.agents, new.bus.agents, old.acl.agents, new.acl.agents
    removed, added, rights_moved = agents_moved(ob, nb, maybe)
    # an agent of a role whose rules changed is re-derived; it is touched only when its rights
    # come out different (as the full diff rewrites only the users that differ)
    touched = set(added).union((aid for aid in rights_moved if ob[aid] != nb[aid]),
                               (aid for aid in agents_moved(oa, na, maybe)[2] if aid in ob and oa[aid] != na[aid]))
    catalog = catalog_delta(old.registry, new.registry, maybe)
    catalog_changed = catalog is None or not catalog.empty
    return DesiredDelta(
        agents_added=frozenset(added),
        agents_removed=frozenset(removed),
        agents_touched=frozenset(touched),
        topics_added=frozenset(new.bus.topics) - frozenset(old.bus.topics),
        topics_removed=frozenset(old.bus.topics) - frozenset(new.bus.topics),
        acl_changed=not _same(old.acl, new.acl),
        bus_changed=not _same(old.bus, new.bus),
        catalog=catalog,
        catalog_changed=catalog_changed,
        maybe=maybe,
    )


def incremental_plan(
    old: DesiredState,
    new: DesiredState,
    delta: DesiredDelta,
    *,
    prune: bool,
    users_managed: bool,
    retired: frozenset[str] = frozenset(),
) -> Plan | None:
    """The plan that takes a live system equal to ``old`` to ``new``; None when the full
    comparison must decide (more than half of the agents or topics removed: the full
    plan refuses that, or applies it with ``--force-prune``, looking at what is live)."""
    for gone, total in ((delta.agents_removed, old.bus.agents), (delta.topics_removed, old.bus.topics)):
        if gone and len(gone) * 2 > len(total):
            return None
    bus, acl, catalog = new.bus, new.acl, new.registry
    creates: list[Action] = []
    prunes: list[Action] = []
    for name in sorted(delta.topics_added):
        creates.append(create_stream_action(name))
    for aid in sorted(delta.agents_added):
        creates += [create_mailbox_action(aid, box, group, reader) for box, group, reader in mailboxes(aid)]
    if delta.acl_changed:
        creates.append(write_acl_table_action(old.acl, acl, bus.swarm, delta.maybe))
    if delta.bus_changed:
        creates.append(write_bus_settings_action(old.bus, bus))
    if users_managed:
        for aid in sorted(delta.agents_touched):
            rights, user = acl.agents[aid], bus.agents[aid].redis_user
            if aid in delta.agents_added:
                creates.append(create_redis_user_action(aid, user, rights.publish, rights.subscribe))
                continue
            was = old.acl.agents[aid]
            details = rights_changes(was.publish, was.subscribe, rights.publish, rights.subscribe)
            if was.role != rights.role:
                details.append(f"role {was.role} -> {rights.role}")
            creates.append(update_redis_user_action(aid, user, details))
    pushes: list[Action] = []
    if delta.catalog_changed:
        pushes.append(push_catalog_action(old.registry, catalog, delta.maybe))
    for aid in sorted(delta.agents_removed):
        prunes.append(evict_removed_action(aid))
        prunes.append(delete_mailbox_action(aid))
        if users_managed:
            prunes.append(delete_redis_user_action(aid))
    for name in sorted(delta.topics_removed):
        prunes.append(delete_stream_action(name))
    creates, prunes = in_order(creates), in_order(prunes)
    # removals stay removals (not strays) for the passes after this one, as plan_actions keeps them
    kept = (retired - frozenset(bus.agents)) | delta.agents_removed
    if not prune:
        return Plan(actions=tuple(creates + pushes), held_back=tuple(prunes), retired=kept)
    return Plan(actions=tuple(creates + pushes + prunes), retired=kept)
