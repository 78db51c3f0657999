"""The circuit breaker: pure machine vs a reference model (hypothesis state machine),
and the Lua script on a real redis-server vs the pure machine."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from swarm.bus.breaker import EDGES, BreakerPolicy, BreakerSnapshot, BreakerState, CircuitBreaker
from swarm.bus.breaker_store import BreakerStore
from tests.support.services import RedisServer

POLICY = BreakerPolicy(failure_threshold=3, cooldown_ms=100, max_cooldown_ms=350, probe_timeout_ms=40)


def test_threshold_three_opens_on_the_fourth_failure_never_the_third() -> None:
    now = [0]
    b = CircuitBreaker(POLICY, clock=lambda: now[0])
    for _ in range(3):
        assert b.record_failure(b.acquire()) is None
    assert b.state is BreakerState.CLOSED and b.snapshot.failures == 3
    tr = b.record_failure(b.acquire())
    assert tr is not None and tr.to_state is BreakerState.OPEN and tr.event == "breaker-opened"
    assert not b.snapshot.allows_publish
    assert b.snapshot.retry_at_ms() == 100


def test_half_open_hands_out_one_probe_and_doubles_the_cooldown_up_to_the_cap() -> None:
    now = [0]
    b = CircuitBreaker(POLICY, clock=lambda: now[0])
    for _ in range(4):
        b.record_failure(b.acquire())
    cooldowns = []
    for _ in range(4):
        now[0] = b.snapshot.retry_at_ms() or 0
        probe = b.acquire()
        assert b.state is BreakerState.HALF_OPEN and probe is not None
        assert b.acquire() is None  # only one probe
        b.record_failure(probe)
        cooldowns.append(b.snapshot.cooldown_ms)
    assert cooldowns == [200, 350, 350, 350]
    now[0] = b.snapshot.retry_at_ms() or 0
    tr = b.record_success(b.acquire())
    assert tr is not None and tr.to_state is BreakerState.CLOSED
    assert b.snapshot == BreakerSnapshot(epoch=b.snapshot.epoch)


def test_a_lost_probe_is_replaced_and_its_late_answer_ignored() -> None:
    now = [0]
    b = CircuitBreaker(POLICY, clock=lambda: now[0])
    for _ in range(4):
        b.record_failure(b.acquire())
    now[0] = 100
    lost = b.acquire()
    now[0] = 100 + POLICY.probe_timeout_ms
    fresh = b.acquire()
    assert lost is not None and fresh is not None and fresh != lost
    assert b.record_success(lost) is None and b.state is BreakerState.HALF_OPEN
    assert b.record_success(fresh) is not None and b.state is BreakerState.CLOSED


def test_snapshot_round_trips_through_hash_fields() -> None:
    snap = BreakerSnapshot(BreakerState.HALF_OPEN, 5, 7, 1000, 200, 1040)
    assert BreakerSnapshot.from_fields(snap.to_fields()) == snap
    assert BreakerSnapshot.from_fields({}) == BreakerSnapshot()


@dataclass
class Ref:
    """The reference model, written from the issue's words, independently of breaker.py."""

    state: str = "closed"
    streak: int = 0
    epoch: int = 0
    open_until: int = 0
    cooldown: int = 0
    probe_out: bool = False


