"""Desired state: the typed contents of ``compiled/<swarm>/{registry,bus,acl}.json``.

Pure. The compiler builds these from a :class:`~swarm.spec.models.Spec`
(:func:`desired_from_spec`) and writes them as sorted, indented JSON; the registry
(catalog), the bus (``bus apply``) and the reconciler read them back with
``model_validate_json``. Keeping one model per file makes the files a checked
contract instead of loose dicts.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Callable, Collection, Container, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from swarm.acl import AclTable, Action, RoleRules
from swarm.keys import SwarmKeys
from swarm.spec.names import DEFAULT_PRIVATE_METADATA

if TYPE_CHECKING:  # not at run time: a desired state read back from JSON needs no spec models
    from swarm.spec.models import Agent, Spec

#: Registration fields that may not change without a version change.
IMMUTABLE_FIELDS: tuple[str, ...] = ("role", "capabilities", "topics")



#: Below this no spec needs a smaller bulk limit (Redis' own minimum is 1 MiB): the
#: reconciler's largest writes (the applied spec's files, acl.json, bus.json) fit.
BULK_LIMIT_FLOOR = 16 * 1024 * 1024


def redis_bulk_limit(max_payload_bytes: int) -> int:
    """The ``--proto-max-bulk-len`` of the Redis ``swarm up`` and the Compose file start.

    At least :data:`BULK_LIMIT_FLOOR` (16 MiB), else twice the spec's
    ``bus.max_payload_bytes`` plus 1 MiB (an entry's payload is one bulk string;
    the margin covers escaping and the other fields), so the largest legal payload
    is always accepted and one entry can never reach Redis' default of 512 MiB.
    """
    return max(BULK_LIMIT_FLOOR, 2 * max_payload_bytes + 1024 * 1024)

class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TopicRights(_Frozen):
    publish: list[str] = Field(default_factory=list)
    subscribe: list[str] = Field(default_factory=list)


class DeclaredAgent(_Frozen):
    agent_id: str
    agent_name: str
    version: str
    role: str
    capabilities: list[str]
    topics: TopicRights
    port: int
    runtime: str
    registry: bool
    health_path: str = "/health/live"
    metadata: dict[str, str] = Field(default_factory=dict)


class RegistryDefaults(_Frozen):
    url: str
    ttl_seconds: int
    heartbeat_interval: int
    allow_undeclared: bool
    #: reads without a token (GET /agents, /catalog, /status, the watch); off by default
    public_reads: bool = False
    #: metadata keys shown only to the agent itself and the admin
    private_metadata: list[str] = Field(default_factory=lambda: list(DEFAULT_PRIVATE_METADATA))


class RegistryCatalog(_Frozen):
    """``registry.json``: declared agents and registry settings."""

    swarm: str
    spec_digest: str
    settings: RegistryDefaults
    immutable_fields: list[str] = Field(default_factory=lambda: list(IMMUTABLE_FIELDS))
    agents: dict[str, DeclaredAgent]


class BreakerConfig(_Frozen):
    failure_threshold: int
    cooldown_seconds: float
    max_cooldown_seconds: float
    probe_interval_seconds: float


class BusConfig(_Frozen):
    redis_url: str
    dedup_window_seconds: int
    max_payload_bytes: int
    visibility_timeout_seconds: float
    max_deliveries: int
    breaker: BreakerConfig
    #: the router trims an outbox to about this many unrouted entries (a flooding agent loses its own)
    outbox_max_len: int = 10000
    #: receipts kept per agent, and refused entries kept per swarm (XADD MAXLEN ~)
    receipts_max_len: int = 1000
    refused_max_len: int = 10000
    #: the router delivers to an inbox only while it holds fewer entries (unacked ones: the agent
    #: deletes what it acks); at the cap the delivery to THAT inbox is refused (``inbox_full`` in
    #: ``refused`` and in the sender's receipt), never an unread entry evicted
    inbox_max_len: int = 100000


class TopicPlan(_Frozen):
    """One topic: its canonical log (written by the router only) and who uses it."""

    name: str
    stream: str
    dead_letter_stream: str
    max_len: int
    dedup_window_seconds: int
    #: agents allowed to publish it (declared by the agent and permitted by its role)
    publishers: list[str]
    #: agents whose inbox receives it (declared and permitted)
    subscribers: list[str]


class AgentRights(_Frozen):
    """One agent's effective rights (declared topics permitted by its role) and its own keys."""

    role: str
    publish: list[str]
    subscribe: list[str]
    redis_user: str
    outbox: str
    inbox: str
    receipts: str
    dead_letter_stream: str


