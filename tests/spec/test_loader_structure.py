"""Pydantic errors mapped to positions, merging, source map, digest and file reading."""

from __future__ import annotations

from pathlib import Path

import pytest

import swarm
from swarm.errors import Position, SpecError
from swarm.spec.loader import (
    MAX_FILE_BYTES,
    compute_digest,
    is_spec_file_name,
    load_spec_full,
    parse_spec_texts,
    read_spec_files,
)
from tests.spec.specdata import AGENT, SWARM, SWARM_FILE, agent_file, at, files, issues, load, one


def test_example_spec_loads(repo_root: Path) -> None:
    loaded = load_spec_full(repo_root / "specs")
    spec = loaded.spec
    assert spec.name == "research"
    assert len(spec.agents) >= 5 and len(spec.roles) >= 3
    assert loaded.digest.startswith("sha256:") and len(loaded.digest) == len("sha256:") + 64
    assert swarm.load_spec(repo_root / "specs") == spec


def test_merged_order_inline_first_then_agent_documents_by_file_and_index() -> None:
    two = AGENT.replace("id: w1", "id: w3").replace("8002", "8003") + "---\n" + AGENT.replace(
        "id: w1", "id: w2"
    ).replace("8002", "8004")
    loaded = load(swarm=SWARM, zz=AGENT, aa=two)
    assert [a.id for a in loaded.spec.agents] == ["boss", "w3", "w2", "w1"]
    assert loaded.files == (agent_file("aa"), agent_file("zz"), SWARM_FILE)


def test_source_map_points_into_agent_documents() -> None:
    loaded = load(swarm=SWARM, w1=AGENT)
    src = loaded.sources
    assert src.position(("agents", 1, "role")) == at(agent_file("w1"), AGENT, "worker")
    assert src.key_position(("agents", 1, "role")) == at(agent_file("w1"), AGENT, "role")
    assert src.position(("agents", 0, "port")) == at(SWARM_FILE, SWARM, "8001")
    assert src.position(("topics", 2, "name")) == at(SWARM_FILE, SWARM, "results.a")
    assert src.position(("swarm", "topics", 2, "name")) == at(SWARM_FILE, SWARM, "results.a")
    assert src.position(("bus", "dedup_window_seconds")) is None  # a default, not written
    assert src.nearest(("agents", 1, "version")) == Position(agent_file("w1"), 1, 1)
    assert src.label(("agents", 1, "subscribes", 0)) == "agents[1].subscribes[0]"


def test_unknown_key_points_at_the_key_with_did_you_mean() -> None:
    text = AGENT.replace("port: 8002", "port: 8002\nprot: 8003")
    issue = one(issues(swarm=SWARM, w1=text), "unknown field 'prot'")
    assert issue.message == "unknown field 'prot' (did you mean 'port'?)"
    assert issue.position == at(agent_file("w1"), text, "prot")
    assert issue.path == "agents[1].prot"
    assert issue.format() == f"{at(agent_file('w1'), text, 'prot')}: error: agents[1].prot: " + issue.message


def test_unknown_nested_key_lists_allowed_fields_when_nothing_is_close() -> None:
    text = SWARM.replace("  heartbeat_interval: 10\n", "  heartbeat_interval: 10\n  zzz: 1\n")
    issue = one(issues(swarm=text), "unknown field 'zzz'")
    assert issue.path == "registry.zzz"
    assert "allowed: allow_undeclared, heartbeat_interval, private_metadata, public_reads, ttl_seconds, url" in issue.message
    assert issue.position == at(SWARM_FILE, text, "zzz")


def test_wrong_types_say_what_was_expected_and_found() -> None:
    text = AGENT.replace("port: 8002", 'port: "8002"').replace("subscribes: [tasks.a]", "subscribes: tasks.a")
    found = issues(swarm=SWARM, w1=text)
    port = one(found, "expected an integer, got a string ('8002')")
    assert port.position == at(agent_file("w1"), text, '"8002"')
    assert port.path == "agents[1].port"
    subs = one(found, "expected a list, got a string")
    assert subs.position == at(agent_file("w1"), text, "tasks.a")


def test_yaml_11_surprises_are_type_errors() -> None:
    text = AGENT.replace("port: 8002", "port: 8002\nversion: 1.0\nregistry: maybe")
    found = issues(swarm=SWARM, w1=text)
    assert one(found, "expected a string, got a number").path == "agents[1].version"
    assert one(found, "expected a boolean (true or false), got a string").path == "agents[1].registry"


