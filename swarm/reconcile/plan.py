"""The reconcile plan: a pure diff from desired and actual state to ordered, typed actions.

Called by ``swarm plan`` (to print), by the reconcile loop (to apply) and again
after applying (to verify: the plan of a converged system is empty). Pure — no
I/O — so every decision about *what* changes, in *which order*, and *what needs
``--prune``* is tested with literals (tests/reconcile/test_plan.py).

Order (and why):

1. **bus creations** — topic streams (the router's log of each topic; no
   consumer groups), every agent's outbox with the router's consumer group
   ``router`` and its inbox with its own group ``<id>`` (both at id 0, so nothing
   written before the group is skipped), the ACL table, bus settings and Redis
   ACL users. An agent may register the moment the catalog admits it and start
   publishing at once; its mailboxes and credentials must be there.
2. **catalog push** — the registry now admits new agents and refuses removed ones.
3. **prunes** (only with ``--prune``) — evict registrations, then delete consumer
   groups, streams, mailboxes and Redis users. They come last so a removed agent
   is refused by the catalog before its live objects disappear.

Deleting live things (registrations, consumer groups, streams, mailboxes, Redis users) is
never planned without ``prune=True``; such actions are returned as ``held_back``
so ``plan``/``status`` can say what ``--prune`` would do.

A registration the spec does not declare (while ``allow_undeclared`` is false)
is one of two things, and only one of them is a deletion:

* a **removal** — the agent was admitted by the live catalog (it declares the
  agent, allows undeclared agents, or there is none to ask), or an earlier pass
  already classified it so (``retired``, kept in status across passes and
  restarts): the user removed it from the spec; evicting it needs ``--prune``;
* a **stray** — no catalog this swarm ever pushed admitted it, so the registry
  itself would refuse it (403): hand-made drift, evicted by any pass (the
  resync timer heals it) like a deleted ACL key is written back.

The classification sticks: :attr:`Plan.retired` lists the removals, the caller
stores them and passes them back as ``retired`` — otherwise the pass that pushes
the smaller catalog would turn a held-back removal into a stray for the next one.

A plan that would remove more than half of the live agents (in the live ACL
table or catalog, registered or holding a Redis user) or of the live topics (in
the bus settings or with a stream) is refused — the whole pass is, nothing is
applied — unless ``force_prune=True``. This holds with or without ``prune``:
without it, registrations, streams and Redis users stay, but the ACL table and
catalog written would already refuse every removed agent. An empty render once
pruned whole Argo CD applications (hence ``allowEmpty``); a spec that suddenly
declares almost nothing is a mistake until proven otherwise.

Descriptions speak the user's terms, including what an ACL change means:
"role worker gains publish on results.summary", "agent reviewer will be evicted:
no longer declared", "agent x: create its outbox (read by the router)",
"agent x: Redis user swarm.research.x differs from the spec (rules changed by
hand); re-apply" (a user read back whole that is not exactly ``user_rules``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Collection, Iterable

from pydantic import BaseModel

from swarm.acl import ACTIONS
from swarm.desired import AclDocument, BusPlan, DesiredState, RegistryCatalog, agents_moved
from swarm.keys import ROUTER_GROUP
from swarm.reconcile.state import ActualState, UserRights
from swarm.reconcile.status import SUMMARY_LIMIT, count_kinds


class ActionKind(str, Enum):
    """What an action does; the value is its stable JSON name."""

    CREATE_STREAM = "create-stream"
    CREATE_MAILBOX = "create-mailbox"
    WRITE_ACL_TABLE = "write-acl-table"
    WRITE_BUS_SETTINGS = "write-bus-settings"
    PUT_REDIS_USER = "put-redis-user"
    DELETE_LEGACY_USER = "delete-legacy-user"
    PUSH_CATALOG = "push-catalog"
    EVICT_AGENT = "evict-agent"
    DELETE_GROUP = "delete-group"
    DELETE_STREAM = "delete-stream"
    DELETE_MAILBOX = "delete-mailbox"
    DELETE_REDIS_USER = "delete-redis-user"


#: Apply order; see the module docstring for why.
ORDER: tuple[ActionKind, ...] = tuple(ActionKind)
BUS_CREATES = frozenset(
    {
        ActionKind.CREATE_STREAM,
        ActionKind.CREATE_MAILBOX,
        ActionKind.WRITE_ACL_TABLE,
        ActionKind.WRITE_BUS_SETTINGS,
        ActionKind.PUT_REDIS_USER,
    }
)
PRUNES = frozenset(
    {
        ActionKind.EVICT_AGENT,
        ActionKind.DELETE_GROUP,
        ActionKind.DELETE_STREAM,
        ActionKind.DELETE_MAILBOX,
        ActionKind.DELETE_REDIS_USER,
    }
)


@dataclass(frozen=True)
class Action:
    """One step of a plan. ``target`` names the object; ``details`` explain the change."""

    kind: ActionKind
    target: str
    description: str
    details: tuple[str, ...] = ()
    group: str | None = None  # consumer group, for group and mailbox actions
    box: str | None = None  # "outbox" | "inbox", for create-mailbox

    @property
    def prune(self) -> bool:
        return self.kind in PRUNES

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "kind": self.kind.value,
            "target": self.target,
            "description": self.description,
            "details": list(self.details),
        }
        if self.group is not None:
            out["group"] = self.group
        if self.box is not None:
            out["box"] = self.box
        return out

    def lines(self) -> list[str]:
        return [self.description, *(f"  - {d}" for d in self.details)]


@dataclass(frozen=True)
class Plan:
    """Ordered actions, prunes held back for lack of ``--prune``, and a refusal if any."""

    actions: tuple[Action, ...]
    held_back: tuple[Action, ...] = ()
    refused: str | None = None
    retired: frozenset[str] = frozenset()  # registered agents removed from the spec (evicted only with prune)

    @property
    def empty(self) -> bool:
        return not self.actions

    def to_dict(self) -> dict[str, object]:
        return {
            "changes": not self.empty,
            "actions": [a.to_dict() for a in self.actions],
            "held_back": [a.to_dict() for a in self.held_back],
            "refused": self.refused,
        }

    def render(self, limit: int | None = SUMMARY_LIMIT) -> str:
        """Human text, one action per line in apply order; past ``limit`` actions (None: no
        limit), the counts per kind of action first and only the first ``limit`` listed."""
        out: list[str] = []
        if self.refused:
            out.append(f"REFUSED: {self.refused}")
        if self.actions:
            out.append(f"{len(self.actions)} action(s), in apply order:")
            shown = self.actions if limit is None else self.actions[:limit]
            if len(shown) < len(self.actions):
                out.insert(-1, "by kind: " + count_kinds(a.kind.value for a in self.actions))
            for i, a in enumerate(shown, 1):
                first, *rest = a.lines()
                out.append(f"{i:3}. {first}")
                out.extend(f"     {line}" for line in rest)
            if len(shown) < len(self.actions):
                out.append(f"     ... and {len(self.actions) - len(shown)} more (--full lists every action)")
        elif self.held_back:
            out.append(f"no changes to apply; {len(self.held_back)} deletion(s) held back (run with --prune):")
        else:
            out.append("no changes: the live system equals the spec")
        if self.held_back and self.actions:
            out.append(f"{len(self.held_back)} deletion(s) held back (run with --prune to apply):")
        if self.held_back:
            held = self.held_back if limit is None else self.held_back[:limit]
            out.extend(f"   - {a.description}" for a in held)
            if len(held) < len(self.held_back):
                out.append(f"   ... and {len(self.held_back) - len(held)} more (--full lists them)")
        return "\n".join(out)


def _fmt(values: Iterable[str]) -> str:
    items = sorted(values)
    return ", ".join(items) if items else "(none)"


def acl_changes(old: AclDocument | None, new: AclDocument, maybe: Collection[str] | None = None) -> list[str]:
    """What the ACL change means, per role and declared topic, in words (``maybe``: the only
    agents whose entries may differ; every agent is compared without it)."""
    if old is None:
        return [
            f"role {name}: publish {_fmt(r.topic for r in new.table if r.role == name and r.publish.allow)}; "
            f"subscribe {_fmt(r.topic for r in new.table if r.role == name and r.subscribe.allow)}"
            for name in sorted(new.roles)
        ]
    out: list[str] = []
    for name in sorted(set(old.roles) - set(new.roles)):
        out.append(f"role {name} is removed")
    for name in sorted(set(new.roles) - set(old.roles)):
        out.append(f"role {name} is added")
    before = {(r.role, r.topic): r for r in old.table}
    after = {(r.role, r.topic): r for r in new.table}
    old_topics = {t for _, t in before}
    new_topics = {t for _, t in after}
    for role, topic in sorted(set(before) | set(after)):
        b, a = before.get((role, topic)), after.get((role, topic))
        for action in ACTIONS:
            was = b is not None and getattr(b, action).allow
            now = a is not None and getattr(a, action).allow
            if was == now:
                continue
            if now:
                why = getattr(a, action).rule if a is not None else ""
                suffix = " (new topic)" if topic not in old_topics else ""
                out.append(f"role {role} gains {action} on {topic}{suffix} [{why}]")
            else:
                if topic not in new_topics:
                    out.append(f"role {role} loses {action} on {topic} (topic removed)")
                else:
                    why = getattr(a, action).rule if a is not None else "role removed"
                    out.append(f"role {role} loses {action} on {topic} [{why}]")
    left, joined, other = agents_moved(old.agents, new.agents, maybe)
    for aid in left:
        out.append(f"agent {aid} leaves the table (no longer declared)")
    for aid in joined:
        out.append(f"agent {aid} joins the table as role {new.agents[aid].role}")
    for aid in other:
        if old.agents[aid].role != new.agents[aid].role:
            out.append(f"agent {aid}: role {old.agents[aid].role} -> {new.agents[aid].role}")
    if not out and old.roles != new.roles:
        out.append("role rules are rewritten; no decision on a declared topic changes")
    return out


def _catalog_changes(old: RegistryCatalog | None, new: RegistryCatalog, maybe: Collection[str] | None = None
                     ) -> list[str]:
    if old is None:
        return [f"the registry has no catalog yet: {len(new.agents)} declared agent(s)"]
    out: list[str] = []
    gone, declared, other = agents_moved(old.agents, new.agents, maybe)
    for aid in declared:
        a = new.agents[aid]
        out.append(f"agent {aid} is declared: role {a.role}, version {a.version}")
    for aid in gone:
        out.append(f"agent {aid} is no longer declared: the registry will refuse it")
    for aid in other:  # not the very same entry (the desired memo reuses those)
        o, n = old.agents[aid].model_dump(), new.agents[aid].model_dump()
        changed = [f"{k} {o[k]!r} -> {n[k]!r}" for k in sorted(n) if o.get(k) != n[k]]
        if changed:
            out.append(f"agent {aid} changes: " + "; ".join(changed))
    os_, ns = old.settings.model_dump(), new.settings.model_dump()
    for k in sorted(ns):
        if os_.get(k) != ns[k]:
            out.append(f"registry setting {k}: {os_.get(k)!r} -> {ns[k]!r}")
    if not out and old.spec_digest != new.spec_digest:
        out.append(f"spec digest {old.spec_digest[:12]} -> {new.spec_digest[:12]}")
    return out


def desired_user_rights(desired: DesiredState) -> dict[str, UserRights]:
    """Per agent, the declared topics its role may publish / subscribe to (Redis user keys)."""
    return {
        aid: UserRights(publish=frozenset(a.publish), subscribe=frozenset(a.subscribe))
        for aid, a in desired.acl.agents.items()
    }


#: What a differing ACL GETUSER field of a Redis user means (UserRights.differs).
_USER_FIELDS = {
    "password": "its password is not the one derived from the bus secret",
    "commands": "its command rules differ from what swarm writes",
    "categories": "its command categories differ from what swarm writes",
    "keys": "its key patterns differ from what swarm writes",
    "channels": "its Pub/Sub channel rules differ from what swarm writes",
    "selectors": "its selectors (per-key command rules) differ from what swarm writes",
    "flags": "its flags differ from what swarm writes",
}


def _user_drift(differs: frozenset[str]) -> list[str]:
    """Details of a Redis user's non-topic differences, in words."""
    out = [_USER_FIELDS.get(name, f"its {name} differ from what swarm writes") for name in sorted(differs)]
    if differs - {"password"}:
        out.append("(edited by hand, or written by another swarm version)")
    return out