class BusPlan(_Frozen):
    """``bus.json``: topics, streams, consumer groups and bus settings."""

    swarm: str
    spec_digest: str
    key_prefix: str
    settings: BusConfig
    topics: dict[str, TopicPlan]
    agents: dict[str, AgentRights]


class DecisionOut(_Frozen):
    allow: bool
    rule: str


class AclRow(_Frozen):
    role: str
    topic: str
    publish: DecisionOut
    subscribe: DecisionOut


class RuleSetOut(_Frozen):
    publish: list[str]
    subscribe: list[str]


class RoleOut(_Frozen):
    publish: list[str]
    subscribe: list[str]
    deny: RuleSetOut


class AgentAcl(_Frozen):
    role: str
    publish: list[str]
    subscribe: list[str]


class AclDocument(_Frozen):
    """``acl.json``: role rules, every role x declared topic decision, agents' rights."""

    swarm: str
    spec_digest: str
    roles: dict[str, RoleOut]
    table: list[AclRow]
    agents: dict[str, AgentAcl]

    def to_table(self) -> AclTable:
        return AclTable({name: RoleRules.from_dict(r.model_dump()) for name, r in self.roles.items()})


class DesiredState(_Frozen):
    registry: RegistryCatalog
    bus: BusPlan
    acl: AclDocument


class DesiredMemo:
    """The last desired state :func:`desired_from_spec` built, kept for the next build.

    The reconciler keeps one across passes (``memo=``): a spec loaded through a
    :class:`~swarm.spec.loader.DocumentCache` hands back the very same (frozen) Agent
    objects for the files that did not change. The next build of the same swarm then
    starts from the last one:

    * an agent that is the very same object keeps its catalog entry; it keeps its rights
      and ACL entry too unless its role's rules changed or a topic it declares was added or
      removed, and even then when they come out the same (the objects stay: later
      comparisons by identity see no change);
    * when few agents are new, changed, gone or re-derived (at most ``1/PATCH_SHARE`` of
      them), the last result is *patched*: only their entries are replaced and only the
      lists of the topics they use rebuilt, so a save touching one agent at 10,000 agents
      costs what one agent costs, not what the fleet costs. Otherwise every agent is walked
      (reusing what it can).

    Same result as building afresh, always (a hypothesis test keeps it so).
    """

    #: patch the last result while at most this share of the agents need new pieces
    PATCH_SHARE = 8

    def __init__(self) -> None:
        self._last: _Built | None = None
        #: (the state patched, the state it gave, the ids of the agents it may have changed)
        self._patch: tuple[DesiredState, DesiredState, frozenset[str]] | None = None

    def changed_since(self, old: DesiredState, new: DesiredState) -> frozenset[str] | None:
        """The ids of the agents whose entries may differ from ``old`` to ``new``, when ``new`` is
        the last build and was patched from ``old``: every other agent's catalog, bus and ACL entries
        are the very same objects in both, so a comparison may skip them. None when not known
        (another pair, or a build that walked every agent): compare every agent then."""
        p = self._patch
        return p[2] if p is not None and p[0] is old and p[1] is new else None


class _Built:
    """What :func:`desired_from_spec` built last: its inputs but the agents (swarm name,
    topics, role rules), its agents by id, their effective rights, each topic's publishers
    and subscribers, and the result."""

    __slots__ = ("name", "topics", "rules", "agents", "effective", "by_topic", "state")

    def __init__(self, name: str, topics: dict[str, tuple[int, int]], rules: dict[str, RoleRules],
                 agents: dict[str, Agent], effective: dict[str, dict[Action, list[str]]],
                 by_topic: dict[Action, dict[str, list[str]]], state: DesiredState) -> None:
        self.name, self.topics, self.rules, self.agents = name, topics, rules, agents
        self.effective, self.by_topic, self.state = effective, by_topic, state


