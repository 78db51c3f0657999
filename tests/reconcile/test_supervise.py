"""Unit tests of the pure decisions of ``swarm up --demo``'s agent supervision (no process, no sleep)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm.reconcile.supervise import AgentChanges, Supervisor, agent_changes


def test_new_agents_start_removed_ones_stop_changed_ones_restart() -> None:
    changes = agent_changes({"a": "1", "b": "2", "new": "1"}, {"a": "1", "b": "1", "gone": "1"})
    assert changes == AgentChanges(start=("new",), stop=("gone",), restart=("b",))
    assert not changes.empty
    assert agent_changes({"a": "1"}, {"a": "1"}).empty


ids = st.dictionaries(st.sampled_from("abcdef"), st.sampled_from("xyz"), max_size=6)


@given(ids, ids)
def test_applying_the_changes_gives_what_is_wanted(wanted: dict[str, str], running: dict[str, str]) -> None:
    changes = agent_changes(wanted, running)
    after = {a: f for a, f in running.items() if a not in changes.stop and a not in changes.restart}
    after.update({a: wanted[a] for a in changes.start + changes.restart})
    assert after == wanted
    assert not set(changes.start) & set(changes.stop) and not set(changes.restart) & set(changes.start + changes.stop)


def _supervisor() -> Supervisor:
    return Supervisor(stable_seconds=10.0, base=1.0, cap=8.0, rng=random.Random(7))


def test_a_crash_loop_waits_longer_each_time_up_to_the_cap() -> None:
    sup = _supervisor()
    sup.started("a", "f1", now=0.0)
    ceilings, now = [], 0.0
    for _ in range(6):
        now += 0.5  # dies half a second after each start
        delay = sup.exited("a", now)
        ceilings.append(delay)
        assert not sup.running("a") and sup.due(now) == [] and sup.due(now + delay) == ["a"]
        now += delay
        sup.started("a", "f1", now)
    for n, delay in enumerate(ceilings):
        assert 0.05 <= delay <= min(8.0, 1.0 * 2 ** n)
    assert sup.agents["a"].crashes == 6 and sup.agents["a"].backoff.failures == 6


def test_the_backoff_resets_after_the_agent_stayed_up() -> None:
    sup = _supervisor()
    sup.started("a", "f1", now=0.0)
    for t in (1.0, 2.0, 3.0, 4.0):  # four quick crashes
        sup.exited("a", t)
        sup.started("a", "f1", t + 0.01)
    assert sup.agents["a"].backoff.failures == 4
    delay = sup.exited("a", 4.01 + 10.0)  # up for the stable time: starts over
    assert delay <= 1.0 and sup.agents["a"].crashes == 1 and sup.agents["a"].backoff.failures == 1


def test_new_files_get_a_fresh_backoff_and_a_stop_forgets_the_agent() -> None:
    sup = _supervisor()
    sup.started("a", "f1", now=0.0)
    sup.exited("a", 0.1)
    sup.started("a", "f1", 5.0)
    sup.exited("a", 5.1)
    assert sup.plan({"a": "f2"}) == AgentChanges(restart=("a",))  # waiting agents count as supervised
    sup.started("a", "f2", 6.0)
    assert sup.agents["a"].backoff.failures == 0 and sup.fingerprints() == {"a": "f2"}
    sup.stopped("a")
    assert sup.fingerprints() == {} and sup.due(1e9) == [] and not sup.running("a")
    assert sup.plan({"a": "f2"}) == AgentChanges(start=("a",))


def test_a_failed_restart_is_retried_later() -> None:
    sup = _supervisor()
    sup.started("a", "f1", now=0.0)
    first = sup.exited("a", 0.1)
    again = sup.failed_to_start("a", 0.1 + first)
    assert sup.due(0.1 + first) == [] and sup.due(0.1 + first + again) == ["a"]
    with pytest.raises(KeyError):
        sup.exited("never-started", 0.0)
