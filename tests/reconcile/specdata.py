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


def swarm_doc(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "Swarm")