def _declared(a: Agent) -> DeclaredAgent:
    return DeclaredAgent(
        agent_id=a.id,
        agent_name=a.display_name,
        version=a.version,
        role=a.role,
        capabilities=sorted(set(a.capabilities)),
        topics=TopicRights(publish=sorted(set(a.publishes)), subscribe=sorted(set(a.subscribes))),
        port=a.port,
        runtime=a.runtime,
        registry=a.registry,
        metadata=dict(sorted(a.metadata.items())),
    )


def _effective(a: Agent, table: AclTable, declared_topics: Container[str]) -> dict[Action, list[str]]:
    """Least privilege: the topics ``a`` declares AND its role permits (a valid spec declares
    only permitted topics; the intersection keeps that true for whatever reaches here)."""
    return {
        "publish": sorted(t for t in set(a.publishes) if t in declared_topics and table.can_publish(a.role, t)),
        "subscribe": sorted(t for t in set(a.subscribes) if t in declared_topics and table.can_subscribe(a.role, t)),
    }


def _rights(a: Agent, mine: dict[Action, list[str]], keys: SwarmKeys) -> tuple[AgentRights, AgentAcl]:
    rights = AgentRights(
        role=a.role,
        publish=mine["publish"],
        subscribe=mine["subscribe"],
        redis_user=keys.redis_user(a.id),
        outbox=keys.outbox(a.id),
        inbox=keys.inbox(a.id),
        receipts=keys.receipts(a.id),
        dead_letter_stream=keys.agent_dead_letter(a.id),
    )
    return rights, AgentAcl(role=a.role, **mine)


def _registry_defaults(spec: Spec) -> RegistryDefaults:
    r = spec.swarm.registry
    return RegistryDefaults(
        url=r.url,
        ttl_seconds=r.ttl_seconds,
        heartbeat_interval=r.effective_heartbeat_interval,
        allow_undeclared=r.allow_undeclared,
        public_reads=r.public_reads,
        private_metadata=sorted(set(r.private_metadata)),
    )


def _bus_config(spec: Spec) -> BusConfig:
    b = spec.swarm.bus
    return BusConfig(
        redis_url=b.redis_url,
        dedup_window_seconds=b.dedup_window_seconds,
        max_payload_bytes=b.max_payload_bytes,
        visibility_timeout_seconds=b.visibility_timeout_seconds,
        max_deliveries=b.max_deliveries,
        breaker=BreakerConfig(**b.breaker.model_dump()),
        inbox_max_len=b.inbox_max_len,
    )


def _topic_plan(keys: SwarmKeys, name: str, params: tuple[int, int], by_topic: dict[Action, dict[str, list[str]]]
                ) -> TopicPlan:
    return TopicPlan(
        name=name,
        stream=keys.topic(name),
        dead_letter_stream=keys.dead_letter(name),
        max_len=params[0],
        dedup_window_seconds=params[1],
        publishers=by_topic["publish"].get(name, []),
        subscribers=by_topic["subscribe"].get(name, []),
    )


def _acl_frame(table: AclTable, rules: dict[str, RoleRules], topic_names: list[str]
               ) -> tuple[dict[str, RoleOut], list[AclRow]]:
    roles = {name: RoleOut.model_validate(r.to_dict()) for name, r in sorted(rules.items())}
    return roles, [AclRow.model_validate(row) for row in table.rows(topic_names)]


