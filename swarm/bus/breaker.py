"""The circuit breaker of one agent as a pure state machine (shared by every process through Redis).

Pure, no I/O, clock injected. The health prober feeds it (a failed health check
counts, a success resets the count); the bus refuses an agent's publishes unless
its breaker is closed. The same rules run in Redis as ``lua/breaker.lua`` so every
process shares one state (:mod:`swarm.bus.breaker_store`); this module is the
reference the Lua script is tested against, and the place to read the rules:

* closed → open when consecutive failures *exceed* ``failure_threshold``
  (threshold 3: the 4th failure opens, never the 3rd); a success resets the count.
* open → half-open only when a probe is asked for after the cooldown; exactly one
  probe is handed out (a half-open that lets every call through is opossum #819).
  A probe not answered within ``probe_timeout_ms`` may be replaced by a new one,
  under a new epoch, so the lost probe's late answer is ignored.
* half-open → closed on the probe's success; → open on its failure, with the
  cooldown doubled up to ``max_cooldown_ms``.
* Every transition bumps ``epoch``; a result carrying another epoch changes
  nothing (Polly #217). Results while open are ignored: nothing gets through.
* ``reset`` closes the breaker from any state (an operator's decision).

>>> policy = BreakerPolicy(failure_threshold=1, cooldown_ms=1000, max_cooldown_ms=4000)
>>> clock = [0]
>>> b = CircuitBreaker(policy, clock=lambda: clock[0])
>>> _ = b.record_failure(b.acquire()); b.state.value
'closed'
>>> _ = b.record_failure(b.acquire()); b.state.value
'open'
>>> b.acquire() is None          # nothing gets through before the cooldown
True
>>> clock[0] = 1000; t = b.acquire(); (b.state.value, b.acquire())
('half_open', None)
>>> b.record_success(t).to_state.value
'closed'
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Callable, Mapping


class BreakerState(str, enum.Enum):
    """The three states; the value is what Redis stores in the ``state`` field."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerPolicy:
    """Settings of the breaker, in milliseconds (bus.json holds them in seconds)."""

    failure_threshold: int = 3
    cooldown_ms: int = 30_000
    max_cooldown_ms: int = 300_000
    probe_timeout_ms: int = 10_000

    @classmethod
    def from_seconds(
        cls,
        *,
        failure_threshold: int,
        cooldown_seconds: float,
        max_cooldown_seconds: float,
        probe_timeout_seconds: float = 10.0,
    ) -> "BreakerPolicy":
        cooldown = max(1, int(cooldown_seconds * 1000))
        return cls(
            failure_threshold=failure_threshold,
            cooldown_ms=cooldown,
            max_cooldown_ms=max(cooldown, int(max_cooldown_seconds * 1000)),
            probe_timeout_ms=max(1, int(probe_timeout_seconds * 1000)),
        )


