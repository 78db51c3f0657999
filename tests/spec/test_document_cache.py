"""The loader's DocumentCache (the reconciler keeps one across passes): a load re-parses only the
files whose bytes changed, and gives exactly what a load without the cache gives, after each of
many random edits — cross-file checks (a duplicate id across files) included."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.errors import SpecError
from swarm.spec.loader import DocumentCache, parse_spec_texts, read_spec_files

REPO = Path(__file__).resolve().parents[2]


def example_files() -> dict[str, bytes]:
    return dict(read_spec_files(REPO / "specs"))


def outcome(files: dict[str, bytes], cache: DocumentCache | None) -> tuple[str, object]:
    try:
        loaded = parse_spec_texts(files, None, cache=cache)
    except SpecError as exc:
        return "invalid", [i.format() for i in exc.issues]
    return "ok", (loaded.digest, loaded.spec.model_dump(mode="json"))


def agent_doc(agent_id: str, port: int) -> bytes:
    return (f"apiVersion: swarm/v1\nkind: Agent\nid: {agent_id}\nversion: 1.0.0\nrole: worker\n"
            f"capabilities: [research]\nport: {port}\n"
            "subscribes: [tasks.research]\npublishes: [results.research]\n").encode()


def test_only_changed_files_are_parsed_again_and_a_cross_file_duplicate_is_caught() -> None:
    files = example_files()
    cache = DocumentCache()
    assert outcome(files, cache) == outcome(files, None)
    misses = cache.misses
    assert outcome(files, cache) == outcome(files, None)
    assert cache.misses == misses  # nothing changed: nothing parsed
    extra = next(k for k in files if k.endswith("workers.yaml")).replace("workers.yaml", "extra.yaml")
    edited = {**files, extra: agent_doc("reviewer", 8900)}  # `reviewer` is declared in review.yaml
    got = outcome(edited, cache)
    assert cache.misses == misses + 1  # only the new file
    assert got == outcome(edited, None) and got[0] == "invalid"
    assert any("reviewer" in line for line in got[1])  # type: ignore[union-attr]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "remove", "break", "kind", "version", "undo"]), st.integers(0, 40)),
                min_size=1, max_size=8))
def test_cached_loads_equal_fresh_loads_after_random_edits(edits: list[tuple[str, int]]) -> None:
    base = example_files()
    folder = next(k for k in base if k.endswith("workers.yaml")).rsplit("/", 1)[0]
    files = dict(base)
    cache = DocumentCache()
    outcome(files, cache)
    for kind, n in edits:
        name = f"{folder}/gen-{n % 5}.yaml"
        if kind == "add":
            files[name] = agent_doc(f"gen-{n}", 9000 + n)
        elif kind == "remove":
            files.pop(name, None)
        elif kind == "break":
            files[name] = agent_doc(f"gen-{n}", 9000 + n).replace(b"port: ", b"port: x")
        elif kind == "kind":  # a document of no known kind (its file's split is not kept)
            files[name] = agent_doc(f"gen-{n}", 9000 + n).replace(b"kind: Agent", b"kind: Agnet")
        elif kind == "version":
            files[name] = agent_doc(f"gen-{n}", 9000 + n).replace(b"swarm/v1", b"swarm/v2")
        else:
            files = dict(base)
        assert outcome(files, cache) == outcome(files, None)


@pytest.mark.parametrize("broken", [b"kind: Agent\nid: [unclosed\n", b"\xff\xfe not utf-8"])
def test_an_invalid_save_and_its_undo(broken: bytes) -> None:
    files = example_files()
    cache = DocumentCache()
    good = outcome(files, cache)
    name = next(k for k in files if k.endswith("workers.yaml"))
    bad = {**files, name: broken}
    assert outcome(bad, cache) == outcome(bad, None) and outcome(bad, None)[0] == "invalid"
    misses = cache.misses
    assert outcome(files, cache) == good
    assert cache.misses == misses  # the undo finds the good bytes still cached