class _Inputs:
    """A spec's inputs to the desired state besides its agents, and what moved since ``last``."""

    def __init__(self, spec: Spec, last: _Built | None) -> None:
        self.keys = SwarmKeys(spec.name)
        self.table = AclTable.from_spec_roles(spec.roles)
        self.topics = {t.name: (t.max_len, spec.dedup_window(t)) for t in spec.topics}
        self.rules = {name: RoleRules.from_role(r) for name, r in spec.roles.items()}
        self.last = last if last is not None and last.name == spec.name else None  # the keys name the swarm
        if self.last is None:
            self.roles_moved: set[str] = set()
            self.topics_moved: set[str] = set()
        else:
            was = self.last.rules
            self.roles_moved = {r for r in set(self.rules) | set(was) if self.rules.get(r) != was.get(r)}
            self.topics_moved = set(self.topics) ^ set(self.last.topics)

    def rights_may_move(self, a: Agent) -> bool:
        """Whether an agent the last build had, as the very same object, may get other rights now."""
        moved = self.topics_moved
        return a.role in self.roles_moved or (bool(moved) and not (moved.isdisjoint(a.publishes)
                                                                    and moved.isdisjoint(a.subscribes)))


def _agent_entry(a: Agent, inputs: _Inputs
                 ) -> tuple[DeclaredAgent, dict[Action, list[str]], AgentRights, AgentAcl]:
    """``a``'s catalog entry, effective rights, bus rights and ACL entry: the last build's very
    objects where they still hold (same Agent object; rights not moved, or re-derived equal)."""
    last = inputs.last
    if last is not None and last.agents.get(a.id) is a:
        entry, before = last.state.registry.agents[a.id], last.effective[a.id]
        mine = _effective(a, inputs.table, inputs.topics) if inputs.rights_may_move(a) else before
        if mine == before:  # the very objects: comparisons by identity see no change
            return entry, before, last.state.bus.agents[a.id], last.state.acl.agents[a.id]
        return (entry, mine, *_rights(a, mine, inputs.keys))
    mine = _effective(a, inputs.table, inputs.topics)
    return (_declared(a), mine, *_rights(a, mine, inputs.keys))


def desired_from_spec(spec: Spec, spec_digest: str, memo: DesiredMemo | None = None) -> DesiredState:
    """Build the desired state of a structurally and semantically valid spec (``memo``: see :class:`DesiredMemo`)."""
    inputs = _Inputs(spec, memo._last if memo is not None else None)
    if memo is not None and inputs.last is not None:
        patched = _patched(memo, inputs, spec, spec_digest)
        if patched is not None:
            return patched
    keys, table = inputs.keys, inputs.table
    topic_names = sorted(inputs.topics)
    agents = sorted(spec.agents, key=lambda a: a.id)
    effective: dict[str, dict[Action, list[str]]] = {}
    reg_agents: dict[str, DeclaredAgent] = {}
    bus_agents: dict[str, AgentRights] = {}
    acl_agents: dict[str, AgentAcl] = {}
    for a in agents:
        reg_agents[a.id], effective[a.id], bus_agents[a.id], acl_agents[a.id] = _agent_entry(a, inputs)

    # each topic's publishers and subscribers, in agent id order (one walk, not one per topic)
    by_topic: dict[Action, dict[str, list[str]]] = {"publish": {}, "subscribe": {}}
    for a in agents:
        for action, index in by_topic.items():
            for t in effective[a.id][action]:
                index.setdefault(t, []).append(a.id)

    registry = RegistryCatalog(swarm=spec.name, spec_digest=spec_digest, settings=_registry_defaults(spec),
                               agents=reg_agents)
    bus = BusPlan(
        swarm=spec.name,
        spec_digest=spec_digest,
        key_prefix=keys.prefix,
        settings=_bus_config(spec),
        topics={name: _topic_plan(keys, name, inputs.topics[name], by_topic) for name in topic_names},
        agents=bus_agents,
    )
    roles, rows = _acl_frame(table, inputs.rules, topic_names)
    acl = AclDocument(swarm=spec.name, spec_digest=spec_digest, roles=roles, table=rows, agents=acl_agents)
    state = DesiredState(registry=registry, bus=bus, acl=acl)
    if memo is not None:
        memo._patch = None
        memo._last = _Built(spec.name, inputs.topics, inputs.rules, {a.id: a for a in agents}, effective, by_topic,
                            state)
    return state


