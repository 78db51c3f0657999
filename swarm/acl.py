"""Topic ACLs: the pattern grammar and the allow/deny decision (a contract: specs and outside scripts rely on it).

Pure. The compiler uses it to build ``acl.json``; the bus uses the same code on the
compiled table, so a decision can never differ between review and runtime.

Grammar: a topic is dot-separated tokens of ``[a-z0-9_-]``. In a pattern ``*``
matches exactly one token and ``>`` matches one or more trailing tokens (only as
the last token). Decisions: default deny; a matching deny beats any allow; rule
order never matters (when several rules match, the reported one is the smallest
in sort order, so the explanation is deterministic too).

>>> table = AclTable({"planner": RoleRules(publish=("tasks.>",), deny_publish=("tasks.admin.>",))})
>>> table.can_publish("planner", "tasks.research")
True
>>> table.decide("planner", "publish", "tasks.admin.reset").rule
'deny.publish: tasks.admin.>'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Literal, Mapping, Protocol

Action = Literal["publish", "subscribe"]
ACTIONS: tuple[Action, Action] = ("publish", "subscribe")

_TOKEN = re.compile(r"^[a-z0-9_-]+$")


class PatternError(ValueError):
    """A malformed ACL pattern; the message says what is wrong."""


def parse_pattern(pattern: str) -> tuple[str, ...]:
    """Split a pattern into tokens, raising :class:`PatternError` when malformed."""
    if pattern == "":
        raise PatternError("empty pattern")
    tokens = tuple(pattern.split("."))
    for i, tok in enumerate(tokens):
        if tok == "":
            raise PatternError(f"empty token at position {i + 1} in {pattern!r}")
        if tok == ">":
            if i != len(tokens) - 1:
                raise PatternError(f"'>' must be the last token in {pattern!r}")
        elif tok == "*":
            continue
        elif not _TOKEN.fullmatch(tok):
            raise PatternError(
                f"token {tok!r} in {pattern!r} has characters outside [a-z0-9_-] "
                "(wildcards are a whole token: '*' or '>')"
            )
    return tokens


def match_tokens(pattern: tuple[str, ...], topic: tuple[str, ...]) -> bool:
    for i, tok in enumerate(pattern):
        if tok == ">":
            return len(topic) > i
        if i >= len(topic):
            return False
        if tok != "*" and tok != topic[i]:
            return False
    return len(pattern) == len(topic)


def matches(pattern: str, topic: str) -> bool:
    """True when ``topic`` matches ``pattern`` (both must be well formed)."""
    return match_tokens(parse_pattern(pattern), tuple(topic.split(".")))


@dataclass(frozen=True)
class Decision:
    """The outcome of one ACL question and the rule that decided it."""

    allow: bool
    rule: str  # "publish: tasks.>", "deny.publish: tasks.admin.>" or "default deny"

    def to_dict(self) -> dict[str, object]:
        return {"allow": self.allow, "rule": self.rule}


DEFAULT_DENY = "default deny"


class _RoleLike(Protocol):
    publish: list[str]
    subscribe: list[str]

    @property
    def deny(self) -> "_RuleSetLike": ...


class _RuleSetLike(Protocol):
    publish: list[str]
    subscribe: list[str]


@dataclass(frozen=True)
class RoleRules:
    """The four pattern lists of a role."""

    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    deny_publish: tuple[str, ...] = ()
    deny_subscribe: tuple[str, ...] = ()

    @classmethod
    def from_role(cls, role: _RoleLike) -> "RoleRules":
        return cls(
            publish=tuple(role.publish),
            subscribe=tuple(role.subscribe),
            deny_publish=tuple(role.deny.publish),
            deny_subscribe=tuple(role.deny.subscribe),
        )

    def allows(self, action: Action) -> tuple[str, ...]:
        return self.publish if action == "publish" else self.subscribe

    def denies(self, action: Action) -> tuple[str, ...]:
        return self.deny_publish if action == "publish" else self.deny_subscribe

    def to_dict(self) -> dict[str, object]:
        return {
            "publish": sorted(self.publish),
            "subscribe": sorted(self.subscribe),
            "deny": {"publish": sorted(self.deny_publish), "subscribe": sorted(self.deny_subscribe)},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> "RoleRules":
        deny = data.get("deny") or {}
        assert isinstance(deny, Mapping)
        return cls(
            publish=tuple(data.get("publish") or ()),  # type: ignore[arg-type]
            subscribe=tuple(data.get("subscribe") or ()),  # type: ignore[arg-type]
            deny_publish=tuple(deny.get("publish") or ()),
            deny_subscribe=tuple(deny.get("subscribe") or ()),
        )


def decide(rules: RoleRules, action: Action, topic: str) -> Decision:
    """Decide one question for one role. Deny beats allow; default deny."""
    topic_tokens = tuple(topic.split("."))
    denying = sorted(p for p in rules.denies(action) if match_tokens(parse_pattern(p), topic_tokens))
    if denying:
        return Decision(False, f"deny.{action}: {denying[0]}")
    allowing = sorted(p for p in rules.allows(action) if match_tokens(parse_pattern(p), topic_tokens))
    if allowing:
        return Decision(True, f"{action}: {allowing[0]}")
    return Decision(False, DEFAULT_DENY)


class AclTable:
    """ACL decisions for a set of roles; unknown roles are denied everything."""

    def __init__(self, roles: Mapping[str, RoleRules]) -> None:
        self._roles = dict(roles)
        # (role, action, topic) -> decision: a fleet asks the same few questions once per agent
        self._decided: dict[tuple[str, str, str], Decision] = {}

    @property
    def roles(self) -> Mapping[str, RoleRules]:
        return self._roles

    def decide(self, role: str, action: Action, topic: str) -> Decision:
        key = (role, action, topic)
        found = self._decided.get(key)
        if found is not None:
            return found
        rules = self._roles.get(role)
        out = Decision(False, f"unknown role {role!r}") if rules is None else decide(rules, action, topic)
        self._decided[key] = out
        return out

    def can_publish(self, role: str, topic: str) -> bool:
        return self.decide(role, "publish", topic).allow

    def can_subscribe(self, role: str, topic: str) -> bool:
        return self.decide(role, "subscribe", topic).allow

    def rows(self, topics: Iterable[str]) -> list[dict[str, object]]:
        """Every role x topic with both decisions, sorted by role then topic."""
        out: list[dict[str, object]] = []
        for role in sorted(self._roles):
            for topic in sorted(set(topics)):
                out.append(
                    {
                        "role": role,
                        "topic": topic,
                        "publish": self.decide(role, "publish", topic).to_dict(),
                        "subscribe": self.decide(role, "subscribe", topic).to_dict(),
                    }
                )
        return out

    @classmethod
    def from_spec_roles(cls, roles: Mapping[str, _RoleLike]) -> "AclTable":
        return cls({name: RoleRules.from_role(r) for name, r in roles.items()})

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> "AclTable":
        """Build from the ``roles`` section of a compiled ``acl.json``."""
        roles = data["roles"]
        assert isinstance(roles, Mapping)
        return cls({name: RoleRules.from_dict(r) for name, r in roles.items()})
