"""What the reconciler sees of the live system, and the two ports it sees it through.

Pure: dataclasses and Protocols only. :mod:`swarm.reconcile.observe` fills an
:class:`ActualState` from the real registry (HTTP) and Redis; tests fill it from
in-memory fakes. :func:`swarm.reconcile.plan.plan_actions` diffs it against the
desired state. Keeping the observation a plain value (no clients inside) is what
lets the planner stay a pure function that a test can call with literals.

The two ports are deliberately small (a handful of methods each, so a fake for
a unit test is a few lines and the real adapters are easy to read whole):

* :class:`RegistryPort` — the catalog and the registrations of the HTTP registry.
* :class:`BusPort` — topic streams, agents' outboxes and inboxes with their
  consumer groups, Redis ACL users and the ACL table in Redis; creation uses the
  bus's own rules (``swarm.bus.apply.user_rules``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol

from swarm.desired import AclDocument, BusPlan, RegistryCatalog
from swarm.errors import PermanentError


@dataclass(frozen=True)
class LiveAgent:
    """One registration as the registry reports it."""

    agent_id: str
    status: str = "live"  # live | expired | critical | ... (the registry's words)
    version: str | None = None
    role: str | None = None


@dataclass(frozen=True)
class UserRights:
    """One Redis ACL user of the swarm, as the topics it was written for.

    ``publish`` / ``subscribe``: the topics whose ``swarm.bus.apply.user_rules``
    the user equals (the desired ones, or those of the bus settings applied
    before, or the ones this process wrote). ``differs``: when the user equals
    neither, the ACL GETUSER fields in which it differs from the desired rules
    ("password", "commands", "keys", "channels", "selectors", "flags"; the on/off
    flag is ``enabled``). Empty when equal and for users not read back.
    """

    publish: frozenset[str] = frozenset()
    subscribe: frozenset[str] = frozenset()
    enabled: bool = True
    differs: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RegistryObservation:
    """The registry's catalog (``None`` when none was pushed) and its registrations."""

    catalog: RegistryCatalog | None
    agents: dict[str, LiveAgent] = field(default_factory=dict)


@dataclass(frozen=True)
class BusObservation:
    """The swarm's bus objects in Redis.

    ``acl`` / ``settings`` are the documents last written by ``bus apply`` (``None``
    when missing or unreadable: both mean "write it again").
    """

    streams: frozenset[str] = frozenset()  # topic names whose stream exists
    groups: dict[str, frozenset[str]] = field(default_factory=dict)  # topic -> group names (none wanted)
    outboxes: dict[str, frozenset[str]] = field(default_factory=dict)  # agent id -> groups on its outbox
    inboxes: dict[str, frozenset[str]] = field(default_factory=dict)  # agent id -> groups on its inbox
    users: dict[str, UserRights] = field(default_factory=dict)  # agent id -> rights
    users_managed: bool = True  # False without a bus secret: apply_bus writes no users
    acl: AclDocument | None = None
    settings: BusPlan | None = None
    breakers_open: tuple[str, ...] = ()
    #: users of this swarm under the naming before ``swarm.<N>.<id>`` (``swarm-<N>-<id>``, with the
    #: old rights: scripts and topic streams); found by their key patterns, all inside this swarm
    legacy_users: tuple[str, ...] = ()
    protection: bool = False


@dataclass(frozen=True)
class BusChanges:
    """The bus objects one apply creates or rewrites (everything else is left alone)."""

    streams: tuple[str, ...] = ()  # topics whose stream to create (no consumer group)
    mailboxes: tuple[tuple[str, str], ...] = ()  # (agent id, "outbox" | "inbox"): stream + its group at id 0
    documents: bool = False  # rewrite the ACL table and bus settings (together, atomically)
    users: tuple[str, ...] = ()  # agent ids whose Redis user to (re)write

    def __bool__(self) -> bool:
        return bool(self.streams or self.mailboxes or self.documents or self.users)


@dataclass(frozen=True)
class ActualState:
    """Everything one observation pass saw."""

    registry: RegistryObservation
    bus: BusObservation


class RegistryPort(Protocol):
    """The registry as the reconciler uses it. Errors: swarm.errors types only."""

    def get_catalog(self) -> RegistryCatalog | None: ...

    def list_agents(self) -> dict[str, LiveAgent]: ...

    def push_catalog(self, catalog: RegistryCatalog, revision: str) -> None: ...

    def evict(self, agent_id: str) -> None: ...


class BusPort(Protocol):
    """Redis as the reconciler uses it. Errors: swarm.errors types only."""

    def observe(self, bus: BusPlan, assumed_users: Mapping[str, UserRights] | None = None) -> BusObservation:
        """Observe; users in ``assumed_users`` that exist are reported with those rights unread."""
        ...

    def apply(self, bus: BusPlan, acl: AclDocument, changes: BusChanges) -> None: ...

    def delete_group(self, bus: BusPlan, topic: str, group: str) -> None: ...

    def delete_stream(self, bus: BusPlan, topic: str) -> None: ...

    def delete_mailbox(self, bus: BusPlan, agent_id: str) -> None:
        """Delete an agent's outbox, inbox and receipts."""
        ...

    def delete_user(self, bus: BusPlan, agent_id: str) -> None: ...

    def delete_legacy_user(self, bus: BusPlan, user: str) -> None:
        """Delete a Redis user of this swarm under the old naming (see BusObservation.legacy_users)."""
        ...


def observe(
    registry: RegistryPort, bus: BusPort, plan: BusPlan, assumed_users: Mapping[str, UserRights] | None = None
) -> ActualState:
    """Read the live state through both ports (bus first: it is the cheaper one).

    ``assumed_users``: rights this process itself wrote last time. Reading a Redis
    user back (ACL GETUSER) costs Redis ~0.4 ms per user, so event-triggered passes
    check those users' existence only; the resync timer reads every user in full
    and compares it whole (password hash, flags, commands, keys, selectors) with
    what the rules would write, so any hand edit is healed.

    A registry whose catalog names another swarm is not ours: its agents would
    look like removals and strays of this one. That is a
    :class:`~swarm.errors.PermanentError` naming both swarms, raised before Redis
    is read (and so before any change is planned or applied).
    """
    catalog = registry.get_catalog()
    if catalog is not None and catalog.swarm != plan.swarm:
        raise PermanentError(
            f"the registry serves swarm {catalog.swarm!r}, not {plan.swarm!r} (its catalog names {catalog.swarm!r}); "
            "check registry.url / --registry-url — nothing was changed"
        )
    bus_seen = bus.observe(plan, assumed_users)
    return ActualState(
        registry=RegistryObservation(catalog=catalog, agents=registry.list_agents()),
        bus=bus_seen,
    )