def _settings_changed(old: BusPlan | None, new: BusPlan) -> list[str]:
    if old is None:
        return ["bus settings are not in Redis yet"]
    o, n = old.settings.model_dump(), new.settings.model_dump()
    out = [f"bus setting {k}: {o.get(k)!r} -> {n[k]!r}" for k in sorted(n) if o.get(k) != n[k]]
    ot, nt = old.topics, new.topics
    out += [f"topic {name} is added" for name in sorted(set(nt) - set(ot))]
    out += [f"topic {name} is removed" for name in sorted(set(ot) - set(nt))]
    for name in sorted(set(nt) & set(ot)):
        for k in ("max_len", "dedup_window_seconds"):
            if getattr(ot[name], k) != getattr(nt[name], k):
                out.append(f"topic {name} {k}: {getattr(ot[name], k)} -> {getattr(nt[name], k)}")
        was, now = set(ot[name].publishers), set(nt[name].publishers)
        if was != now:
            out.append(f"topic {name} publishers: {_fmt(was)} -> {_fmt(now)}")
        was, now = set(ot[name].subscribers), set(nt[name].subscribers)
        if was != now:
            out.append(f"topic {name} subscribers: {_fmt(was)} -> {_fmt(now)}")
    if not out and not _same(old, new):
        out.append("agents' stream rights or key layout change")
    return out