def _patched(memo: DesiredMemo, inputs: _Inputs, spec: Spec, spec_digest: str) -> DesiredState | None:
    """The last result with only what ``spec`` changed replaced (see :class:`DesiredMemo`);
    None when too much changed (or an id repeats: a spec that reached here has none)."""
    last = inputs.last
    assert last is not None
    now = {a.id: a for a in spec.agents}
    was = last.agents
    if len(now) != len(spec.agents):
        return None
    changed = [a for aid, a in now.items() if was.get(aid) is not a]
    removed = [aid for aid in was if aid not in now]
    rederive = ([a for aid, a in now.items() if was.get(aid) is a and inputs.rights_may_move(a)]
                if inputs.roles_moved or inputs.topics_moved else [])
    if (len(changed) + len(removed) + len(rederive)) * memo.PATCH_SHARE > max(len(now), 64):
        return None
    old, keys, table = last.state, inputs.keys, inputs.table
    reg_agents, bus_agents, acl_agents = dict(old.registry.agents), dict(old.bus.agents), dict(old.acl.agents)
    effective = dict(last.effective)
    touched: dict[Action, set[str]] = {"publish": set(), "subscribe": set()}  # topics whose lists change
    moved: set[str] = set(removed)  # agents whose entries in those lists may change
    for aid in removed:
        del reg_agents[aid], bus_agents[aid], acl_agents[aid]
        for action, used in effective.pop(aid).items():
            touched[action].update(used)
    for a in changed + rederive:
        before = effective.get(a.id)
        reg_agents[a.id], mine, rights, acl_row = _agent_entry(a, inputs)
        if rights is bus_agents.get(a.id):
            continue  # re-derived to the same rights: its objects stay
        moved.add(a.id)
        for action, used in (before or {}).items():
            touched[action].update(used)
        effective[a.id], bus_agents[a.id], acl_agents[a.id] = mine, rights, acl_row
        for action, used in mine.items():
            touched[action].update(used)
    if any(a.id not in was for a in changed):  # new ids: back into id order (one sort of the ids alone)
        order = sorted(reg_agents)
        reg_agents = {aid: reg_agents[aid] for aid in order}
        bus_agents = {aid: bus_agents[aid] for aid in order}
        acl_agents = {aid: acl_agents[aid] for aid in order}
    by_topic: dict[Action, dict[str, list[str]]] = {action: dict(index) for action, index in last.by_topic.items()}
    for action, names in touched.items():
        index = by_topic[action]
        for name in names:
            ids = [aid for aid in index.get(name, []) if aid not in moved]
            ids += [aid for aid in moved if aid in effective and name in effective[aid][action]]
            if ids:
                index[name] = sorted(ids)
            else:
                index.pop(name, None)
    topics = {name: plan for name, plan in old.bus.topics.items() if name in inputs.topics}
    for name, params in inputs.topics.items():
        plan = topics.get(name)
        if plan is None or last.topics.get(name) != params:
            topics[name] = _topic_plan(keys, name, params, by_topic)
        elif name in touched["publish"] or name in touched["subscribe"]:
            topics[name] = plan.model_copy(update={"publishers": by_topic["publish"].get(name, []),
                                                   "subscribers": by_topic["subscribe"].get(name, [])})
    if inputs.topics_moved:
        topics = dict(sorted(topics.items()))
    acl_update: dict[str, object] = {"spec_digest": spec_digest, "agents": acl_agents}
    if inputs.roles_moved or inputs.topics_moved:
        acl_update["roles"], acl_update["table"] = _acl_frame(table, inputs.rules, sorted(inputs.topics))
    state = DesiredState(
        registry=old.registry.model_copy(update={"spec_digest": spec_digest, "settings": _registry_defaults(spec),
                                                 "agents": reg_agents}),
        bus=old.bus.model_copy(update={"spec_digest": spec_digest, "settings": _bus_config(spec), "topics": topics,
                                       "agents": bus_agents}),
        acl=old.acl.model_copy(update=acl_update),
    )
    memo._last = _Built(spec.name, inputs.topics, inputs.rules, now, effective, by_topic, state)
    memo._patch = (old, state, frozenset(a.id for a in changed + rederive).union(removed))
    return state


