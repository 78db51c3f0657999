"""Hypothesis properties of the ACL matcher against an independent reference model.

The reference translates a pattern into a regular expression (``*`` -> one token,
``>`` -> one or more tokens) and decides "deny if any deny matches, else allow if
any allow matches, else deny" — the grammar of swarm.acl (README "The spec") written a second way.
"""

from __future__ import annotations

import random
import re

from hypothesis import given
from hypothesis import strategies as st

from swarm.acl import Action, RoleRules, decide, matches, parse_pattern

TOKENS = ["a", "b", "c-d", "e_1"]
_TOKEN_RE = r"[a-z0-9_-]+"

topics = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=4).map(".".join)
patterns = st.builds(
    lambda body, tail: ".".join(body + tail),
    st.lists(st.sampled_from(TOKENS + ["*", "*"]), min_size=0, max_size=3),
    st.sampled_from([[], [], [">"]]),
).filter(bool)
pattern_lists = st.lists(patterns, max_size=4).map(tuple)
actions: st.SearchStrategy[Action] = st.sampled_from(["publish", "subscribe"])
rule_sets = st.builds(RoleRules, pattern_lists, pattern_lists, pattern_lists, pattern_lists)


def reference_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    for token in pattern.split("."):
        if token == "*":
            parts.append(_TOKEN_RE)
        elif token == ">":
            parts.append(rf"{_TOKEN_RE}(?:\.{_TOKEN_RE})*")
        else:
            parts.append(re.escape(token))
    return re.compile(r"\.".join(parts))


def reference_allows(rules: RoleRules, action: Action, topic: str) -> bool:
    def hit(pats: tuple[str, ...]) -> bool:
        return any(reference_regex(p).fullmatch(topic) for p in pats)

    if hit(rules.denies(action)):
        return False
    return hit(rules.allows(action))


@given(patterns, topics)
def test_matcher_agrees_with_regex_model(pattern: str, topic: str) -> None:
    parse_pattern(pattern)  # every generated pattern is well formed
    assert matches(pattern, topic) == bool(reference_regex(pattern).fullmatch(topic))


@given(rule_sets, actions, topics)
def test_decision_agrees_with_reference(rules: RoleRules, action: Action, topic: str) -> None:
    decision = decide(rules, action, topic)
    assert decision.allow == reference_allows(rules, action, topic)
    # the reported rule really matches and is of the right kind
    if decision.rule != "default deny":
        kind, pattern = decision.rule.split(": ", 1)
        assert kind == (action if decision.allow else f"deny.{action}")
        assert matches(pattern, topic)


@given(rule_sets, actions, topics, patterns)
def test_adding_a_deny_never_grants(rules: RoleRules, action: Action, topic: str, deny: str) -> None:
    before = decide(rules, action, topic).allow
    stricter = RoleRules(
        publish=rules.publish,
        subscribe=rules.subscribe,
        deny_publish=rules.deny_publish + ((deny,) if action == "publish" else ()),
        deny_subscribe=rules.deny_subscribe + ((deny,) if action == "subscribe" else ()),
    )
    after = decide(stricter, action, topic).allow
    assert not (after and not before)
    if matches(deny, topic):
        assert not after


@given(rule_sets, actions, topics, st.randoms(use_true_random=False))
def test_rule_order_never_changes_a_decision(
    rules: RoleRules, action: Action, topic: str, rnd: random.Random
) -> None:
    def shuffled(items: tuple[str, ...]) -> tuple[str, ...]:
        out = list(items)
        rnd.shuffle(out)
        return tuple(out)

    reordered = RoleRules(
        publish=shuffled(rules.publish),
        subscribe=shuffled(rules.subscribe),
        deny_publish=shuffled(rules.deny_publish),
        deny_subscribe=shuffled(rules.deny_subscribe),
    )
    assert decide(reordered, action, topic) == decide(rules, action, topic)