def _strip(doc: AclDocument | BusPlan) -> dict[str, object]:
    return doc.model_dump(exclude={"spec_digest"})


def _same(seen: AclDocument | BusPlan | None, want: AclDocument | BusPlan) -> bool:
    """Whether two documents are equal but for ``spec_digest``: always the answer of comparing
    their dumps, found field by field without dumping what is equal.

    Dumping both documents cost most of a no-op plan at 1,000 agents, and a third of an
    incremental pass at 10,000, where the documents differ by one agent: the ``agents``
    mappings then differ in their keys, which says no at once. Identity and ``==`` come
    first (the desired memo hands back the very same entries for agents that did not
    change); a model's dump decides only where ``==`` says no.
    """
    if seen is None:
        return False
    if type(seen) is not type(want):
        return _strip(seen) == _strip(want)
    return all(_dumps_alike(getattr(seen, name), getattr(want, name))
               for name in type(want).model_fields if name != "spec_digest")


def _dumps_alike(a: object, b: object) -> bool:
    if a is b or a == b:
        return True
    if isinstance(a, BaseModel) and isinstance(b, BaseModel):
        return a.model_dump() == b.model_dump()
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_dumps_alike(v, b[k]) for k, v in a.items())
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_dumps_alike(x, y) for x, y in zip(a, b))
    return False


