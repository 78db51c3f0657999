"""Environment overlays: one spec, a dev, a staging and a prod (pure: no I/O).

A ``kind: Environment`` document (by convention ``environments/<name>.yaml`` in the
spec directory) patches the base spec when ``--env <name>`` selects it; without
``--env`` overlays are not applied and not part of the spec's digest, so editing
staging's overlay changes nothing compiled for the base. The patch is applied to
the parsed YAML documents, values and positions together, before validation: the
merged result is validated and checked like any spec, and a value an overlay wrote
is reported at the overlay's file:line:col.

Merge rules (JSON merge patch): mappings merge key by key; any other value (lists
included) replaces the base's; ``null`` removes the key, so the default applies.

What an overlay may not do unless the base's ``environments.allow`` says so
(:data:`GUARDED`, :data:`GUARDED_AGENT_FIELDS`): add agents (``agents``) or change
who may publish, subscribe, register or read (``acl``). Never: rename the swarm,
change ``environments`` itself (an overlay cannot grant itself rights), or patch
the inline ``agents`` list (patch agents by id under the overlay's ``agents:``).
The rights are all-or-nothing by design: deciding whether a changed pattern
tightens or loosens a role is the kind of judgement a reviewer, not a loader,
should make, so any ACL change needs the base's consent.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

from swarm.errors import Position, SpecIssue
from swarm.spec.sourcemap import NodeInfo, did_you_mean
from swarm.spec.yamldoc import ParsedDocument

Path = tuple[Any, ...]

ENVIRONMENT_KIND = "Environment"

#: Swarm-document paths an overlay may never patch, and why.
FORBIDDEN: dict[Path, str] = {
    ("apiVersion",): "the apiVersion is the base's",
    ("kind",): "the kind is the base's",
    ("metadata", "name"): "the swarm name (and so its Redis keys) is the same in every environment",
    ("environments",): "an overlay cannot change what overlays may do",
    ("agents",): "patch agents by id under the overlay's top-level 'agents:', add them with 'add_agents:'",
}
#: Swarm-document paths an overlay may patch only with the base's consent: path -> right.
GUARDED: dict[Path, str] = {
    ("roles",): "acl",
    ("registry", "public_reads"): "acl",
    ("registry", "private_metadata"): "acl",
    ("registry", "allow_undeclared"): "agents",
}
#: Agent fields an overlay may patch only with the base's consent: field -> right.
GUARDED_AGENT_FIELDS: dict[str, str] = {
    "role": "acl",
    "publishes": "acl",
    "subscribes": "acl",
    "capabilities": "acl",
}
#: Agent fields an overlay may never patch.
FORBIDDEN_AGENT_FIELDS: dict[str, str] = {
    "id": "an agent's id is its identity; add an agent instead",
    "apiVersion": "the apiVersion is the base's",
    "kind": "the kind is the base's",
}


@dataclass(frozen=True)
class Overlay:
    """A structurally valid Environment document."""

    name: str
    doc: ParsedDocument


def _subtree(nodes: dict[Path, NodeInfo], prefix: Path) -> dict[Path, NodeInfo]:
    n = len(prefix)
    return {path[n:]: info for path, info in nodes.items() if path[:n] == prefix}


def _without(nodes: dict[Path, NodeInfo], prefix: Path) -> dict[Path, NodeInfo]:
    n = len(prefix)
    return {path: info for path, info in nodes.items() if path[:n] != prefix}


class _Patcher:
    """Merges an overlay's patches into documents, keeping every value's position."""

    def __init__(self, overlay: Overlay, rights: set[str], base_position: Position, issues: list[SpecIssue]) -> None:
        self.overlay = overlay
        self.rights = rights
        self.base_position = base_position
        self.issues = issues

    def refuse(self, at: Path, path: str, message: str) -> None:
        info = self.overlay.doc.nodes.get(at)
        where = (info.key or info.value) if info else self.overlay.doc.position()
        self.issues.append(SpecIssue(where, path, message, related=(self.base_position,)))

    def guard(self, right: str | None, at: Path, label: str) -> bool:
        """False (with an issue) when the patch at ``at`` needs a right the base did not give."""
        if right is None or right in self.rights:
            return True
        what = "add agents" if right == "agents" else "change ACLs"
        self.refuse(at, label, f"environment {self.overlay.name!r} may not {what} ({label}): the base swarm "
                               f"does not allow it; add {right!r} to environments.allow in the Swarm document "
                               "to let overlays do so")
        return False

    def merge(self, data: Any, nodes: dict[Path, NodeInfo], at: Path, patch: dict[str, Any], source: Path,
              label: str) -> tuple[Any, dict[Path, NodeInfo]]:
        """``data`` (a mapping at ``at`` in a document with ``nodes``) merged with ``patch``
        (at ``source`` in the overlay): the new data and the new nodes."""
        merged = dict(data) if isinstance(data, dict) else {}
        for key, value in patch.items():
            here, there = at + (key,), source + (key,)
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key], nodes = self.merge(merged[key], nodes, here, value, there, f"{label}.{key}")
                continue
            nodes = _without(nodes, here)
            if value is None:
                merged.pop(key, None)
                continue
            merged[key] = copy.deepcopy(value)
            nodes.update({here + sub: info for sub, info in _subtree(self.overlay.doc.nodes, there).items()})
        return merged, nodes

    def patch_swarm(self, swarm: ParsedDocument) -> ParsedDocument:
        patch = self.overlay.doc.data.get("swarm") or {}
        allowed: dict[str, Any] = {}
        for key, value in patch.items():
            if not self.allowed_swarm_patch((key,), value, ("swarm", key)):
                continue
            allowed[key] = value
        data, nodes = self.merge(swarm.data, dict(swarm.nodes), (), allowed, ("swarm",), "swarm")
        return replace(swarm, data=data, nodes=nodes)

    def allowed_swarm_patch(self, path: Path, value: Any, at: Path) -> bool:
        """Whether the patch of ``path`` (written at ``at``) may apply; refuses what it may not."""
        label = "swarm." + ".".join(str(p) for p in path)
        if path in FORBIDDEN:
            self.refuse(at, label, f"an environment may not patch {label}: {FORBIDDEN[path]}")
            return False
        if path in GUARDED:
            return self.guard(GUARDED[path], at, label)
        if isinstance(value, dict):  # a guarded or forbidden path may lie deeper
            nested = {p for p in (*FORBIDDEN, *GUARDED) if p[: len(path)] == path and len(p) > len(path)}
            if nested:
                ok = True
                for key, inner in value.items():
                    ok = self.allowed_swarm_patch(path + (key,), inner, at + (key,)) and ok
                return ok
        return True

    def patch_agent(self, data: Any, nodes: dict[Path, NodeInfo], at: Path, agent_id: str) -> tuple[Any, dict[Path, NodeInfo]]:
        patch = self.overlay.doc.data["agents"][agent_id]
        allowed: dict[str, Any] = {}
        for key, value in patch.items():
            label = f"agents.{agent_id}.{key}"
            source = ("agents", agent_id, key)
            if key in FORBIDDEN_AGENT_FIELDS:
                self.refuse(source, label, f"an environment may not patch {label}: {FORBIDDEN_AGENT_FIELDS[key]}")
            elif self.guard(GUARDED_AGENT_FIELDS.get(key), source, label):
                allowed[key] = value
        return self.merge(data, nodes, at, allowed, ("agents", agent_id), f"agents.{agent_id}")


def apply_overlay(
    overlay: Overlay, swarm: ParsedDocument, agent_docs: list[ParsedDocument], issues: list[SpecIssue]
) -> tuple[ParsedDocument, list[ParsedDocument]]:
    """The Swarm document and the Agent documents with ``overlay`` applied.

    Refused patches (and unknown agent ids) become issues; the rest still apply, so
    one run reports every problem.
    """
    policy = swarm.data.get("environments") if isinstance(swarm.data, dict) else None
    allow = policy.get("allow") if isinstance(policy, dict) else None
    rights = {r for r in allow if isinstance(r, str)} if isinstance(allow, list) else set()
    patcher = _Patcher(overlay, rights, swarm.position(), issues)
    swarm = patcher.patch_swarm(swarm)

    inline = swarm.data.get("agents") if isinstance(swarm.data, dict) else None
    inline_index = {a.get("id"): i for i, a in enumerate(inline) if isinstance(a, dict)} if isinstance(inline, list) else {}
    doc_index = {d.data.get("id"): k for k, d in enumerate(agent_docs) if isinstance(d.data, dict)}
    docs = list(agent_docs)
    known = sorted(str(i) for i in [*inline_index, *doc_index] if isinstance(i, str))
    for agent_id in overlay.doc.data.get("agents") or {}:
        if agent_id in inline_index:
            i = inline_index[agent_id]
            agents = list(swarm.data["agents"])
            agents[i], nodes = patcher.patch_agent(agents[i], dict(swarm.nodes), ("agents", i), agent_id)
            swarm = replace(swarm, data={**swarm.data, "agents": agents}, nodes=nodes)
        elif agent_id in doc_index:
            k = doc_index[agent_id]
            data, nodes = patcher.patch_agent(docs[k].data, dict(docs[k].nodes), (), agent_id)
            docs[k] = replace(docs[k], data=data, nodes=nodes)
        else:
            hint = did_you_mean(agent_id, known) or (" (agents: " + ", ".join(known) + ")" if known else "")
            patcher.refuse(("agents", agent_id), f"agents.{agent_id}",
                           f"environment {overlay.name!r} patches agent {agent_id!r}, which the base does not "
                           f"declare{hint}; new agents go under add_agents")

    added = overlay.doc.data.get("add_agents") or []
    if added and patcher.guard("agents", ("add_agents",), "add_agents"):
        for k, item in enumerate(added):
            prefix = ("add_agents", k)
            nodes = _subtree(overlay.doc.nodes, prefix)
            data = {"apiVersion": "swarm/v1", "kind": "Agent", **item}
            # index: after the file's own documents, so the (file, index) order stays total
            docs.append(ParsedDocument(overlay.doc.file, 10_000 + k, data, nodes, ()))
    return swarm, docs


def select_overlay(
    named: list[tuple[str, ParsedDocument]], name: str, issues: list[SpecIssue]
) -> ParsedDocument | None:
    """The Environment document named ``name`` among ``(name, document)`` pairs; an issue
    when there is none or more than one."""
    found = [doc for n, doc in named if n == name]
    if len(found) > 1:
        places = tuple(doc.position(("metadata", "name")) for doc in found)
        issues.append(SpecIssue(places[0], "metadata.name",
                                f"{len(found)} environments are named {name!r} (at {', '.join(map(str, places))})",
                                related=places[1:]))
        return None
    if not found:
        names = sorted({n for n, _ in named})
        hint = did_you_mean(name, names) or (f" (environments: {', '.join(names)})" if names
                                             else " (no kind: Environment document in the spec)")
        issues.append(SpecIssue(None, "", f"no environment named {name!r}{hint}"))
        return None
    return found[0]
