"""Hypothesis: invalid saves under a running ``--watch`` are never applied; a valid one is.

One daemon, real registry and Redis for the whole run; each example saves one
mutated (invalid) version of a spec file, waits until the daemon has attempted
exactly those bytes, and checks that the live state is still the last good one
and that every error in status carries a position.
"""

from __future__ import annotations

import pytest
import copy
from pathlib import Path
from typing import Any, Callable

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarm.spec.loader import compute_digest, read_spec_files
from tests.reconcile.conftest import Daemon, catalog_digest_live
from tests.reconcile.test_watch import NEW_AGENT
from tests.registry.conftest import RegistryProcess

FILES = ("swarm.yaml", "agents/workers.yaml", "agents/review.yaml")
names = st.from_regex(r"\A[a-z][a-z0-9]{2,10}\Z")


@st.composite
def mutation(draw: st.DrawFn, originals: dict[str, str]) -> tuple[str, str]:
    """(file, new text) that makes the spec invalid."""
    kind = draw(st.sampled_from(["bad-role", "bad-topic", "duplicate-id", "bad-yaml", "wrong-type", "unknown-key"]))
    file = draw(st.sampled_from(FILES[1:]))
    docs = list(yaml.safe_load_all(originals[file]))
    i = draw(st.integers(0, len(docs) - 1))
    doc: dict[str, Any] = docs[i]
    if kind == "bad-role":
        doc["role"] = draw(names.filter(lambda n: n not in ("planner", "worker", "reviewer", "observer")))
    elif kind == "bad-topic":
        doc.setdefault("subscribes", []).append(draw(names.map(lambda n: f"nowhere.{n}")))
    elif kind == "duplicate-id":
        other = yaml.safe_load_all(originals[draw(st.sampled_from(FILES[1:]))])
        twin = copy.deepcopy(next(iter(other)))
        twin["port"] = 9900 + i
        docs.append(twin)
    elif kind == "bad-yaml":
        lines = yaml.safe_dump_all(docs, sort_keys=False).splitlines(keepends=True)
        at = draw(st.integers(0, len(lines)))  # at a line start: never inside a scalar
        garbage = draw(st.sampled_from(["key: [unclosed\n", "\tport: 1\n", "id: x\n  - y\n", "{\n"]))
        return file, "".join(lines[:at]) + garbage + "".join(lines[at:])
    elif kind == "wrong-type":
        field, value = draw(
            st.sampled_from([("port", "8002"), ("port", -1), ("capabilities", "research"), ("version", 3),
                             ("registry", "yes"), ("publishes", {"a": 1})])
        )
        doc[field] = value
    else:
        doc[draw(names.map(lambda n: f"x_{n}"))] = draw(st.integers())
    return file, yaml.safe_dump_all(docs, sort_keys=False)


def test_invalid_saves_are_never_applied(
    live: RegistryProcess, spec_dir: Path, daemon_factory: Callable[..., Daemon]
) -> None:
    d = daemon_factory(spec_dir, "--resync", "5")
    good = d.wait_for(lambda s: s.state == "synced")
    assert good.last_applied is not None
    good_digest = good.last_applied.digest
    originals = {f: (spec_dir / f).read_text() for f in FILES}
    r: Any = live.redis.client(decode_responses=True)
    acl_before = r.get("swarm:{research}:acl")

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(mutation(originals))
    def save_invalid(change: tuple[str, str]) -> None:
        file, text = change
        for f, original in originals.items():  # one invalid file at a time
            if f != file and (spec_dir / f).read_text() != original:
                (spec_dir / f).write_text(original)
        (spec_dir / file).write_text(text)
        expected = compute_digest(read_spec_files([spec_dir]))
        status = d.wait_for(lambda s: s.last_attempted is not None and s.last_attempted.digest == expected)
        assert status.state == "invalid-spec", status.message
        assert status.last_error is not None and status.last_error.kind == "spec"
        assert status.last_error.issues
        for issue in status.last_error.issues:
            assert issue["file"] and issue["line"] and issue["column"], issue
        assert status.last_applied is not None and status.last_applied.digest == good_digest
        assert catalog_digest_live(live) == good_digest
        assert r.get("swarm:{research}:acl") == acl_before

    try:
        save_invalid()
        for f, original in originals.items():
            (spec_dir / f).write_text(original)
        (spec_dir / "agents" / "review.yaml").write_text(originals["agents/review.yaml"] + NEW_AGENT)
        applied = d.wait_for(lambda s: s.state == "synced" and s.last_applied is not None and s.last_applied.digest != good_digest)
        assert applied.last_error is None
        assert catalog_digest_live(live) == applied.last_applied.digest  # type: ignore[union-attr]
    finally:
        r.close()