# The actions both plans make (the full diff here, the incremental one in delta.py): one
# wording and one order of each, so the two plans cannot describe the same change differently.


def mailboxes(agent_id: str) -> tuple[tuple[str, str, str], ...]:
    """``(box, consumer group, who reads it)`` of an agent's outbox and inbox."""
    return (("outbox", ROUTER_GROUP, "read by the router"), ("inbox", agent_id, f"read by {agent_id} as group {agent_id}"))


def create_stream_action(name: str) -> Action:
    return Action(ActionKind.CREATE_STREAM, name, f"topic {name}: create its stream (the topic's log)")


def create_mailbox_action(agent_id: str, box: str, group: str, reader: str) -> Action:
    return Action(ActionKind.CREATE_MAILBOX, agent_id, f"agent {agent_id}: create its {box} ({reader})",
                  group=group, box=box)


def write_acl_table_action(old: AclDocument | None, new: AclDocument, swarm: str,
                           maybe: Collection[str] | None = None) -> Action:
    return Action(ActionKind.WRITE_ACL_TABLE, swarm, "write the ACL table", tuple(acl_changes(old, new, maybe)))


def write_bus_settings_action(old: BusPlan | None, new: BusPlan) -> Action:
    return Action(ActionKind.WRITE_BUS_SETTINGS, new.swarm, "write the bus settings", tuple(_settings_changed(old, new)))


def create_redis_user_action(agent_id: str, user: str, publish: Iterable[str], subscribe: Iterable[str]) -> Action:
    return Action(ActionKind.PUT_REDIS_USER, agent_id,
                  f"agent {agent_id}: create Redis user {user} (publish {_fmt(publish)}; subscribe {_fmt(subscribe)})")


def rights_changes(
    had_publish: Iterable[str], had_subscribe: Iterable[str], publish: Iterable[str], subscribe: Iterable[str]
) -> list[str]:
    """The topics a user gains and loses, publish first, each sorted."""
    out: list[str] = []
    for right, had, has in (("publish", set(had_publish), set(publish)), ("subscribe", set(had_subscribe), set(subscribe))):
        out += [f"gains {right} on {t}" for t in sorted(has - had)]
        out += [f"loses {right} on {t}" for t in sorted(had - has)]
    return out


def update_redis_user_action(agent_id: str, user: str, details: Iterable[str]) -> Action:
    return Action(ActionKind.PUT_REDIS_USER, agent_id, f"agent {agent_id}: update Redis user {user}", tuple(details))


