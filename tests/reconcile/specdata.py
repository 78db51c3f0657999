"""Spec texts for reconcile tests: the example spec, and edits of it as YAML data."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import yaml

from swarm.desired import DesiredState, desired_from_spec
from swarm.spec.models import AgentDocument, Spec, SwarmDocument

REPO = Path(__file__).resolve().parents[2]


def example_docs() -> list[dict[str, Any]]:
    """All documents of specs/ (Swarm first), as plain data."""
    docs: list[dict[str, Any]] = []
    for path in [REPO / "specs/swarm.yaml", *sorted((REPO / "specs/agents").glob("*.yaml"))]:
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def desired_from_docs(docs: list[dict[str, Any]]) -> DesiredState:
    """Desired state of documents (structural validation only: enough for planner tests)."""
    swarm_doc = SwarmDocument.model_validate(next(d for d in docs if d["kind"] == "Swarm"))
    extra = [AgentDocument.model_validate(d).to_agent() for d in docs if d["kind"] == "Agent"]
    spec = Spec(swarm=swarm_doc, agents=[*swarm_doc.agents, *extra])
    digest = hashlib.sha256(yaml.safe_dump_all(docs, sort_keys=True).encode()).hexdigest()
    return desired_from_spec(spec, digest)


def edit(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return copy.deepcopy(docs)


def apply_edit(docs: list[dict[str, Any]], op: tuple[Any, ...], n: int) -> list[dict[str, Any]]:
    """A copy of ``docs`` with one random edit of the incremental-pass tests: ``("add", role,
    publishes, subscribes)``, ``("remove", i)``, ``("rule", role, action, patterns)``,
    ``("topics", i, subscribes)``, ``("topic+", k)``, ``("topic-", k)``; ``n`` numbers a new agent."""
    docs = edit(docs)
    agents = [d for d in docs if d["kind"] == "Agent"]
    sw = swarm_doc(docs)
    kind = op[0]
    if kind == "add":
        _, role, pubs, subs = op
        docs.append({"apiVersion": "swarm/v1", "kind": "Agent", "id": f"extra-{n}", "role": role,
                     "port": 20000 + n, "publishes": pubs, "subscribes": subs})
    elif kind == "remove" and agents:
        docs.remove(agents[op[1] % len(agents)])
    elif kind == "rule":
        _, role, action, patterns = op
        sw["roles"][role][action] = patterns
    elif kind == "topics" and agents:
        agents[op[1] % len(agents)]["subscribes"] = op[2]
    elif kind == "topic+":
        if all(t["name"] != f"extra.t{op[1]}" for t in sw["topics"]):
            sw["topics"].append({"name": f"extra.t{op[1]}", "max_len": 100})
    elif kind == "topic-":
        sw["topics"] = [t for t in sw["topics"] if t["name"] != f"extra.t{op[1]}"]
    return docs


def swarm_doc(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "Swarm")