def test_missing_field_points_at_the_parent_mapping() -> None:
    text = SWARM.replace("    port: 8001\n", "")
    issue = one(issues(swarm=text), "missing required field 'port'")
    assert issue.path == "agents[0]"
    assert issue.position == at(SWARM_FILE, text, "id: boss")


def test_bad_enum_and_bounds() -> None:
    text = AGENT.replace("port: 8002", "port: 70000\nruntime: java")
    found = issues(swarm=SWARM, w1=text)
    assert one(found, "expected 'python' or 'node', got 'java'").position == at(agent_file("w1"), text, "java")
    assert one(found, "must be at most 65535, got 70000").path == "agents[1].port"


@pytest.mark.parametrize("bad_id", ["../x", "x/../../etc", "Upper", "-lead", "a.b", ""])
def test_path_traversal_and_bad_ids_are_refused(bad_id: str, tmp_path: Path) -> None:
    text = AGENT.replace("id: w1", f"id: '{bad_id}'")
    found = issues(swarm=SWARM, w1=text)
    issue = next(i for i in found if i.path == "agents[1].id")
    assert "is not a valid id" in issue.message
    assert "lowercase letters, digits and '-'" in issue.message
    assert issue.position == at(agent_file("w1"), text, f"'{bad_id}'")


def test_overlong_id_is_refused() -> None:
    text = AGENT.replace("id: w1", "id: " + "a" * 64)
    issue = one(issues(swarm=SWARM, w1=text), "id is 64 characters long, at most 63 allowed")
    assert issue.path == "agents[1].id"


def test_bad_role_name_key_points_at_the_key() -> None:
    text = SWARM.replace("  worker:\n", "  Bad_Role:\n    publish: []\n  worker:\n")
    issue = one(issues(swarm=text), "is not a valid role name")
    assert issue.position == at(SWARM_FILE, text, "Bad_Role")
    assert issue.path == "roles.Bad_Role"


def test_every_structural_error_of_every_file_at_once() -> None:
    a = AGENT.replace("port: 8002", "port: nope")
    b = AGENT.replace("id: w1", "id: w2").replace("role: worker", "rolle: worker\nzzz: x")
    s = SWARM.replace("ttl_seconds: 30", "ttl_seconds: -1")
    found = issues(swarm=s, a=a, b=b)
    assert {i.path for i in found} == {"agents[1].port", "agents[2].rolle", "agents[2].zzz", "registry.ttl_seconds"}
    assert "it is required" in one(found, "'rolle'").message
    assert "(allowed: " in one(found, "'zzz'").message


def test_semantic_checks_still_run_when_an_agent_document_is_invalid() -> None:
    bad = AGENT.replace("id: w1", "id: w9").replace("port: 8002", "port: x")
    typo = AGENT.replace("role: worker", "role: wroker")
    found = issues(swarm=SWARM, a=bad, b=typo)
    assert one(found, "expected an integer").path == "agents[1].port"
    unknown = one(found, "role 'wroker' is not defined (did you mean 'worker'?)")
    assert unknown.path == "agents[2].role"  # index in the full list, though agents[1] was left out
    assert unknown.position == at(agent_file("b"), typo, "wroker")


def test_semantic_checks_still_run_when_an_inline_agent_is_invalid() -> None:
    text = SWARM + "  - id: Bad\n    role: worker\n    port: 8009\n  - id: w5\n    role: wroker\n    port: 8010\n"
    found = issues(swarm=text)
    assert one(found, "is not a valid id").path == "agents[1].id"
    assert one(found, "role 'wroker' is not defined").path == "agents[2].role"


def test_digest_is_independent_of_order_and_path_prefix() -> None:
    a = files(swarm=SWARM, w1=AGENT)
    b = dict(reversed(list(a.items())))
    c = {"/abs/root/" + k: v for k, v in a.items()}
    d = {k.removeprefix("specs/"): v for k, v in a.items()}
    assert compute_digest(a) == compute_digest(b) == compute_digest(c) == compute_digest(d)
    assert load(swarm=SWARM, w1=AGENT).digest == compute_digest(a)


def test_digest_changes_with_any_byte_or_name() -> None:
    base = compute_digest(files(swarm=SWARM, w1=AGENT))
    assert compute_digest(files(swarm=SWARM, w1=AGENT + "# comment\n")) != base
    assert compute_digest(files(swarm=SWARM, w2=AGENT)) != base
    # moving bytes between files is a different spec
    moved = files(swarm=SWARM + AGENT[:5], w1=AGENT[5:])
    assert compute_digest(moved) != base