def push_catalog_action(old: RegistryCatalog | None, new: RegistryCatalog,
                        maybe: Collection[str] | None = None) -> Action:
    return Action(ActionKind.PUSH_CATALOG, new.swarm, f"push the registry catalog ({len(new.agents)} declared agents)",
                  tuple(_catalog_changes(old, new, maybe)))


def evict_removed_action(agent_id: str) -> Action:
    return Action(ActionKind.EVICT_AGENT, agent_id, f"agent {agent_id} will be evicted: no longer declared")


def delete_mailbox_action(agent_id: str) -> Action:
    return Action(ActionKind.DELETE_MAILBOX, agent_id,
                  f"agent {agent_id}: delete its outbox, inbox and receipts (no longer declared; "
                  "messages not yet routed or read are lost)")


def delete_redis_user_action(agent_id: str) -> Action:
    return Action(ActionKind.DELETE_REDIS_USER, agent_id, f"agent {agent_id}: delete Redis user (no longer declared)")


def delete_stream_action(name: str) -> Action:
    return Action(ActionKind.DELETE_STREAM, name, f"topic {name} will be deleted: no longer declared (its messages are lost)")


_RANK = {k: i for i, k in enumerate(ORDER)}


def in_order(actions: Iterable[Action]) -> list[Action]:
    """``actions`` in apply order (:data:`ORDER`); stable within a kind."""
    return sorted(actions, key=lambda a: _RANK[a.kind])


def plan_actions(
    desired: DesiredState,
    actual: ActualState,
    *,
    prune: bool = False,
    force_prune: bool = False,
    retired: frozenset[str] = frozenset(),
) -> Plan:
    """Diff ``desired`` against ``actual``; see the module docstring for order and prune rules.

    ``retired``: agents an earlier pass classified as removed from the spec
    (:attr:`Plan.retired` of that pass).
    """
    bus, acl, catalog = desired.bus, desired.acl, desired.registry
    seen = actual.bus
    creates: list[Action] = []
    prunes: list[Action] = []

    # 1. topic streams (no consumer groups: agents read their inboxes) and mailboxes
    for name, topic in sorted(bus.topics.items()):
        if name not in seen.streams:
            creates.append(create_stream_action(name))
        for g in sorted(seen.groups.get(name, frozenset())):
            prunes.append(
                Action(
                    ActionKind.DELETE_GROUP,
                    name,
                    f"topic {name}: delete consumer group {g} (agents read their inboxes; the topic's log has no readers' groups)",
                    group=g,
                )
            )
    for aid in sorted(bus.agents):
        for box, group, reader in mailboxes(aid):
            have = (seen.outboxes if box == "outbox" else seen.inboxes).get(aid)
            if have is None:
                creates.append(create_mailbox_action(aid, box, group, reader))
            elif group not in have:
                description = f"agent {aid}: its {box} lost consumer group {group}; re-create it at id 0 ({reader})"
                creates.append(Action(ActionKind.CREATE_MAILBOX, aid, description, group=group, box=box))

    if not _same(seen.acl, acl):
        creates.append(write_acl_table_action(seen.acl, acl, bus.swarm))
    if not _same(seen.settings, bus):
        creates.append(write_bus_settings_action(seen.settings, bus))

    want_users = desired_user_rights(desired) if seen.users_managed else {}
    for aid, rights in sorted(want_users.items()):
        user = bus.agents[aid].redis_user
        have_rights = seen.users.get(aid)
        if have_rights is None:
            creates.append(create_redis_user_action(aid, user, rights.publish, rights.subscribe))
        elif have_rights != rights:
            details = [] if have_rights.enabled else ["is disabled: enable it"]
            details += rights_changes(have_rights.publish, have_rights.subscribe, rights.publish, rights.subscribe)
            details += _user_drift(have_rights.differs)
            if (have_rights.publish, have_rights.subscribe) == (rights.publish, rights.subscribe):
                # same topics: the spec did not change the user, someone else did
                why = [w for w, bad in (("disabled", not have_rights.enabled),
                                        ("password changed", "password" in have_rights.differs),
                                        ("rules changed", bool(have_rights.differs - {"password"}))) if bad]
                description = f"agent {aid}: Redis user {user} differs from the spec ({', '.join(why)} by hand); re-apply"
                creates.append(Action(ActionKind.PUT_REDIS_USER, aid, description, tuple(details)))
            else:
                creates.append(update_redis_user_action(aid, user, details))

    # Users of the naming before swarm.<N>.<id> keep the rights of the old, unmediated bus
    # (scripts, topic streams) and the agent's password still opens them: deleted by any pass,
    # like other hand-made drift, not held back for --prune.
    for user in sorted(seen.legacy_users):
        creates.append(
            Action(
                ActionKind.DELETE_LEGACY_USER,
                user,
                f"delete Redis user {user}: the naming before swarm.<swarm>.<agent>, with the old rights "
                "(scripts, topic streams) that the agent's password still opens",
            )
        )

    # 2. catalog
    pushes: list[Action] = []
    seen_catalog = actual.registry.catalog
    if seen_catalog is None or seen_catalog != catalog:
        pushes.append(push_catalog_action(seen_catalog, catalog))

    # 3. registrations the spec does not declare: strays (drift) and removals (prunes)
    strays: list[Action] = []
    removed: set[str] = set()
    if not catalog.settings.allow_undeclared:  # else undeclared registrations are welcome
        for aid in sorted(set(actual.registry.agents) - set(catalog.agents)):
            if _admitted(aid, seen_catalog) or aid in retired:
                removed.add(aid)
                prunes.append(evict_removed_action(aid))
            else:
                strays.append(
                    Action(
                        ActionKind.EVICT_AGENT,
                        aid,
                        f"agent {aid} will be evicted: never declared, the registry would refuse it (drift)",
                    )
                )
    for name in sorted(seen.streams - set(bus.topics)):
        prunes.append(delete_stream_action(name))
    for aid in sorted((set(seen.outboxes) | set(seen.inboxes)) - set(bus.agents)):
        prunes.append(delete_mailbox_action(aid))
    for aid in sorted(set(seen.users) - set(want_users)):
        prunes.append(delete_redis_user_action(aid))

    creates, prunes = in_order(creates), in_order(prunes)
    refused = None if force_prune else _mass_removal(desired, actual, prunes if prune else [])
    if not prune:
        return Plan(
            actions=tuple(creates + pushes + strays), held_back=tuple(prunes), refused=refused, retired=frozenset(removed)
        )

    deletes = in_order(strays + prunes)
    return Plan(actions=tuple(creates + pushes + deletes), refused=refused, retired=frozenset(removed))


