"""Environment overlays (``kind: Environment``, ``--env NAME``): one spec, several
environments; patches keep positions, and an overlay cannot add agents or change
ACLs without the base's consent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from swarm.errors import SpecError
from swarm.spec.loader import load_spec_full, parse_spec_texts

BASE = """\
apiVersion: swarm/v1
kind: Swarm
metadata:
  name: demo
registry:
  url: http://127.0.0.1:8700
  ttl_seconds: 30
bus:
  redis_url: redis://127.0.0.1:6379/0
topics:
  - name: tasks.work
  - name: results.work
roles:
  worker:
    publish: ["results.*"]
    subscribe: ["tasks.>"]
  idle: {}
agents:
  - id: inline
    role: worker
    port: 9001
    publishes: [results.work]
"""
AGENT = """\
apiVersion: swarm/v1
kind: Agent
id: documented
role: idle
port: 9002
"""
REPO = Path(__file__).resolve().parents[2]


def overlay(name: str = "staging", **body: Any) -> bytes:
    doc = {"apiVersion": "swarm/v1", "kind": "Environment", "metadata": {"name": name}, **body}
    return yaml.safe_dump(doc, sort_keys=False).encode()


def files(env_text: bytes | None = None, base: str = BASE, **extra: bytes) -> dict[str, bytes]:
    out = {"specs/swarm.yaml": base.encode(), "specs/agents/documented.yaml": AGENT.encode(), **extra}
    if env_text is not None:
        out["specs/environments/staging.yaml"] = env_text
    return out


def issues_of(raw: dict[str, bytes], env: str = "staging") -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec_texts(raw, env)
    return [i.format() for i in info.value.issues]


def test_an_overlay_patches_settings_and_agents_by_id() -> None:
    raw = files(overlay(
        swarm={"registry": {"url": "http://registry.staging:8700"}, "bus": {"redis_url": "redis://redis.staging:6379/0"},
               "images": {"repository": "registry.example.com/team"}},
        agents={"inline": {"port": 9101, "metadata": {"tier": "staging"}}, "documented": {"version": "2.0.0"}},
    ))
    loaded = parse_spec_texts(raw, "staging")
    spec = loaded.spec
    assert spec.swarm.registry.url == "http://registry.staging:8700"
    assert spec.swarm.registry.ttl_seconds == 30  # merged, not replaced
    assert spec.swarm.bus.redis_url == "redis://redis.staging:6379/0"
    assert spec.swarm.images.repository == "registry.example.com/team"
    inline, documented = spec.agent("inline"), spec.agent("documented")
    assert inline is not None and documented is not None
    assert (inline.port, inline.metadata, inline.role) == (9101, {"tier": "staging"}, "worker")
    assert documented.version == "2.0.0"
    assert loaded.environment == "staging" and loaded.output_name == "demo.staging"
    # the patched value's position is the overlay's
    position = loaded.sources.position(("agents", 0, "port"))
    assert position is not None and position.file == "specs/environments/staging.yaml"


def test_without_env_overlays_are_ignored_and_outside_the_digest() -> None:
    plain = parse_spec_texts(files())
    with_overlay = parse_spec_texts(files(overlay(swarm={"registry": {"url": "http://x:1"}})))
    broken = parse_spec_texts(files(b"apiVersion: swarm/v1\nkind: Environment\nmetadata: {name: staging}\nswarm: 3\n"))
    assert plain.digest == with_overlay.digest == broken.digest
    assert with_overlay.spec.swarm.registry.url == "http://127.0.0.1:8700"
    assert "specs/environments/staging.yaml" not in with_overlay.files
    # the selected overlay is part of its environment's digest; another environment's is not
    staging = parse_spec_texts(files(overlay(swarm={"registry": {"url": "http://x:1"}})), "staging")
    prod = files(overlay(swarm={"registry": {"url": "http://x:1"}}), **{"specs/environments/prod.yaml": overlay("prod")})
    assert staging.digest != plain.digest
    assert parse_spec_texts(prod, "prod").digest == parse_spec_texts(
        files(None, **{"specs/environments/prod.yaml": overlay("prod")}), "prod").digest


def test_a_bad_value_in_an_overlay_is_reported_at_the_overlay() -> None:
    text = overlay(swarm={"registry": {"ttl_seconds": -5}}, agents={"inline": {"port": "eighty"}})
    found = issues_of(files(text))
    lines = text.decode().splitlines()
    ttl_line = next(i for i, line in enumerate(lines, 1) if "ttl_seconds" in line)
    port_line = next(i for i, line in enumerate(lines, 1) if "port:" in line)
    assert any(f.startswith(f"specs/environments/staging.yaml:{ttl_line}:") and "ttl_seconds" in f for f in found), found
    assert any(f.startswith(f"specs/environments/staging.yaml:{port_line}:") and "port" in f for f in found), found


def test_a_semantic_error_an_overlay_causes_points_at_the_overlay() -> None:
    # the overlay subscribes an agent to an undeclared topic (with acl allowed)
    base = BASE.replace("agents:\n", "environments:\n  allow: [acl]\nagents:\n", 1)
    text = overlay(agents={"inline": {"subscribes": ["tasks.nope"]}})
    found = issues_of(files(text, base=base))
    assert any(f.startswith("specs/environments/staging.yaml:") and "tasks.nope" in f for f in found), found


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"add_agents": [{"id": "extra", "role": "idle", "port": 9200}]}, "may not add agents"),
        ({"swarm": {"registry": {"allow_undeclared": True}}}, "may not add agents"),
        ({"swarm": {"roles": {"idle": {"publish": [">"]}}}}, "may not change ACLs"),
        ({"swarm": {"registry": {"public_reads": True}}}, "may not change ACLs"),
        ({"agents": {"documented": {"role": "worker"}}}, "may not change ACLs"),
        ({"agents": {"inline": {"publishes": []}}}, "may not change ACLs"),
        ({"agents": {"inline": {"capabilities": ["admin"]}}}, "may not change ACLs"),
    ],
)
def test_adding_agents_or_changing_acls_needs_the_base_s_consent(body: dict[str, Any], needle: str) -> None:
    found = issues_of(files(overlay(**body)))
    assert any(needle in f and f.startswith("specs/environments/staging.yaml:") for f in found), found
    assert any("environments.allow" in f for f in found)
    right = "agents" if "agents" in needle else "acl"
    base = BASE.replace("agents:\n", f"environments:\n  allow: [{right}]\nagents:\n", 1)
    loaded = parse_spec_texts(files(overlay(**body), base=base), "staging")  # allowed: it applies
    if "add_agents" in body:
        assert loaded.spec.agent("extra") is not None
        position = loaded.sources.position(("agents", 2, "port"))
        assert position is not None and position.file == "specs/environments/staging.yaml"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"swarm": {"metadata": {"name": "other"}}}, "swarm name"),
        ({"swarm": {"environments": {"allow": ["agents", "acl"]}}}, "cannot change what overlays may do"),
        ({"swarm": {"agents": []}}, "patch agents by id"),
        ({"agents": {"inline": {"id": "renamed"}}}, "identity"),
    ],
)
def test_some_patches_are_never_allowed(body: dict[str, Any], needle: str) -> None:
    base = BASE.replace("agents:\n", "environments:\n  allow: [agents, acl]\nagents:\n", 1)
    found = issues_of(files(overlay(**body), base=base))
    assert any(needle in f for f in found), found


def test_an_overlay_cannot_patch_an_agent_the_base_lacks() -> None:
    found = issues_of(files(overlay(agents={"documentd": {"port": 9300}})))
    assert any("'documentd'" in f and "did you mean 'documented'" in f for f in found), found


def test_null_restores_the_default() -> None:
    base = BASE.replace("  ttl_seconds: 30\n", "  ttl_seconds: 30\n  heartbeat_interval: 5\n")
    loaded = parse_spec_texts(files(overlay(swarm={"registry": {"heartbeat_interval": None}}), base=base), "staging")
    assert loaded.spec.swarm.registry.heartbeat_interval is None


def test_an_unknown_or_repeated_environment_is_an_error() -> None:
    found = issues_of(files(overlay()), env="stagng")
    assert any("no environment named 'stagng'" in f and "did you mean 'staging'" in f for f in found), found
    twice = files(overlay(), **{"specs/environments/again.yaml": overlay()})
    assert any("2 environments are named 'staging'" in f for f in issues_of(twice))


def test_a_broken_overlay_of_another_environment_does_not_stop_this_one() -> None:
    raw = files(overlay(), **{"specs/environments/prod.yaml": b"apiVersion: swarm/v1\nkind: Environment\n"
                              b"metadata: {name: prod}\nswarm: {registry: {ttl_seconds: -1}}\n"})
    assert parse_spec_texts(raw, "staging").environment == "staging"
    assert any("ttl_seconds" in f for f in issues_of(raw, env="prod"))


def test_an_invalid_overlay_document_is_reported() -> None:
    found = issues_of(files(b"apiVersion: swarm/v1\nkind: Environment\nmetadata: {name: staging}\nswarmm: {}\n"))
    assert any("swarmm" in f and "did you mean 'swarm'" in f for f in found), found


def _swarm(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "swarm", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_cli_validate_and_compile_with_env(tmp_path: Path) -> None:
    spec = tmp_path / "specs"
    for name, data in files(overlay(swarm={"registry": {"url": "http://registry.staging:8700"}})).items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    done = _swarm("validate", str(spec), "--env", "staging", cwd=tmp_path)
    assert done.returncode == 0 and "environment staging" in done.stdout, done.stderr
    done = _swarm("compile", str(spec), "--env", "staging", "--out", str(tmp_path / "compiled"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    registry = json.loads((tmp_path / "compiled" / "demo.staging" / "registry.json").read_text())
    assert registry["settings"]["url"] == "http://registry.staging:8700"
    assert not (tmp_path / "compiled" / "demo").exists()  # the base is not written
    done = _swarm("compile", str(spec), "--env", "staging", "--out", str(tmp_path / "compiled"), "--check", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = _swarm("validate", str(spec), "--env", "prod", "-o", "json", cwd=tmp_path)
    assert done.returncode == 2 and "no environment named 'prod'" in done.stdout


def test_the_example_staging_overlay_compiles() -> None:
    loaded = load_spec_full(REPO / "specs", "staging")
    assert loaded.spec.swarm.images.repository == "registry.example.com/research"
    assert load_spec_full(REPO / "specs").digest != loaded.digest


def test_the_stored_applied_spec_keeps_its_environment() -> None:
    """After a restart the reconciler re-reads the last applied spec from Redis: the
    environment must come back with it (else it would compare against the base)."""
    from swarm.desired import desired_from_spec
    from swarm.reconcile.loop import SpecSource, applied_spec_json, parse_applied_spec
    from swarm.reconcile.status import Revision

    raw = files(overlay(swarm={"registry": {"url": "http://registry.staging:8700"}}))
    loaded = parse_spec_texts(raw, "staging")
    source = SpecSource(loaded, desired_from_spec(loaded.spec, loaded.digest), Revision(), raw)
    back = parse_applied_spec(applied_spec_json(source), "demo")
    assert back is not None and back.loaded.environment == "staging"
    assert back.loaded.spec.swarm.registry.url == "http://registry.staging:8700"
    assert back.digest == source.digest
