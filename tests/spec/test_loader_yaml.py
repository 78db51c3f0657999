"""YAML-level hazards: every one is an error with a position, never a surprise."""

from __future__ import annotations

import time

import pytest

from swarm.errors import Position, SpecError
from swarm.spec import yamldoc
from swarm.spec.loader import MAX_DEPTH, MAX_FILE_BYTES, parse_spec_texts
from tests.spec.specdata import AGENT, SWARM, SWARM_FILE, agent_file, at, files, issues, load, one


def test_duplicate_key_names_both_positions() -> None:
    text = AGENT.replace("port: 8002\n", "port: 8002\nport: 8003\n")
    found = issues(swarm=SWARM, w1=text)
    issue = one(found, "duplicate key 'port'")
    file = agent_file("w1")
    assert issue.position == at(file, text, "port", 1)
    assert issue.related == (at(file, text, "port", 0),)
    assert f"first at {at(file, text, 'port', 0)}" in issue.message
    assert issue.path == "port"


def test_duplicate_role_is_reported_as_duplicate_role() -> None:
    text = SWARM.replace("  worker:\n", "  planner:\n    publish: []\n  worker:\n")
    issue = one(issues(swarm=text), "duplicate role 'planner'")
    assert issue.position == at(SWARM_FILE, text, "planner", 1)
    assert issue.related == (at(SWARM_FILE, text, "planner", 0),)
    assert issue.path == "roles.planner"


def test_duplicate_keys_nested_in_lists_are_found() -> None:
    text = SWARM.replace("    role: planner\n", "    role: planner\n    role: worker\n")
    issue = one(issues(swarm=text), "duplicate key 'role'")
    assert issue.path == "agents[0].role"
    assert issue.position == at(SWARM_FILE, text, "role: worker")


def test_non_utf8_names_the_byte_and_its_position() -> None:
    raw = files(swarm=SWARM)
    raw[agent_file("bad")] = b"apiVersion: swarm/v1\nkind: Agent\nid: caf\xe9\n"
    with pytest.raises(SpecError) as info:
        parse_spec_texts(raw)
    (issue,) = info.value.issues
    assert issue.position == Position(agent_file("bad"), 3, 8)
    assert "not valid UTF-8" in issue.message and "0xe9" in issue.message


def test_utf8_bom_is_accepted() -> None:
    raw = files(swarm=SWARM)
    raw[SWARM_FILE] = b"\xef\xbb\xbf" + raw[SWARM_FILE]
    assert parse_spec_texts(raw).spec.name == "demo"


def test_oversized_file_is_refused_without_parsing() -> None:
    raw = files(swarm=SWARM)
    raw[agent_file("big")] = b"#" * (MAX_FILE_BYTES + 1)
    with pytest.raises(SpecError) as info:
        parse_spec_texts(raw)
    (issue,) = info.value.issues
    assert issue.position == Position(agent_file("big"), 1, 1)
    assert "over the limit" in issue.message and "1 MiB" in issue.message


def test_file_at_the_limit_is_accepted() -> None:
    raw = files(swarm=SWARM)
    raw[SWARM_FILE] = raw[SWARM_FILE] + b"#" * (MAX_FILE_BYTES - len(raw[SWARM_FILE]))
    assert len(raw[SWARM_FILE]) == MAX_FILE_BYTES
    assert parse_spec_texts(raw).spec.name == "demo"