def _admitted(agent_id: str, catalog: RegistryCatalog | None) -> bool:
    """Whether the live catalog may have admitted ``agent_id`` (no catalog: we cannot tell, so yes)."""
    return catalog is None or catalog.settings.allow_undeclared or agent_id in catalog.agents


def _mass_removal(desired: DesiredState, actual: ActualState, prunes: list[Action]) -> str | None:
    """Why a plan removes too much (more than half of the live agents or topics), else None.

    Checked on every plan, with or without ``--prune``: dropping an agent from the
    ACL table and the catalog refuses it at once (its registration and Redis user
    only go with ``--prune``), dropping a topic from the bus settings stops its
    use. The live agents are those in the live ACL table or catalog, registered
    or holding mailboxes or a Redis user; one is removed when it leaves the table or catalog,
    or (``prunes``: with ``--prune``) its registration is evicted, its
    mailboxes or Redis user deleted. The live topics are those in the live bus settings or with a stream;
    one is removed when it leaves the bus settings or (with ``--prune``) its
    stream is deleted.
    """
    catalog, seen = actual.registry.catalog, actual.bus
    declared = set(catalog.agents if catalog else ()) | set(seen.acl.agents if seen.acl else ())
    agents = declared | set(actual.registry.agents) | set(seen.users) | set(seen.outboxes) | set(seen.inboxes)
    want_agents = set(desired.acl.agents) | set(desired.registry.agents)
    removed = declared - want_agents
    removed |= {
        a.target
        for a in prunes
        if a.kind in (ActionKind.EVICT_AGENT, ActionKind.DELETE_MAILBOX, ActionKind.DELETE_REDIS_USER)
    }
    planned = set(seen.settings.topics if seen.settings else ())
    topics = planned | set(seen.streams)
    gone = planned - set(desired.bus.topics)
    gone |= {a.target for a in prunes if a.kind is ActionKind.DELETE_STREAM}
    for what, count, total in (("agents", len(removed), len(agents)), ("topics", len(gone), len(topics))):
        if count and count * 2 > total:
            return (
                f"the plan would remove {count} of {total} {what} (more than half) from the live system; "
                "nothing is applied: check the spec, then pass --force-prune to confirm"
            )
    return None
