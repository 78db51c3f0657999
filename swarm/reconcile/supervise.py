"""What ``swarm up --demo`` does with its agent processes: the decisions, without the processes (pure).

:func:`agent_changes` compares the agents the applied spec wants run (id ->
fingerprint of its compiled files and launch) with those running: start the new
ones, stop the removed ones, restart those whose fingerprint changed (a version
bump, a new port, an edited handler). :class:`Supervisor` keeps, per agent, its
fingerprint, whether it runs or waits to be restarted, and its crash backoff
(:class:`~swarm.backoff.Backoff`, the project's one): an agent that exits on its
own is restarted after the next delay, and an agent that stayed up
``stable_seconds`` before it exited starts over from the first, short delay.
Time is passed in (``now``, a monotonic clock), so every decision is testable
without a process or a sleep; :mod:`swarm.reconcile.up_agents` runs them.

>>> agent_changes({"a": "v2", "b": "v1"}, {"a": "v1", "c": "v1"})
AgentChanges(start=('b',), stop=('c',), restart=('a',))
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Mapping

from swarm.backoff import Backoff

#: an agent up this long before it exits counts as healthy: its next crash waits the first delay again
STABLE_SECONDS = 10.0
#: the crash backoff: full jitter over [0, min(cap, base * 2**crashes)]
RESTART_BASE = 1.0
RESTART_CAP = 30.0


@dataclass(frozen=True)
class AgentChanges:
    """Agent ids to start, stop and restart (each sorted)."""

    start: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()
    restart: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.start or self.stop or self.restart)


def agent_changes(wanted: Mapping[str, str], running: Mapping[str, str]) -> AgentChanges:
    """``wanted`` and ``running``: agent id -> fingerprint. What to do so that ``running`` becomes ``wanted``."""
    return AgentChanges(
        start=tuple(sorted(set(wanted) - set(running))),
        stop=tuple(sorted(set(running) - set(wanted))),
        restart=tuple(sorted(a for a in set(wanted) & set(running) if wanted[a] != running[a])),
    )


@dataclass
class AgentState:
    """One supervised agent: its fingerprint, when it started, and, after a crash, when it restarts."""

    fingerprint: str
    backoff: Backoff
    started_at: float | None = None  # None while it waits for its restart
    restart_at: float | None = None

    @property
    def crashes(self) -> int:
        """Crashes (or failed starts) in a row: the backoff's failures."""
        return self.backoff.failures


@dataclass
class Supervisor:
    """The agents ``up`` supervises (pure: ``now`` is given; :mod:`swarm.reconcile.up_agents` does the I/O)."""

    stable_seconds: float = STABLE_SECONDS
    base: float = RESTART_BASE
    cap: float = RESTART_CAP
    rng: random.Random | None = None
    agents: dict[str, AgentState] = field(default_factory=dict)

    def fingerprints(self) -> dict[str, str]:
        """Every supervised agent (running or waiting to restart) -> its fingerprint."""
        return {agent: state.fingerprint for agent, state in self.agents.items()}

    def plan(self, wanted: Mapping[str, str]) -> AgentChanges:
        """What to do after a pass that applied a spec wanting ``wanted`` (id -> fingerprint)."""
        return agent_changes(wanted, self.fingerprints())

    def started(self, agent: str, fingerprint: str, now: float) -> None:
        """``agent`` runs now (first start, restart after a crash, or with new files)."""
        state = self.agents.get(agent)
        if state is None or state.fingerprint != fingerprint:  # new files: a fresh backoff
            state = self.agents[agent] = AgentState(fingerprint, Backoff(base=self.base, cap=self.cap, rng=self.rng))
        state.started_at, state.restart_at = now, None

    def stopped(self, agent: str) -> None:
        """``up`` stopped it (removed from the spec, or shutting down): no restart."""
        self.agents.pop(agent, None)

    def exited(self, agent: str, now: float) -> float:
        """It exited on its own at ``now``: the delay before its restart (the backoff reset first when
        it had stayed up ``stable_seconds``)."""
        state = self.agents[agent]
        if state.started_at is not None and now - state.started_at >= self.stable_seconds:
            state.backoff.reset()
        return self.failed_to_start(agent, now)

    def failed_to_start(self, agent: str, now: float) -> float:
        """A restart could not start it (its files gone, its build failing): the next try's delay."""
        state = self.agents[agent]
        delay = state.backoff.next_delay()
        state.started_at, state.restart_at = None, now + delay
        return delay

    def due(self, now: float) -> list[str]:
        """Agents whose restart time has come (sorted)."""
        return sorted(a for a, s in self.agents.items() if s.restart_at is not None and s.restart_at <= now)

    def running(self, agent: str) -> bool:
        state = self.agents.get(agent)
        return state is not None and state.started_at is not None