# --------------------------------------------------------------------------- catalog patches
#
# PATCH /catalog carries the difference between two catalogs (the registry applies it on top
# of the stored one, ``swarm.registry.server``); the reconciler computes it. Both halves are
# here, pure, so that what one side sends is exactly what the other applies.


class CatalogDelta(_Frozen):
    """What turns one catalog into another: agents upserted (whole) or removed, and the
    top-level fields that change (``None``: unchanged)."""

    upsert: list[DeclaredAgent] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)
    spec_digest: str | None = None
    settings: RegistryDefaults | None = None

    @property
    def empty(self) -> bool:
        return not (self.upsert or self.remove or self.spec_digest is not None or self.settings is not None)


def agents_moved(old: Mapping[str, object], new: Mapping[str, object], maybe: Collection[str] | None = None
                 ) -> tuple[list[str], list[str], list[str]]:
    """Sorted ids of the agents only in ``old``, only in ``new``, and in both as other objects
    (equal or not). ``maybe``: the only ids that can be among them, when known
    (:meth:`DesiredMemo.changed_since`): then only those are looked at, not the whole fleet."""
    if maybe is None:
        both = old.keys() & new.keys()
        return (sorted(old.keys() - new.keys()), sorted(new.keys() - old.keys()),
                sorted(aid for aid in both if old[aid] is not new[aid]))
    ids = sorted(maybe)
    return ([aid for aid in ids if aid in old and aid not in new], [aid for aid in ids if aid in new and aid not in old],
            [aid for aid in ids if aid in old and aid in new and old[aid] is not new[aid]])


def catalog_delta(old: RegistryCatalog, new: RegistryCatalog, maybe: Collection[str] | None = None
                  ) -> CatalogDelta | None:
    """The delta from ``old`` to ``new``; None when a patch cannot express it (another swarm,
    other immutable fields): push the whole catalog then. ``maybe``: the only ids whose entries
    may differ (:meth:`DesiredMemo.changed_since`); every agent is compared without it."""
    if old.swarm != new.swarm or old.immutable_fields != new.immutable_fields:
        return None
    was, now = old.agents, new.agents
    remove, added, other = agents_moved(was, now, maybe)
    upsert = [now[aid] for aid in sorted(added + [aid for aid in other if was[aid] != now[aid]])]
    return CatalogDelta(
        upsert=upsert,
        remove=remove,
        spec_digest=new.spec_digest if new.spec_digest != old.spec_digest else None,
        settings=new.settings if new.settings != old.settings else None,
    )


#: One problem of a patch: (location in the body, message, kind).
PatchProblem = tuple[tuple[str | int, ...], str, str]


def patched_catalog(catalog: RegistryCatalog, delta: CatalogDelta, id_ok: Callable[[str], bool]
                    ) -> tuple[RegistryCatalog | None, list[PatchProblem]]:
    """``catalog`` with ``delta`` applied, or None and every problem: an id twice in ``upsert``
    or in ``remove``, in both, not an agent id (``id_ok``), or removed but not declared."""
    problems: list[PatchProblem] = []
    first: dict[str, int] = {}
    for i, agent in enumerate(delta.upsert):
        aid = agent.agent_id
        if not id_ok(aid):
            problems.append((("upsert", i, "agent_id"), f"{aid!r} is not an agent id", "bad_id"))
        elif aid in first:
            problems.append((("upsert", i, "agent_id"),
                             f"duplicate agent id {aid!r} (also upsert[{first[aid]}])", "duplicate"))
        else:
            first.setdefault(aid, i)
    removed: dict[str, int] = {}
    for i, aid in enumerate(delta.remove):
        if aid in removed:
            problems.append((("remove", i), f"duplicate agent id {aid!r} (also remove[{removed[aid]}])", "duplicate"))
            continue
        removed[aid] = i
        if aid in first:
            problems.append((("remove", i), f"agent {aid!r} is both upserted (upsert[{first[aid]}]) and removed",
                             "duplicate"))
        elif aid not in catalog.agents:
            problems.append((("remove", i), f"agent {aid!r} is not declared in the stored catalog", "not_declared"))
    if problems:
        return None, problems
    agents = dict(catalog.agents)
    for aid in removed:
        del agents[aid]
    known = len(agents)
    for agent in delta.upsert:
        agents[agent.agent_id] = agent
    if len(agents) > known:  # new ids: back into id order (one sort of the ids alone)
        agents = {aid: agents[aid] for aid in sorted(agents)}
    update: dict[str, object] = {"agents": agents}
    if delta.spec_digest is not None:
        update["spec_digest"] = delta.spec_digest
    if delta.settings is not None:
        update["settings"] = delta.settings
    return catalog.model_copy(update=update), []