@dataclass(frozen=True)
class BreakerSnapshot:
    """The stored state of one breaker (the fields of its Redis hash)."""

    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    epoch: int = 0
    opened_at_ms: int = 0
    cooldown_ms: int = 0
    probe_until_ms: int = 0  # 0: no probe in flight

    def retry_at_ms(self) -> int | None:
        """When an open breaker may be probed again; None unless open."""
        if self.state is BreakerState.OPEN:
            return self.opened_at_ms + self.cooldown_ms
        return None

    @property
    def allows_publish(self) -> bool:
        return self.state is BreakerState.CLOSED

    def to_fields(self) -> dict[str, str]:
        return {
            "state": self.state.value,
            "failures": str(self.failures),
            "epoch": str(self.epoch),
            "opened_at_ms": str(self.opened_at_ms),
            "cooldown_ms": str(self.cooldown_ms),
            "probe": str(self.probe_until_ms),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> "BreakerSnapshot":
        """Parse a Redis hash; a missing hash is a closed breaker."""

        def num(name: str) -> int:
            return int(fields.get(name) or 0)

        return cls(
            state=BreakerState(fields.get("state") or "closed"),
            failures=num("failures"),
            epoch=num("epoch"),
            opened_at_ms=num("opened_at_ms"),
            cooldown_ms=num("cooldown_ms"),
            probe_until_ms=num("probe"),
        )


@dataclass(frozen=True)
class Transition:
    """A change of state; ``event`` is the watch event it emits, if any."""

    from_state: BreakerState
    to_state: BreakerState
    epoch: int

    @property
    def event(self) -> str | None:
        if self.to_state is BreakerState.OPEN:
            return "breaker-opened"
        if self.to_state is BreakerState.CLOSED:
            return "breaker-closed"
        return None


#: The only edges the machine may take (reset adds any → closed).
EDGES = frozenset(
    {
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
        (BreakerState.HALF_OPEN, BreakerState.OPEN),
    }
)


def _move(snap: BreakerSnapshot, to: BreakerState, **changes: int) -> tuple[BreakerSnapshot, Transition]:
    new = replace(snap, state=to, epoch=snap.epoch + 1, **changes)
    return new, Transition(snap.state, to, new.epoch)


def acquire(snap: BreakerSnapshot, policy: BreakerPolicy, now_ms: int) -> tuple[BreakerSnapshot, int | None, Transition | None]:
    """Ask to run one health check: returns (new state, ticket epoch or None, transition)."""
    if snap.state is BreakerState.CLOSED:
        return snap, snap.epoch, None
    if snap.state is BreakerState.OPEN:
        if now_ms < snap.opened_at_ms + snap.cooldown_ms:
            return snap, None, None
        new, tr = _move(snap, BreakerState.HALF_OPEN, probe_until_ms=now_ms + policy.probe_timeout_ms)
        return new, new.epoch, tr
    if now_ms < snap.probe_until_ms:
        return snap, None, None
    # The probe in flight was lost: hand out a new one under a new epoch.
    new = replace(snap, epoch=snap.epoch + 1, probe_until_ms=now_ms + policy.probe_timeout_ms)
    return new, new.epoch, None


def record(
    snap: BreakerSnapshot, policy: BreakerPolicy, now_ms: int, epoch: int, ok: bool
) -> tuple[BreakerSnapshot, Transition | None]:
    """Apply one health-check result taken under ``epoch``."""
    if epoch != snap.epoch or snap.state is BreakerState.OPEN:
        return snap, None
    if snap.state is BreakerState.CLOSED:
        if ok:
            return replace(snap, failures=0), None
        failures = snap.failures + 1
        if failures > policy.failure_threshold:
            return _move(
                snap, BreakerState.OPEN, failures=failures, opened_at_ms=now_ms, cooldown_ms=policy.cooldown_ms
            )
        return replace(snap, failures=failures), None
    if ok:
        return _move(snap, BreakerState.CLOSED, failures=0, opened_at_ms=0, cooldown_ms=0, probe_until_ms=0)
    cooldown = min(max(snap.cooldown_ms, policy.cooldown_ms) * 2, policy.max_cooldown_ms)
    return _move(
        snap, BreakerState.OPEN, failures=snap.failures + 1, opened_at_ms=now_ms, cooldown_ms=cooldown, probe_until_ms=0
    )


def reset(snap: BreakerSnapshot) -> tuple[BreakerSnapshot, Transition | None]:
    """Close the breaker whatever its state; emits ``breaker-closed`` unless it was closed."""
    new = BreakerSnapshot(epoch=snap.epoch + 1)
    if snap.state is BreakerState.CLOSED:
        return new, None
    return new, Transition(snap.state, BreakerState.CLOSED, new.epoch)


class CircuitBreaker:
    """An in-process breaker around the pure functions, with an injectable clock (ms)."""

    def __init__(self, policy: BreakerPolicy, *, clock: Callable[[], int]) -> None:
        self.policy = policy
        self.clock = clock
        self.snapshot = BreakerSnapshot()
        self.transitions: list[Transition] = []

    @property
    def state(self) -> BreakerState:
        return self.snapshot.state

    def _note(self, tr: Transition | None) -> Transition | None:
        if tr is not None:
            self.transitions.append(tr)
        return tr

    def acquire(self) -> int | None:
        self.snapshot, ticket, tr = acquire(self.snapshot, self.policy, self.clock())
        self._note(tr)
        return ticket

    def record_success(self, epoch: int | None) -> Transition | None:
        if epoch is None:
            return None
        self.snapshot, tr = record(self.snapshot, self.policy, self.clock(), epoch, True)
        return self._note(tr)

    def record_failure(self, epoch: int | None) -> Transition | None:
        if epoch is None:
            return None
        self.snapshot, tr = record(self.snapshot, self.policy, self.clock(), epoch, False)
        return self._note(tr)

    def reset(self) -> Transition | None:
        self.snapshot, tr = reset(self.snapshot)
        return self._note(tr)
