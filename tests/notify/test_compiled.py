"""The compiled reconciler gets the variables the notifications read (compose and kubernetes targets)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from swarm.compiler import compile_loaded
from swarm.secrets_k8s import secret_manifests
from swarm.spec.loader import LoadedSpec, load_spec_full
from tests.reconcile.specdata import REPO

NOTES = """notifications:
  - {name: ops, url: "https://hooks.example.com/x", secret_env: OPS_KEY, triggers: [on-sync-failed]}
  - {name: chat, url_env: SLACK_URL, format: slack, triggers: [on-breaker-opened]}
"""


def loaded_with_notes(tmp_path: Path) -> LoadedSpec:
    import shutil

    shutil.copytree(REPO / "specs", tmp_path / "specs")
    with open(tmp_path / "specs" / "swarm.yaml", "a") as f:
        f.write(NOTES)
    return load_spec_full(tmp_path / "specs")


def test_compose_and_kubernetes_reconcilers_read_the_notification_variables(tmp_path: Path) -> None:
    loaded = loaded_with_notes(tmp_path)
    assert loaded.spec.notification_env() == ["OPS_KEY", "SLACK_URL"]
    files = compile_loaded(loaded)
    compose = yaml.safe_load(files["research/docker-compose.yml"])
    env = compose["services"]["swarm-reconciler"]["environment"]
    assert env["OPS_KEY"] == "${OPS_KEY:-}" and env["SLACK_URL"] == "${SLACK_URL:-}"
    assert "OPS_KEY" not in compose["services"]["registry"].get("environment", {})
    objects: list[Any] = list(yaml.safe_load_all(files["research/kubernetes/reconciler.yaml"]))
    [deployment] = [o for o in objects if o and o["kind"] == "Deployment"]
    [container] = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "reconciler"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if e["name"] in ("OPS_KEY", "SLACK_URL")}
    assert refs == {name: {"name": "research-swarm", "key": name, "optional": True} for name in ("OPS_KEY", "SLACK_URL")}


def test_the_swarm_secret_carries_the_notification_values_that_are_set(tmp_path: Path) -> None:
    loaded = loaded_with_notes(tmp_path)
    [swarm_secret, *_agents] = secret_manifests(
        loaded.spec, swarm_version="0.1.0", registry_secret="s" * 64, redis_password="p" * 32,
        notify_values={"SLACK_URL": "https://hooks.slack.com/services/T/B/X", "UNRELATED": "x", "OPS_KEY": ""})
    data = {k: base64.b64decode(v).decode() for k, v in swarm_secret["data"].items()}
    assert data["SLACK_URL"] == "https://hooks.slack.com/services/T/B/X"
    assert "UNRELATED" not in data and "OPS_KEY" not in data


def test_without_notifications_the_compiled_output_names_no_variable(tmp_path: Path) -> None:
    loaded = load_spec_full(REPO / "specs")
    assert loaded.spec.notification_env() == []
    assert (REPO / "compiled" / "research" / "docker-compose.yml").read_bytes() == compile_loaded(loaded)[
        "research/docker-compose.yml"]
