"""Small spec texts and helpers shared by the spec tests."""

from __future__ import annotations

import pytest

from swarm.errors import Position, SpecError, SpecIssue
from swarm.spec.loader import LoadedSpec, parse_spec_texts

SWARM = """\
apiVersion: swarm/v1
kind: Swarm
metadata:
  name: demo
registry:
  ttl_seconds: 30
  heartbeat_interval: 10
topics:
  - name: tasks.a
  - name: tasks.admin.reset
  - name: results.a
roles:
  planner:
    publish: ["tasks.>"]
    subscribe: ["results.*"]
    deny:
      publish: ["tasks.admin.>"]
  worker:
    publish: ["results.*"]
    subscribe: ["tasks.*"]
agents:
  - id: boss
    role: planner
    port: 8001
    publishes: [tasks.a]
    subscribes: [results.a]
"""

AGENT = """\
apiVersion: swarm/v1
kind: Agent
id: w1
role: worker
port: 8002
publishes: [results.a]
subscribes: [tasks.a]
"""


def files(**texts: str) -> dict[str, bytes]:
    """``files(swarm=..., w1=...)`` -> ``{"specs/swarm.yaml": b"...", "specs/agents/w1.yaml": ...}``."""
    out: dict[str, bytes] = {}
    for name, text in texts.items():
        path = "specs/swarm.yaml" if name == "swarm" else f"specs/agents/{name}.yaml"
        out[path] = text.encode("utf-8")
    return out


def load(**texts: str) -> LoadedSpec:
    return parse_spec_texts(files(**texts))


def issues(**texts: str) -> list[SpecIssue]:
    """The issues of an invalid spec (fails the test if the spec is valid)."""
    with pytest.raises(SpecError) as info:
        parse_spec_texts(files(**texts))
    return info.value.issues


def at(file: str, text: str, needle: str, nth: int = 0) -> Position:
    """Position (1-based line and column) of the nth occurrence of ``needle`` in ``text``."""
    offset = -1
    for _ in range(nth + 1):
        offset = text.index(needle, offset + 1)
    before = text[:offset]
    line = before.count("\n") + 1
    column = offset - (before.rfind("\n") + 1) + 1
    return Position(file, line, column)


SWARM_FILE = "specs/swarm.yaml"


def agent_file(name: str) -> str:
    return f"specs/agents/{name}.yaml"


def one(found: list[SpecIssue], fragment: str) -> SpecIssue:
    """The single issue whose message contains ``fragment``."""
    matching = [i for i in found if fragment in i.message]
    assert len(matching) == 1, f"expected one issue with {fragment!r}, got: " + "\n".join(
        i.format() for i in found
    )
    return matching[0]
