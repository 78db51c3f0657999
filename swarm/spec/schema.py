"""JSON Schema (draft-07) of a spec document, generated from the pydantic models.

Who calls it: ``swarm schema`` writes :func:`schema_files` to ``schemas/``
(committed; CI runs ``swarm schema --check``); editors load it through the
``# yaml-language-server: $schema=...`` modeline of every file in ``specs/``.

Why generated and converted: the models are the single source of truth, so the
schema cannot drift from the loader (a test feeds the same documents to both).
yaml-language-server understands draft-07 and older while pydantic emits 2020-12,
so the output is converted: ``$defs`` becomes ``definitions`` (refs rewritten),
a ``$ref`` with sibling keywords is wrapped in ``allOf`` (draft-07 ignores
siblings of ``$ref``), and ``patternProperties`` also constrains
``propertyNames`` (pydantic leaves non-matching keys unconstrained, the loader
rejects them). One file validates either document kind: ``if kind == Swarm then
SwarmDocument``, ``if kind == Agent then AgentDocument``. Pure: no I/O.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic.json_schema import models_json_schema

from swarm.spec.models import API_VERSION, AgentDocument, EnvironmentDocument, SwarmDocument

__all__ = ["SCHEMA_FILE", "SCHEMA_ID", "build_schema", "schema_files", "schema_text"]

SCHEMA_FILE = "swarm.schema.json"
SCHEMA_ID = "https://github.com/swarm-gitops/swarm/schemas/swarm.schema.json"
DRAFT_07 = "http://json-schema.org/draft-07/schema#"


def _convert(node: Any) -> Any:
    """Rewrite a pydantic (2020-12) schema fragment into draft-07."""
    if isinstance(node, list):
        return [_convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _convert(value) for key, value in node.items()}
    ref = out.get("$ref")
    if isinstance(ref, str):
        out["$ref"] = ref.replace("#/$defs/", "#/definitions/")
        if len(out) > 1:
            siblings = {k: v for k, v in out.items() if k != "$ref"}
            out = {"allOf": [{"$ref": out["$ref"]}], **siblings}
    patterns = out.get("patternProperties")
    if isinstance(patterns, dict) and len(patterns) == 1 and "additionalProperties" not in out:
        (pattern,) = patterns
        names = dict(out.get("propertyNames") or {})
        names["pattern"] = pattern
        out["propertyNames"] = names
    return out


def _kind_branch(kind: str, definition: str) -> dict[str, Any]:
    return {
        "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
        "then": {"$ref": f"#/definitions/{definition}"},
    }


def build_schema() -> dict[str, Any]:
    """The draft-07 schema of one spec document (``kind: Swarm``, ``Agent`` or ``Environment``)."""
    _, top = models_json_schema(
        [(SwarmDocument, "validation"), (AgentDocument, "validation"), (EnvironmentDocument, "validation")],
        ref_template="#/$defs/{model}",
    )
    definitions = _convert(top.get("$defs", {}))
    return {
        "$schema": DRAFT_07,
        "$id": SCHEMA_ID,
        "title": "swarm spec document",
        "description": (
            f"One YAML document of a swarm spec (apiVersion {API_VERSION}): exactly one "
            "'kind: Swarm' document per spec, any number of 'kind: Agent' documents, and "
            "'kind: Environment' overlays (applied with --env). "
            "Generated from swarm.spec.models by `swarm schema`; do not edit."
        ),
        "type": "object",
        "required": ["apiVersion", "kind"],
        "properties": {
            "apiVersion": {"const": API_VERSION},
            "kind": {"enum": ["Swarm", "Agent", "Environment"]},
        },
        "allOf": [
            _kind_branch("Swarm", "SwarmDocument"),
            _kind_branch("Agent", "AgentDocument"),
            _kind_branch("Environment", "EnvironmentDocument"),
        ],
        "definitions": definitions,
    }


def schema_text(schema: dict[str, Any]) -> str:
    """Deterministic text: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def schema_files() -> dict[str, str]:
    """``{file name: text}`` of every schema file ``swarm schema`` writes."""
    return {SCHEMA_FILE: schema_text(build_schema())}
