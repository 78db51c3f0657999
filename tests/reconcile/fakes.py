"""In-memory stand-ins for the two reconcile ports, for unit tests of the pure logic.

The real adapters are tested against a real redis-server and a real registry in
the other test modules; these fakes only let plan/apply ordering be checked fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from swarm.desired import AclDocument, BusPlan, RegistryCatalog
from swarm.errors import RedisUnavailableError
from swarm.keys import ROUTER_GROUP
from swarm.reconcile.state import BusChanges, BusObservation, LiveAgent, UserRights


@dataclass
class FakeRegistry:
    catalog: RegistryCatalog | None = None
    agents: dict[str, LiveAgent] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    pushes: int = 0

    def get_catalog(self) -> RegistryCatalog | None:
        return self.catalog

    def list_agents(self) -> dict[str, LiveAgent]:
        return dict(self.agents)

    def push_catalog(self, catalog: RegistryCatalog, revision: str) -> None:
        self.calls.append(f"push:{revision}")
        self.pushes += 1
        self.catalog = catalog

    def evict(self, agent_id: str) -> None:
        self.calls.append(f"evict:{agent_id}")
        self.agents.pop(agent_id, None)


@dataclass
class FakeBus:
    streams: set[str] = field(default_factory=set)
    groups: dict[str, set[str]] = field(default_factory=dict)
    outboxes: dict[str, set[str]] = field(default_factory=dict)
    inboxes: dict[str, set[str]] = field(default_factory=dict)
    users: dict[str, UserRights] = field(default_factory=dict)
    acl: AclDocument | None = None
    settings: BusPlan | None = None
    calls: list[str] = field(default_factory=list)
    down: bool = False

    def _check(self) -> None:
        if self.down:
            raise RedisUnavailableError("fake redis is down", delay=0.01)

    def observe(self, bus: BusPlan, assumed_users: Mapping[str, UserRights] | None = None) -> BusObservation:
        self._check()
        return BusObservation(
            streams=frozenset(self.streams),
            groups={k: frozenset(v) for k, v in self.groups.items() if v},
            outboxes={k: frozenset(v) for k, v in self.outboxes.items()},
            inboxes={k: frozenset(v) for k, v in self.inboxes.items()},
            users=dict(self.users),
            acl=self.acl,
            settings=self.settings,
        )

    def apply(self, bus: BusPlan, acl: AclDocument, changes: BusChanges) -> None:
        self._check()
        self.calls.append("apply")
        for name in changes.streams:
            self.streams.add(name)
        for aid, box in changes.mailboxes:
            boxes = self.outboxes if box == "outbox" else self.inboxes
            boxes.setdefault(aid, set()).add(ROUTER_GROUP if box == "outbox" else aid)
        if changes.documents:
            self.acl = acl
            self.settings = bus
        for aid in changes.users:
            a = acl.agents[aid]
            self.users[aid] = UserRights(frozenset(a.publish), frozenset(a.subscribe))

    def delete_group(self, bus: BusPlan, topic: str, group: str) -> None:
        self._check()
        self.calls.append(f"delete-group:{topic}:{group}")
        self.groups.get(topic, set()).discard(group)

    def delete_stream(self, bus: BusPlan, topic: str) -> None:
        self._check()
        self.calls.append(f"delete-stream:{topic}")
        self.streams.discard(topic)
        self.groups.pop(topic, None)

    def delete_mailbox(self, bus: BusPlan, agent_id: str) -> None:
        self._check()
        self.calls.append(f"delete-mailbox:{agent_id}")
        self.outboxes.pop(agent_id, None)
        self.inboxes.pop(agent_id, None)

    def delete_legacy_user(self, bus: BusPlan, user: str) -> None:
        self._check()
        self.calls.append(f"delete-legacy-user:{user}")

    def delete_user(self, bus: BusPlan, agent_id: str) -> None:
        self._check()
        self.calls.append(f"delete-user:{agent_id}")
        self.users.pop(agent_id, None)


__all__ = ["FakeBus", "FakeRegistry"]
