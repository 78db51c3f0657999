"""schemathesis against /openapi.json of a real registry: no request may produce a 5xx.

Runs the schemathesis CLI (``st run``) in a subprocess with bounded examples and a
time budget, with the admin token so that writes reach the handlers (not only the
auth check). /agents/watch is excluded: it is an endless event stream (covered by
test_watch.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.registry.conftest import RegistryFactory, make_catalog

#: slow suite (schemathesis explores the whole API description); `.ci/run` runs it after the quick suite
pytestmark = pytest.mark.slow


def test_no_server_errors(registry_factory: RegistryFactory, tmp_path: Path) -> None:
    registry = registry_factory()
    # undeclared ids allowed, so generated registrations reach the store (not only a 403)
    registry.push(make_catalog(["architect"], allow_undeclared=True))
    registry.register("architect")
    st = Path(sys.executable).parent / "st"
    args = [
        str(st), "run", registry.url + "/openapi.json",
        "--checks", "not_a_server_error",
        "--max-examples", "8",
        "--max-time", "8",
        "--phases", "coverage,fuzzing",
        "--exclude-path", "/agents/watch",
        "--request-timeout", "5",
        "--generation-database", "none",
        "--workers", "1",
        "-H", f"Authorization: Bearer {registry.admin}",
    ]
    proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "NO_COLOR": "1"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "passed" in out and "Server error" not in out, out[-6000:]
    assert "Traceback" not in registry.log_text()


def test_every_check_passes(registry_factory: RegistryFactory, tmp_path: Path) -> None:
    """All of schemathesis' checks (not only "no 5xx"), every phase, every operation including
    the SSE watch: the description holds. Settings: tests/registry/schemathesis.toml."""
    registry = registry_factory(env={"SWARM_GIT_WEBHOOK_SECRET": "schemathesis-hook"})
    registry.push(make_catalog(["architect"], allow_undeclared=True))
    registry.register("architect")
    st = Path(sys.executable).parent / "st"
    config = Path(__file__).with_name("schemathesis.toml")
    args = [
        str(st), "--config-file", str(config), "run", registry.url + "/openapi.json",
        "--checks", "all",
        "--max-examples", "10",
        "--max-time", "30",
        "--request-timeout", "5",
        "--generation-database", "none",
        "--workers", "1",
        "-H", f"Authorization: Bearer {registry.admin}",
    ]
    proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "NO_COLOR": "1"})
    out = proc.stdout + proc.stderr
    summary = out[out.rfind("SUMMARY"):] if "SUMMARY" in out else out[-6000:]
    assert proc.returncode == 0, summary[-6000:]
    assert "Failures:" not in summary, summary[-6000:]
    assert "Traceback" not in registry.log_text()
