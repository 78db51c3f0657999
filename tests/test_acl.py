"""Unit tests of the ACL grammar and decisions (swarm.acl: the grammar specs rely on)."""

from __future__ import annotations

import pytest

from swarm.acl import DEFAULT_DENY, AclTable, Decision, PatternError, RoleRules, decide, matches, parse_pattern


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("", "empty pattern"),
        ("a..b", "empty token at position 2"),
        (".a", "empty token at position 1"),
        ("a.", "empty token at position 2"),
        ("a.>.b", "'>' must be the last token"),
        (">.a", "'>' must be the last token"),
        ("a*", "outside [a-z0-9_-]"),
        ("A.b", "outside [a-z0-9_-]"),
        ("a.b>", "outside [a-z0-9_-]"),
    ],
)
def test_parse_pattern_errors(pattern: str, fragment: str) -> None:
    with pytest.raises(PatternError, match=None) as info:
        parse_pattern(pattern)
    assert fragment in str(info.value)


@pytest.mark.parametrize("pattern", [">", "*", "a", "a.*.c", "a.>", "*.*", "a_b-c.d9"])
def test_parse_pattern_accepts(pattern: str) -> None:
    assert parse_pattern(pattern) == tuple(pattern.split("."))


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("a.*", "a.b", True),
        ("a.*", "a", False),
        ("a.*", "a.b.c", False),
        ("a.>", "a.b", True),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),  # '>' needs at least one token
        (">", "x", True),
        ("*.b", "a.b", True),
        ("*.b", "a.c", False),
        ("a.b", "a.b", True),
        ("a.b", "a.bc", False),
    ],
)
def test_matches(pattern: str, topic: str, expected: bool) -> None:
    assert matches(pattern, topic) is expected


def test_deny_beats_allow_and_reports_the_rule() -> None:
    rules = RoleRules(publish=("tasks.>",), deny_publish=("tasks.admin.>",))
    assert decide(rules, "publish", "tasks.admin.reset") == Decision(False, "deny.publish: tasks.admin.>")
    assert decide(rules, "publish", "tasks.x") == Decision(True, "publish: tasks.>")
    assert decide(rules, "subscribe", "tasks.x") == Decision(False, DEFAULT_DENY)


def test_action_matters() -> None:
    rules = RoleRules(subscribe=("a.*",))
    assert decide(rules, "subscribe", "a.b").allow
    assert not decide(rules, "publish", "a.b").allow


def test_reported_rule_is_smallest_matching() -> None:
    rules = RoleRules(publish=("a.>", "a.*", "*.b"))
    assert decide(rules, "publish", "a.b").rule == "publish: *.b"


def test_table_unknown_role_is_denied() -> None:
    table = AclTable({"r": RoleRules(publish=(">",))})
    assert table.can_publish("r", "x.y")
    assert not table.can_subscribe("r", "x.y")
    decision = table.decide("nobody", "publish", "x")
    assert not decision.allow and "unknown role" in decision.rule


def test_table_rows_and_json_round_trip() -> None:
    table = AclTable({"b": RoleRules(publish=("x.*",)), "a": RoleRules(subscribe=(">",), deny_subscribe=("x.y",))})
    rows = table.rows(["x.y", "x.z", "x.y"])
    assert [(r["role"], r["topic"]) for r in rows] == [("a", "x.y"), ("a", "x.z"), ("b", "x.y"), ("b", "x.z")]
    assert rows[0]["subscribe"] == {"allow": False, "rule": "deny.subscribe: x.y"}
    again = AclTable.from_json({"roles": {n: r.to_dict() for n, r in table.roles.items()}})
    assert again.rows(["x.y", "x.z"]) == rows


def test_a_pattern_token_with_a_trailing_newline_is_malformed() -> None:
    """``^...$`` with ``re.match`` accepts "tasks\\n"; tokens must match whole."""
    with pytest.raises(PatternError):
        parse_pattern("tasks\n.>")