def test_read_spec_files_walks_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "specs" / "agents" / "deep").mkdir(parents=True)
    (tmp_path / "specs" / "swarm.yaml").write_text(SWARM)
    (tmp_path / "specs" / "agents" / "deep" / "w1.yml").write_text(AGENT)
    (tmp_path / "specs" / "README.md").write_text("not a spec")
    (tmp_path / "specs" / ".hidden.yaml").write_text("garbage: [")
    (tmp_path / "specs" / ".git").mkdir()
    (tmp_path / "specs" / ".git" / "x.yaml").write_text("garbage: [")
    monkeypatch.chdir(tmp_path)
    found = read_spec_files("specs")
    assert list(found) == ["specs/agents/deep/w1.yml", "specs/swarm.yaml"]
    loaded = load_spec_full([tmp_path / "specs"])
    assert loaded.files == ("specs/agents/deep/w1.yml", "specs/swarm.yaml")
    same = {"specs/swarm.yaml": SWARM.encode(), "specs/agents/deep/w1.yml": AGENT.encode()}
    assert loaded.digest == compute_digest(same)


def test_display_path_outside_cwd_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tmp_path / "one.yaml"
    spec.write_text(SWARM)
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    assert list(read_spec_files(spec)) == [spec.as_posix()]


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        read_spec_files([tmp_path / "nope", tmp_path])
    messages = [i.message for i in info.value.issues]
    assert any("does not exist" in m and "nope" in m for m in messages)
    assert any("no .yaml/.yml files" in m for m in messages)


def test_oversized_file_is_refused_by_the_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as info:
        read_spec_files(big)
    (issue,) = info.value.issues
    assert issue.position == Position("big.yaml", 1, 1) and "over the limit" in issue.message


def test_no_files_at_all() -> None:
    with pytest.raises(SpecError, match="no spec files given"):
        parse_spec_texts({})


def test_spec_error_lists_issues_sorted_by_position() -> None:
    text = AGENT.replace("port: 8002", "port: x").replace("role: worker", "role: 7")
    with pytest.raises(SpecError) as info:
        parse_spec_texts(files(swarm=SWARM, w1=text))
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{agent_file('w1')}:4:7: error: agents[1].role:")
    assert lines[1].startswith(f"{agent_file('w1')}:5:7: error: agents[1].port:")


def test_typo_of_a_required_field_is_one_issue() -> None:
    text = AGENT.replace("role: worker", "rol: worker")
    found = [i for i in issues(swarm=SWARM, w1=text)]
    assert len(found) == 1
    assert found[0].message == "unknown field 'rol' (did you mean 'role'? it is required)"
    assert found[0].position == at(agent_file("w1"), text, "rol")


def test_structural_issues_show_paths_as_written() -> None:
    from swarm.spec.loader import structural_issues

    (issue,) = structural_issues({"a.yaml": AGENT.replace("port: 8002", "port: x").encode()})
    assert issue.path == "port" and issue.position == Position("a.yaml", 5, 7)


def test_uppercase_extensions_are_read_not_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "swarm.YAML").write_text(SWARM)
    (tmp_path / "specs" / "Review.YML").write_text(AGENT)
    (tmp_path / "specs" / ".Hidden.YML").write_text("garbage: [")
    (tmp_path / "specs" / "old.YML.bak").write_text("garbage: [")
    monkeypatch.chdir(tmp_path)
    assert list(read_spec_files("specs")) == ["specs/Review.YML", "specs/swarm.YAML"]
    loaded = load_spec_full("specs")
    assert loaded.files == ("specs/Review.YML", "specs/swarm.YAML")
    assert loaded.spec.agents == load_spec_full([tmp_path / "specs" / "swarm.YAML", tmp_path / "specs" / "Review.YML"]).spec.agents
    assert is_spec_file_name("a.Yml") and not is_spec_file_name(".a.yaml") and not is_spec_file_name("a.yaml~")


def test_a_trailing_newline_never_passes_as_an_id_or_name() -> None:
    # "^...$" with re.match would accept "w1\n"; the models' patterns match the whole value
    from swarm.errors import SpecError
    from swarm.spec.loader import parse_spec_texts
    from tests.spec.specdata import AGENT, SWARM

    for swarm_text, agent_text in (
        (SWARM.replace("name: demo", 'name: "demo\\n"'), AGENT),
        (SWARM, AGENT.replace("id: w1", 'id: "w1\\n"')),
        (SWARM, AGENT.replace("role: worker", 'role: "worker\\n"')),
    ):
        raw = {"specs/swarm.yaml": swarm_text.encode(), "specs/agents/w1.yaml": agent_text.encode()}
        try:
            parse_spec_texts(raw)
        except SpecError as exc:
            assert exc.issues
        else:
            raise AssertionError(f"accepted a name with a trailing newline: {swarm_text!r} {agent_text!r}")