def test_alias_is_refused_at_its_position() -> None:
    text = AGENT.replace("subscribes: [tasks.a]", "subscribes: &t [tasks.a]\ncapabilities: *t")
    issue = one(issues(swarm=SWARM, w1=text), "alias '*t' is not allowed")
    assert issue.position == at(agent_file("w1"), text, "*t")


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ["kind: Agent", 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    bomb = "\n".join(lines) + "\n"
    started = time.monotonic()
    found = issues(swarm=SWARM, bomb=bomb)
    assert time.monotonic() - started < 30  # a sanity bound only: expansion would never finish
    issue = one(found, "alias '*a0' is not allowed")
    assert issue.position == at(agent_file("bomb"), bomb, "*a0")


def test_merge_key_is_refused() -> None:
    text = AGENT.replace("port: 8002\n", "<<: {port: 8002}\n")
    issue = one(issues(swarm=SWARM, w1=text), "merge keys")
    assert issue.position == at(agent_file("w1"), text, "<<")


def test_python_tags_are_refused() -> None:
    text = AGENT.replace("port: 8002", "port: !!python/object/apply:os.system [echo hi]")
    issue = one(issues(swarm=SWARM, w1=text), "is not allowed")
    assert "tag" in issue.message and issue.path == "port"
    assert issue.position == at(agent_file("w1"), text, "!!python")
    assert len(issues(swarm=SWARM, w1=text)) == 1  # no second error for the refused value


def test_syntax_error_carries_the_mark() -> None:
    text = AGENT.replace("publishes: [results.a]", "publishes: [results.a")
    found = issues(swarm=SWARM, w1=text)
    issue = one(found, "YAML syntax error")
    assert issue.position is not None and issue.position.file == agent_file("w1")
    assert issue.position.line == 7  # the parser notices at the next key
    assert "started at specs/agents/w1.yaml:6:12" in issue.message


def test_control_character_is_positioned() -> None:
    text = AGENT.replace("id: w1", "id: w\x071")
    issue = one(issues(swarm=SWARM, w1=text), "unacceptable character")
    assert issue.position == at(agent_file("w1"), text, "\x07")


@pytest.fixture(autouse=True, params=["libyaml", "pure-python"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run every test with the fast (libyaml) and the pure-Python parser: same results."""
    if request.param == "pure-python":
        monkeypatch.setattr(yamldoc, "_FAST_LOADER", None)
    elif yamldoc._FAST_LOADER is None:
        pytest.skip("libyaml is not available")
    return str(request.param)


def test_deep_nesting_is_refused() -> None:
    deep = "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5)
    text = AGENT + f"metadata: {deep}\n"
    issue = one(issues(swarm=SWARM, w1=text), f"nesting deeper than {MAX_DEPTH} levels")
    assert issue.position == at(agent_file("w1"), text, "[", 2 + MAX_DEPTH - 1)


@pytest.mark.parametrize("opening", ["[", "{a: "])
def test_pathological_nesting_stops_early(opening: str) -> None:
    # both parsers are quadratic in the depth: 1 MiB of '[' would run for minutes
    count = 200_000 // len(opening)
    closing = "]" if opening == "[" else "}"
    bomb = "kind: Agent\nx: " + opening * count + closing * count + "\n"
    issue = one(issues(swarm=SWARM, deep=bomb), "nesting deeper")
    assert issue.position is not None and issue.position.line == 2


def test_non_mapping_document() -> None:
    text = AGENT + "---\n- just\n- a list\n"
    issue = one(issues(swarm=SWARM, w1=text), "must be a mapping, got a list")
    assert issue.position == at(agent_file("w1"), text, "- just")
    assert "document 2" in issue.message


def test_missing_and_unknown_kind() -> None:
    nokind = AGENT.replace("kind: Agent\n", "")
    typo = AGENT.replace("kind: Agent", "kind: Agnet")
    found = issues(swarm=SWARM, a=nokind, b=typo)
    missing = one(found, "has no 'kind'")
    assert missing.position == Position(agent_file("a"), 1, 1)
    unknown = one(found, "unknown kind 'Agnet' (did you mean 'Agent'?)")
    assert unknown.position == at(agent_file("b"), typo, "Agnet")


def test_wrong_api_version() -> None:
    text = AGENT.replace("swarm/v1", "swarm/v2")
    issue = one(issues(swarm=SWARM, w1=text), "unsupported apiVersion 'swarm/v2'")
    assert issue.position == at(agent_file("w1"), text, "swarm/v2")
    assert issue.path == "apiVersion"


def test_no_swarm_document() -> None:
    found = issues(w1=AGENT)
    assert one(found, "no 'kind: Swarm' document").position == Position(agent_file("w1"), 1, 1)


def test_several_swarm_documents_name_every_place() -> None:
    found = issues(swarm=SWARM, other=SWARM)
    assert len(found) == 2
    places = {i.position for i in found}
    assert places == {Position(SWARM_FILE, 1, 1), Position(agent_file("other"), 1, 1)}
    for issue in found:
        assert "2 'kind: Swarm' documents" in issue.message
        assert issue.related and issue.related[0] != issue.position
        assert str(issue.related[0]) in issue.message


def test_empty_documents_and_comment_only_files_are_ignored() -> None:
    loaded = load(swarm="---\n" + SWARM + "---\n", notes="# nothing here yet\n")
    assert loaded.spec.name == "demo"


def test_keys_are_taken_as_written() -> None:
    text = SWARM.replace("  worker:\n", "  on:\n    publish: []\n  worker:\n")
    assert "on" in load(swarm=text).spec.roles


def test_errors_of_all_files_come_at_once() -> None:
    bad_yaml = AGENT.replace("[results.a]", "[results.a")
    dup = AGENT.replace("id: w1", "id: w2\nid: w3")
    raw = files(swarm=SWARM, a=bad_yaml, b=dup)
    raw[agent_file("c")] = b"\xff"
    with pytest.raises(SpecError) as info:
        parse_spec_texts(raw)
    by_file = {i.position.file for i in info.value.issues if i.position}
    assert by_file == {agent_file("a"), agent_file("b"), agent_file("c")}


def test_deep_value_of_a_refused_key_is_not_parsed_to_the_end() -> None:
    count = 100_000
    text = AGENT + "port: " + "[" * count + "]" * count + "\n"  # a duplicate key with a deep value
    found = issues(swarm=SWARM, w1=text)
    assert one(found, "duplicate key 'port'")
    assert one(found, "nesting deeper")