class BreakerMachine(RuleBasedStateMachine):
    """Random sequences of checks, results (fresh and stale), time and resets."""

    @initialize(threshold=st.integers(0, 4))
    def setup(self, threshold: int) -> None:
        self.policy = BreakerPolicy(threshold, cooldown_ms=100, max_cooldown_ms=350, probe_timeout_ms=10**9)
        self.now = 0
        self.b = CircuitBreaker(self.policy, clock=lambda: self.now)
        self.ref = Ref()
        self.tickets: list[int] = []
        self.prev_state = BreakerState.CLOSED

    def _bump(self) -> None:
        self.ref.epoch += 1

    @rule(ms=st.integers(0, 250))
    def advance(self, ms: int) -> None:
        self.now += ms

    @rule()
    def check(self) -> None:
        ticket = self.b.acquire()
        r = self.ref
        if r.state == "closed":
            expected = True
        elif r.state == "open":
            expected = self.now >= r.open_until
            if expected:
                r.state, r.probe_out = "half_open", True
                self._bump()
        else:
            expected = False  # at most one probe in half-open
        assert (ticket is not None) == expected, (r, self.b.snapshot)
        if ticket is not None:
            assert ticket == r.epoch
            self.tickets.append(ticket)

    def _result(self, ticket: int, ok: bool) -> None:
        r = self.ref
        before = self.b.snapshot
        (self.b.record_success if ok else self.b.record_failure)(ticket)
        if ticket != r.epoch or r.state == "open":
            assert self.b.snapshot == before  # stale results and results while open change nothing
            return
        if r.state == "closed":
            r.streak = 0 if ok else r.streak + 1
            if r.streak > self.policy.failure_threshold:
                r.state, r.cooldown = "open", self.policy.cooldown_ms
                r.open_until = self.now + r.cooldown
                self._bump()
        elif ok:
            r.state, r.streak, r.cooldown, r.probe_out = "closed", 0, 0, False
            self._bump()
        else:
            r.cooldown = min(r.cooldown * 2, self.policy.max_cooldown_ms)
            r.state, r.open_until, r.probe_out = "open", self.now + r.cooldown, False
            r.streak += 1
            self._bump()

    @precondition(lambda self: bool(self.tickets))
    @rule(ok=st.booleans(), data=st.data())
    def result(self, ok: bool, data: st.DataObject) -> None:
        ticket = data.draw(st.sampled_from(self.tickets))
        self._result(ticket, ok)

    @rule(ok=st.booleans())
    def stale_result(self, ok: bool) -> None:
        self._result(self.ref.epoch - 1, ok)

    @rule()
    def reset(self) -> None:
        self.b.reset()
        self.ref = Ref(epoch=self.ref.epoch + 1)
        self.prev_state = BreakerState.CLOSED

    @invariant()
    def agrees_with_reference(self) -> None:
        if not hasattr(self, "b"):
            return
        s = self.b.snapshot
        assert s.state.value == self.ref.state
        assert s.epoch == self.ref.epoch
        assert s.allows_publish == (self.ref.state == "closed")
        if self.ref.state == "closed":
            assert s.failures == self.ref.streak
        if self.ref.state == "open":
            assert s.retry_at_ms() == self.ref.open_until

    @invariant()
    def only_allowed_edges(self) -> None:
        if not hasattr(self, "b"):
            return
        state = self.b.state
        if state is not self.prev_state:
            assert (self.prev_state, state) in EDGES
        self.prev_state = state
        for tr in self.b.transitions:
            assert (tr.from_state, tr.to_state) in EDGES or tr.to_state is BreakerState.CLOSED


TestBreakerMachine = BreakerMachine.TestCase


# -- the Lua script against the pure machine, on a real redis-server ----------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.integers(0, 150)),
        st.tuples(st.just("check"), st.just(0)),
        st.tuples(st.sampled_from(["success", "failure"]), st.integers(-1, 0)),  # 0: last ticket, -1: stale
        st.tuples(st.just("reset"), st.just(0)),
    ),
    max_size=25,
)


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> RedisServer:
    server = RedisServer(tmp_path_factory.mktemp("breaker-redis"), appendonly=False).start()
    yield server  # type: ignore[misc]
    server.stop()


@settings(max_examples=25)
@given(ops=OPS, threshold=st.integers(0, 3))
def test_lua_breaker_matches_the_pure_machine(module_redis: RedisServer, ops: list[tuple[str, int]], threshold: int) -> None:
    asyncio.run(_compare(module_redis.url, ops, threshold))


async def _compare(url: str, ops: list[tuple[str, int]], threshold: int) -> None:
    policy = BreakerPolicy(threshold, cooldown_ms=100, max_cooldown_ms=350, probe_timeout_ms=60)
    redis = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        await redis.flushdb()
        store = BreakerStore(redis, "cmp", policy)
        now = 1_000_000
        pure = CircuitBreaker(policy, clock=lambda: now)
        last = 0
        for op, arg in ops:
            if op == "advance":
                now += arg
                continue
            if op == "check":
                reply = await store.acquire_reply("a", now_ms=now)
                ticket = pure.acquire()
                assert reply.ticket == ticket
                last = ticket if ticket is not None else last
            elif op == "reset":
                reply = await store.reset("a")
                pure.reset()
            else:
                epoch = last if arg == 0 else pure.snapshot.epoch - 1
                call = store.record_success if op == "success" else store.record_failure
                reply = await call("a", epoch, now_ms=now)
                (pure.record_success if op == "success" else pure.record_failure)(epoch)
            assert reply.snapshot == pure.snapshot, (op, ops)
        events = await redis.xrange("swarm:{cmp}:events")
        expected = [tr.event for tr in pure.transitions if tr.event]
        assert [e[1]["type"] for e in events] == expected
        assert all(e[1]["agent_id"] == "a" for e in events)
    finally:
        await redis.aclose()


async def test_lua_breaker_uses_the_redis_clock_for_the_cooldown(admin: aioredis.Redis) -> None:
    store = BreakerStore(admin, "clock", BreakerPolicy(0, cooldown_ms=150, max_cooldown_ms=300, probe_timeout_ms=1000))
    reply = await store.record_failure("x", 0)
    assert reply.transition is BreakerState.OPEN
    assert 0 < reply.cooldown_left_ms() <= 150
    assert await store.acquire("x") is None
    await asyncio.sleep(0.2)
    probe = await store.acquire("x")
    assert probe is not None and await store.acquire("x") is None
    assert (await admin.hget("swarm:{clock}:breaker:x", "state")) == "half_open"
    assert (await store.record_success("x", probe)).snapshot.state is BreakerState.CLOSED
