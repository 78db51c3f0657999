"""Semantic checks of a structurally valid spec (duplicates, roles, topics, patterns, ports, intervals). Pure: no I/O.

Who calls it: :func:`swarm.spec.loader.parse_spec_texts` after every document
validated (or with the invalid ``kind: Agent`` documents left out), so that
structural and semantic problems are reported together.

Each rule returns :class:`~swarm.errors.SpecIssue` objects positioned through the
:class:`~swarm.spec.sourcemap.SourceMap`; a conflict (duplicate id, port
collision) names the other place in its message and in ``related``, the way
``cue vet`` does. ACL permission questions are answered by :func:`swarm.acl.decide`
— the same code the compiler and the bus use — and the message quotes the rule
that decided. Roles with a malformed pattern are not used for permission checks,
so one typo in a pattern does not cascade into a denial per agent.

Duplicate role names never reach this module: ``roles`` is a YAML mapping, so the
loader reports them as duplicate keys ("duplicate role 'planner'").
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Sequence

from swarm.acl import ACTIONS, DEFAULT_DENY, Action, Decision, PatternError, RoleRules, decide, parse_pattern
from swarm.errors import Position, SpecIssue
from swarm.spec.models import HANDLER_PATTERN, NODE_HANDLER_PATTERN, RESERVED_HEADERS, Spec
from swarm.spec.sourcemap import SourceMap, did_you_mean

__all__ = ["RULES", "check_spec"]

_AGENT_FIELD: dict[Action, str] = {"publish": "publishes", "subscribe": "subscribes"}


def _issue(sources: SourceMap, path: tuple[object, ...], message: str, related: Iterable[Position] = ()) -> SpecIssue:
    return SpecIssue(sources.nearest(path), sources.label(path), message, tuple(related))


def _duplicates(
    sources: SourceMap, what: str, items: Sequence[tuple[str, tuple[object, ...]]]
) -> list[SpecIssue]:
    """One issue per repeated value, naming where it was first declared."""
    issues: list[SpecIssue] = []
    first: dict[str, tuple[object, ...]] = {}
    for value, path in items:
        if value not in first:
            first[value] = path
            continue
        other = sources.nearest(first[value])
        issues.append(
            _issue(
                sources,
                path,
                f"duplicate {what} {value!r} (also declared at {other} as {sources.label(first[value])})",
                [other],
            )
        )
    return issues


def check_duplicate_agents(spec: Spec, sources: SourceMap) -> list[SpecIssue]:
    ids = [a.id for a in spec.agents]
    if len(set(ids)) == len(ids):  # the usual answer, without a path per agent (10,000 of them)
        return []
    items = [(aid, ("agents", i, "id")) for i, aid in enumerate(ids)]
    return _duplicates(sources, "agent id", items)


def check_duplicate_topics(spec: Spec, sources: SourceMap) -> list[SpecIssue]:
    items = [(t.name, ("topics", i, "name")) for i, t in enumerate(spec.topics)]
    return _duplicates(sources, "topic", items)


def check_patterns(spec: Spec, sources: SourceMap) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    for role_name, role in spec.roles.items():
        lists = {
            ("publish",): role.publish,
            ("subscribe",): role.subscribe,
            ("deny", "publish"): role.deny.publish,
            ("deny", "subscribe"): role.deny.subscribe,
        }
        for where, patterns in lists.items():
            for j, pattern in enumerate(patterns):
                try:
                    parse_pattern(pattern)
                except PatternError as exc:
                    path = ("roles", role_name) + where + (j,)
                    issues.append(_issue(sources, path, f"malformed ACL pattern: {exc}"))
    return issues


def _valid_rules(spec: Spec) -> dict[str, RoleRules]:
    """Rules of the roles whose patterns all parse."""
    out: dict[str, RoleRules] = {}
    for name, role in spec.roles.items():
        rules = RoleRules.from_role(role)
        try:
            for pattern in rules.publish + rules.subscribe + rules.deny_publish + rules.deny_subscribe:
                parse_pattern(pattern)
        except PatternError:
            continue
        out[name] = rules
    return out


def check_agent_roles_and_topics(spec: Spec, sources: SourceMap) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    declared = {t.name for t in spec.topics}
    valid_rules = _valid_rules(spec)
    decided: dict[tuple[str, Action, str], Decision] = {}  # a fleet asks the same few questions
    # what is checked here depends on the role and the two topic lists alone; a fleet has a few
    # dozen such shapes, so an agent of a shape that passed is not walked again
    clean: set[tuple[str, tuple[str, ...], tuple[str, ...]]] = set()
    for i, agent in enumerate(spec.agents):
        shape = (agent.role, tuple(agent.publishes), tuple(agent.subscribes))
        if shape in clean:
            continue
        found = len(issues)
        role_known = agent.role in spec.roles
        if not role_known:
            hint = did_you_mean(agent.role, spec.roles) or (
                " (defined roles: " + ", ".join(sorted(spec.roles)) + ")" if spec.roles else " (no roles are defined)"
            )
            issues.append(
                _issue(sources, ("agents", i, "role"), f"role {agent.role!r} is not defined{hint}")
            )
        rules = valid_rules.get(agent.role)
        for action in ACTIONS:
            field = _AGENT_FIELD[action]
            for j, topic in enumerate(getattr(agent, field)):
                path = ("agents", i, field, j)
                if topic not in declared:
                    issues.append(
                        _issue(
                            sources,
                            path,
                            f"topic {topic!r} is not declared under topics{did_you_mean(topic, declared)}",
                        )
                    )
                    continue
                if rules is None:
                    continue
                key = (agent.role, action, topic)
                decision = decided.get(key) or decided.setdefault(key, decide(rules, action, topic))
                if not decision.allow:
                    why = (
                        f"no {action} rule of role {agent.role!r} matches (default deny)"
                        if decision.rule == DEFAULT_DENY
                        else f"denied by {decision.rule}"
                    )
                    issues.append(
                        _issue(
                            sources,
                            path,
                            f"role {agent.role!r} may not {action} to {topic!r}: {why}",
                            [p for p in [sources.position(("roles", agent.role))] if p],
                        )
                    )
        if len(issues) == found:
            clean.add(shape)
    return issues


def check_ports(spec: Spec, sources: SourceMap) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    ports = [a.port for a in spec.agents]
    if len(set(ports)) == len(ports):
        return issues
    first: dict[int, int] = {}
    for i, agent in enumerate(spec.agents):
        if agent.port not in first:
            first[agent.port] = i
            continue
        k = first[agent.port]
        other = sources.nearest(("agents", k, "port"))
        issues.append(
            _issue(
                sources,
                ("agents", i, "port"),
                f"port {agent.port} of agent {agent.id!r} is also used by agent "
                f"{spec.agents[k].id!r} ({sources.label(('agents', k, 'port'))} at {other})",
                [other],
            )
        )
    return issues


def check_heartbeat(spec: Spec, sources: SourceMap) -> list[SpecIssue]:
    reg = spec.swarm.registry
    beat = reg.effective_heartbeat_interval
    if beat < reg.ttl_seconds:
        return []
    explicit = reg.heartbeat_interval is not None
    path = ("registry", "heartbeat_interval" if explicit else "ttl_seconds")
    what = "heartbeat_interval" if explicit else "the default heartbeat_interval (ttl_seconds / 3, at least 1)"
    ttl_pos = sources.position(("registry", "ttl_seconds"))
    related = [ttl_pos] if explicit and ttl_pos is not None else []
    return [
        _issue(
            sources,
            path,
            f"{what} ({beat}) must be less than ttl_seconds ({reg.ttl_seconds}), "
            "or registrations expire between heartbeats",
            related,
        )
    ]


#: Top-level modules a handler may not live in: the image copies the handler's top-level
#: package or module into /app beside the generated ``server.py``, ahead of site-packages.
RESERVED_HANDLER_MODULES = ("server", "swarm")


_PYTHON_HANDLER = re.compile(HANDLER_PATTERN)
_NODE_HANDLER = re.compile(NODE_HANDLER_PATTERN)


def node_handler_problem(handler: str) -> str | None:
    """Why ``handler`` is not a ``runtime: node`` handler (``path/to/file.ts:export``), or None."""
    path, _, export = handler.rpartition(":")
    if not path.endswith((".ts", ".js")):
        return "a node agent's handler is 'path/to/file.ts:export' (or .js), relative to the directory holding compiled/"
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path) or "\\" in path:
        return f"the handler's path {path!r} must be relative (to the directory holding compiled/), with '/' separators"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return f"the handler's path {path!r} may not contain '..', '.' or empty segments: it must stay inside the source directory"
    if not _NODE_HANDLER.fullmatch(handler):
        return (f"the handler's path {path!r} or export {export!r} has characters outside letters, digits, '_', '-', '.' "
                "(path segments start with a letter, digit or '_'; the export is a JavaScript identifier)")
    return None


def check_handlers(spec: Spec, sources: SourceMap) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    for i, agent in enumerate(spec.agents):
        if agent.handler is None:
            continue
        if agent.runtime == "node":
            problem = node_handler_problem(agent.handler)
            if problem is not None:
                issues.append(_issue(sources, ("agents", i, "handler"), f"handler {agent.handler!r}: {problem}"))
            continue
        if not _PYTHON_HANDLER.fullmatch(agent.handler):
            issues.append(
                _issue(
                    sources,
                    ("agents", i, "handler"),
                    f"handler {agent.handler!r}: a python agent's handler is 'package.module:function' "
                    "(a file path with .ts/.js is for runtime: node)",
                )
            )
            continue
        top = agent.handler.partition(":")[0].partition(".")[0]
        if top in RESERVED_HANDLER_MODULES:
            issues.append(
                _issue(
                    sources,
                    ("agents", i, "handler"),
                    f"handler {agent.handler!r} lives in {top!r}, which the generated image reserves "
                    f"({'the generated server.py' if top == 'server' else 'the swarm package'}); "
                    "move it to a package of another name",
                )
            )
    return issues


#: Projects the generated requirements.txt already pins (the compiler's own; a test
#: keeps the two lists equal): an agent's ``requirements`` may not pin them again.
GENERATED_REQUIREMENTS = ("httpx", "redis", "starlette", "swarm-gitops", "uvicorn")
_REQUIREMENT_NAME = re.compile(r"^[A-Za-z0-9._-]+")


def requirement_name(requirement: str) -> str:
    """The PEP 503 normalized project name of a requirement (``Foo_Bar[x]>=1`` -> ``foo-bar``)."""
    match = _REQUIREMENT_NAME.match(requirement)
    return re.sub(r"[-_.]+", "-", match.group(0) if match else requirement).lower()


def check_requirements(spec: Spec, sources: SourceMap) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    for i, agent in enumerate(spec.agents):
        first: dict[str, int] = {}
        for j, requirement in enumerate(agent.requirements):
            name = requirement_name(requirement)
            path = ("agents", i, "requirements", j)
            if name in GENERATED_REQUIREMENTS:
                issues.append(
                    _issue(sources, path, f"{name!r} is pinned by the generated requirements.txt; leave it out")
                )
            elif name in first:
                other = sources.nearest(("agents", i, "requirements", first[name]))
                issues.append(
                    _issue(sources, path, f"requirement {name!r} is listed twice (also at {other})", [other])
                )
            else:
                first[name] = j
    return issues


def check_notifications(spec: Spec, sources: SourceMap) -> list[SpecIssue]:
    """Unique names, exactly one of url / url_env, no header that swarm sets itself."""
    notes = spec.swarm.notifications
    issues = _duplicates(sources, "notification", [(n.name, ("notifications", i, "name")) for i, n in enumerate(notes)])
    for i, note in enumerate(notes):
        if (note.url is None) == (note.url_env is None):
            issues.append(_issue(
                sources, ("notifications", i, "url" if note.url is not None else "name"),
                "give exactly one of url (the URL itself) and url_env (the environment variable holding it)"
                if note.url is not None else "a notification needs url or url_env (the environment variable holding the URL)",
            ))
        for header in note.headers:
            if header.lower() in RESERVED_HEADERS:
                issues.append(_issue(
                    sources, ("notifications", i, "headers", header),
                    f"header {header!r} is set by swarm itself and may not be given here",
                ))
    return issues


#: Every semantic rule, in the order they run.
RULES: tuple[Callable[[Spec, SourceMap], list[SpecIssue]], ...] = (
    check_duplicate_agents,
    check_duplicate_topics,
    check_patterns,
    check_agent_roles_and_topics,
    check_ports,
    check_heartbeat,
    check_handlers,
    check_requirements,
    check_notifications,
)


def check_spec(spec: Spec, sources: SourceMap) -> list[SpecIssue]:
    """All semantic issues of ``spec``; an empty list when it is valid."""
    issues: list[SpecIssue] = []
    for rule in RULES:
        issues.extend(rule(spec, sources))
    return issues
