"""The container test's own harness, without containers (quick): names, engine config, the compose copy."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.containers.compose import without_depends_on
from tests.containers.standins import engine_env, fully_qualified

REPO = Path(__file__).resolve().parents[2]


def test_short_image_names_resolve_to_what_podman_looks_up_locally() -> None:
    assert fully_qualified("redis:7.0.15-alpine") == "docker.io/library/redis:7.0.15-alpine"
    assert fully_qualified("bitnami/redis:7") == "docker.io/bitnami/redis:7"
    assert fully_qualified("registry.example.com/team/redis:7") == "registry.example.com/team/redis:7"
    assert fully_qualified("localhost/x:1") == "localhost/x:1"


def test_podman_gets_runc_without_default_ulimits_through_its_own_config(tmp_path: Path) -> None:
    env = engine_env({"PATH": "/usr/bin"}, conf_dir=tmp_path)
    conf = Path(env["CONTAINERS_CONF"]).read_text()
    assert 'runtime = "runc"' in conf and "default_ulimits = []" in conf and env["PATH"] == "/usr/bin"


def test_the_compose_copy_drops_only_depends_on_and_moves_the_registry_port(tmp_path: Path) -> None:
    source = REPO / "compiled" / "research" / "docker-compose.yml"
    original = yaml.safe_load(source.read_text())
    assert any("depends_on" in s for s in original["services"].values())
    copy = without_depends_on(source, tmp_path / "c.yml", 41234)
    assert yaml.safe_load((tmp_path / "c.yml").read_text()) == copy
    assert not any("depends_on" in s for s in copy["services"].values())
    assert copy["services"]["registry"]["ports"] == ["127.0.0.1:41234:8700"]
    for name, service in original["services"].items():
        service.pop("depends_on", None)
        if name != "registry":
            assert copy["services"][name] == service  # everything else exactly as compiled
