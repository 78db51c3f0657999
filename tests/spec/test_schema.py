"""The generated JSON Schema: draft-07, committed, and in agreement with the loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from swarm.spec.loader import read_spec_files, structural_issues
from swarm.spec.schema import SCHEMA_FILE, build_schema, schema_files
from tests.spec.specdata import AGENT, SWARM

MINIMAL_SWARM = "apiVersion: swarm/v1\nkind: Swarm\nmetadata: {name: x}\n"
MINIMAL_AGENT = "apiVersion: swarm/v1\nkind: Agent\nid: a\nrole: r\nport: 1\n"


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    schema = build_schema()
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def _example_documents() -> list[str]:
    repo = Path(__file__).resolve().parents[2]
    texts = read_spec_files(repo / "specs").values()
    return [yaml.safe_dump(d) for t in texts for d in yaml.safe_load_all(t)]


VALID = [
    SWARM,
    AGENT,
    MINIMAL_SWARM,
    MINIMAL_AGENT,
    MINIMAL_AGENT + "runtime: node\nregistry: false\nhandler: pkg.mod:run\nversion: 2.0.0-rc.1\n",
    MINIMAL_AGENT + "metadata: {team: search}\ncapabilities: [a, b]\nname: 'Ünïcode \"name\"'\n",
    MINIMAL_AGENT + "requirements: [anthropic, 'httpx-sse>=0.4,<1', 'Foo.Bar[x,y]~=1.2']\n",
    "apiVersion: swarm/v1\nkind: Swarm\nmetadata: {name: x, labels: {env: prod}, description: d}\n",
    MINIMAL_SWARM + "bus: {breaker: {failure_threshold: 0, cooldown_seconds: 0.5}}\n",
    MINIMAL_SWARM + "registry: {heartbeat_interval: null}\ntopics: [{name: a-b.c_d, dedup_window_seconds: 5}]\n",
    MINIMAL_SWARM + "roles: {r: {deny: {subscribe: ['>']}}}\n",
    MINIMAL_AGENT + "version: 1.0.0-rc.1+build.5\n",
    MINIMAL_AGENT + "version: 1.0.0+20130313144700\n",
    MINIMAL_AGENT + "version: 1.0.0-x-y-z.--.0.3.7\n",
    MINIMAL_AGENT + "version: 0.0.0-0a.beta+exp.sha.5114f85\n",
    MINIMAL_SWARM + "bus: {redis_url: 'unix:///run/redis.sock?db=1'}\nregistry: {url: 'http://h:1/a@b?x=@'}\n",
]

INVALID = {
    "unknown top key": MINIMAL_AGENT + "prot: 1\n",
    "unknown nested key": MINIMAL_SWARM + "registry: {ttl: 3}\n",
    "unknown key in list item": MINIMAL_SWARM + "topics: [{name: a, maxlen: 3}]\n",
    "port as string": MINIMAL_AGENT.replace("port: 1", "port: '1'"),
    "ttl as bool": MINIMAL_SWARM + "registry: {ttl_seconds: true}\n",
    "list as scalar": MINIMAL_AGENT + "publishes: a\n",
    "null list": MINIMAL_AGENT + "capabilities: null\n",
    "missing metadata": "apiVersion: swarm/v1\nkind: Swarm\n",
    "missing port": MINIMAL_AGENT.replace("port: 1\n", ""),
    "missing kind": MINIMAL_AGENT.replace("kind: Agent\n", ""),
    "bad kind": MINIMAL_AGENT.replace("kind: Agent", "kind: Pod"),
    "bad apiVersion": MINIMAL_AGENT.replace("swarm/v1", "swarm/v2"),
    "bad runtime": MINIMAL_AGENT + "runtime: java\n",
    "traversal id": MINIMAL_AGENT.replace("id: a", "id: ../x"),
    "long id": MINIMAL_AGENT.replace("id: a", "id: " + "a" * 64),
    "bad topic name": MINIMAL_AGENT + "publishes: [Tasks]\n",
    "bad role key": MINIMAL_SWARM + "roles: {Planner: {}}\n",
    "port out of range": MINIMAL_AGENT.replace("port: 1", "port: 0"),
    "bad handler": MINIMAL_AGENT + "handler: 'not a handler'\n",
    "bad version": MINIMAL_AGENT + "version: v1\n",
    "requirement as pip option": MINIMAL_AGENT + "requirements: ['--index-url=http://evil']\n",
    "requirement with url": MINIMAL_AGENT + "requirements: ['x @ https://e/x.whl']\n",
    "requirement with newline": MINIMAL_AGENT + "requirements: [\"x>=1\\n-r other.txt\"]\n",
    "agent field in swarm": MINIMAL_SWARM + "port: 1\n",
    "swarm field in agent": MINIMAL_AGENT + "topics: []\n",
    "not a mapping": "- a\n- b\n",
    "version with leading zero": MINIMAL_AGENT + "version: 01.0.0\n",
    "version with empty pre-release": MINIMAL_AGENT + "version: 1.0.0-\n",
    "version with numeric pre-release leading zero": MINIMAL_AGENT + "version: 1.0.0-rc.01\n",
    "version with empty build identifier": MINIMAL_AGENT + "version: 1.0.0+a..b\n",
    "version with two build parts": MINIMAL_AGENT + "version: 1.0.0+a+b\n",
    "password in redis_url": MINIMAL_SWARM + "bus: {redis_url: 'redis://:s3cret@127.0.0.1:6379/0'}\n",
    "user and password in redis_url": MINIMAL_SWARM + "bus: {redis_url: 'rediss://agent:pw@redis/0'}\n",
    "user in registry url": MINIMAL_SWARM + "registry: {url: 'https://admin@registry:8700'}\n",
    "password in registry url": MINIMAL_SWARM + "registry: {url: 'http://u:p@127.0.0.1:8700/'}\n",
}


def _loader_ok(text: str) -> bool:
    return structural_issues({"doc.yaml": text.encode()}) == []


def _schema_ok(validator: Draft7Validator, text: str) -> bool:
    return not list(validator.iter_errors(yaml.safe_load(text)))


@pytest.mark.parametrize("text", VALID + _example_documents(), ids=lambda t: t.split("\n")[2][:30])
def test_valid_documents_accepted_by_both(validator: Draft7Validator, text: str) -> None:
    assert _loader_ok(text), structural_issues({"doc.yaml": text.encode()})
    assert _schema_ok(validator, text)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_documents_rejected_by_both(validator: Draft7Validator, name: str) -> None:
    text = INVALID[name]
    assert not _loader_ok(text)
    assert not _schema_ok(validator, text)


def test_schema_is_draft07_with_definitions() -> None:
    schema = build_schema()
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    text = json.dumps(schema)
    assert "$defs" not in text and "#/definitions/SwarmDocument" in text
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                assert set(node) == {"$ref"}, f"$ref with siblings is ignored by draft-07: {node}"
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    for ref in refs:
        assert ref.removeprefix("#/definitions/") in schema["definitions"]


def test_schema_text_is_deterministic() -> None:
    first = schema_files()
    assert first == schema_files()
    text = first[SCHEMA_FILE]
    assert text.endswith("}\n") and text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_committed_schema_is_current(repo_root: Path) -> None:
    committed = (repo_root / "schemas" / SCHEMA_FILE).read_text(encoding="utf-8")
    assert committed == schema_files()[SCHEMA_FILE], "run `swarm schema` and commit schemas/"


def test_example_specs_carry_the_modeline(repo_root: Path) -> None:
    for path in sorted((repo_root / "specs").rglob("*.yaml")):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path
        target = (path.parent / first.split("$schema=", 1)[1]).resolve()
        assert target == (repo_root / "schemas" / SCHEMA_FILE).resolve(), path


def test_loader_refuses_a_requirement_with_a_trailing_newline() -> None:
    """Python's ``re`` lets ``$`` match before a final newline, so jsonschema here would
    accept it (editors' JavaScript regexes do not); the loader, which guards the
    generated requirements.txt, must refuse it."""
    assert not _loader_ok(MINIMAL_AGENT + 'requirements: ["x>=1\\n"]\n')


@pytest.mark.parametrize("field", ["bus: {redis_url: 'redis://:s3cret@h:6379/0'}", "registry: {url: 'http://u:p@h'}"])
def test_credentials_in_urls_get_a_clear_message(field: str) -> None:
    issues = structural_issues({"doc.yaml": (MINIMAL_SWARM + field + "\n").encode()})
    assert len(issues) == 1
    message = issues[0].message
    assert "credentials" in message and "--redis-url" in message and "environment" in message
    assert "s3cret" not in message and "u:p" not in message  # the error does not echo the password


def test_a_bad_version_names_semver() -> None:
    issues = structural_issues({"doc.yaml": (MINIMAL_AGENT + "version: 1.0.0-\n").encode()})
    assert len(issues) == 1 and "SemVer 2.0" in issues[0].message and "1.0.0-rc.1+build.5" in issues[0].message
