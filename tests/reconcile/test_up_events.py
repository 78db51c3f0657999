"""Unit tests of the pure event -> line printing of ``swarm up``."""

from __future__ import annotations

import json

from swarm.reconcile.up_events import event_line


def test_registration_line_names_role_and_version() -> None:
    data = json.dumps({"agent_id": "writer-1", "role": "writer", "version": "1.2.0"})
    line = event_line({"type": "registered", "agent": "writer-1", "data": data}, "12:01:03")
    assert line == "12:01:03 registered  writer-1 (role writer, v1.2.0)"


def test_expiry_deregistration_and_breaker_lines() -> None:
    assert event_line({"type": "expired", "agent": "w", "data": "{}"}, "t") == "t expired     w"
    assert event_line({"type": "deregistered", "agent": "w", "data": "{}"}, "t") == "t deregistered w"
    assert event_line({"type": "breaker-opened", "agent": "w", "data": "{}"}, "t") == "t breaker open w"
    assert event_line({"type": "breaker-closed", "agent": "w", "data": ""}, "t") == "t breaker closed w"


def test_heartbeats_catalog_and_unknown_kinds_print_nothing() -> None:
    for kind in ("same", "catalog-changed", "nonsense"):
        assert event_line({"type": kind, "agent": "w", "data": "{}"}, "t") is None


def test_bad_data_still_gives_a_line() -> None:
    assert event_line({"type": "registered", "agent": "w", "data": "not json"}, "t") == "t registered  w"