def canonical_json(value: object) -> str:
    """Sorted, compact JSON: equal values give equal strings (digests, comparisons)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class _AgentTexts:
    """Each agent's JSON text, kept by the (frozen) agent object itself: between two saves
    almost every agent of a document is the very same object.

    One pass over the agents finds each text (a lookup and an identity test an agent); only
    the agents that are new objects are rendered and written back. Texts of agents no longer
    given stay until they outnumber the given ones (then the memo is rebuilt from the last call)."""

    def __init__(self, render: Callable[[str, BaseModel], str]) -> None:
        self._render = render
        self._objs: dict[str, BaseModel] = {}
        self._texts: dict[str, str] = {}

    def parts(self, pairs: Sequence[tuple[str, BaseModel]]) -> list[str]:
        """``render(id, agent)`` of each agent, in the order given; reused where the agent is the same object."""
        objs, texts = self._objs, self._texts
        get = objs.get
        parts = [texts[aid] if get(aid) is agent else "" for aid, agent in pairs]  # a text is never ""
        for i in [i for i, part in enumerate(parts) if not part]:
            aid, agent = pairs[i]
            parts[i] = texts[aid] = self._render(aid, agent)
            objs[aid] = agent
        if len(objs) > 2 * len(pairs) + 64:  # many agents gone since the memo was built
            self._objs, self._texts = dict(pairs), dict(zip((aid for aid, _ in pairs), parts))
        return parts


class CatalogText:
    """The canonical JSON (and digest) of catalogs, reusing each agent's text from the last call.

    ``canonical_json(catalog.model_dump(mode="json"))`` costs ~20 µs an agent; the
    reconciler and the registry compute it on every change, and between two calls
    almost every :class:`DeclaredAgent` is the very same (frozen) object, so its text
    is kept by identity. Same bytes as the whole dump, always (a test keeps it so).
    """

    def __init__(self) -> None:
        self._texts = _AgentTexts(lambda aid, a: f"{canonical_json(aid)}:{canonical_json(a.model_dump(mode='json'))}")

    def text(self, catalog: RegistryCatalog) -> str:
        agents = catalog.agents
        parts = self._texts.parts([(aid, agents[aid]) for aid in sorted(agents)])
        rest = canonical_json(catalog.model_dump(mode="json", exclude={"agents"}))
        return '{"agents":{' + ",".join(parts) + "}," + rest[1:]

    def digest(self, catalog: RegistryCatalog) -> str:
        return hashlib.sha256(self.text(catalog).encode()).hexdigest()


class AgentsDocumentText:
    """``model_dump_json()`` of a document whose last field is ``agents`` (``bus.json``,
    ``acl.json``, the catalog the registry serves), reusing each agent's JSON from the last
    call by identity.

    The reconciler rewrites both documents whenever an agent is added or removed; at
    10,000 agents they are 3 MB and 0.8 MB of JSON (~30 ms a save), while between two
    saves almost every agent's entry is the very same (frozen) object. Same bytes as
    ``model_dump_json()``, always (a test keeps it so).
    """

    def __init__(self) -> None:
        self._texts = _AgentTexts(lambda aid, a: f"{json.dumps(aid, ensure_ascii=False)}:{a.model_dump_json()}")

    def text(self, doc: BusPlan | AclDocument | RegistryCatalog) -> str:
        agents: list[tuple[str, BaseModel]] = list(doc.agents.items())
        head = doc.model_dump_json(exclude={"agents"})
        return head[:-1] + ',"agents":{' + ",".join(self._texts.parts(agents)) + "}}"
