"""CLI start-up (issue 12): the quick commands load no server, Redis or template stack.

Each command runs in a fresh interpreter (``python -m swarm``, the installed entry point's
path) and reports the top-level packages it imported; the banned ones must be absent.
Wall time is not asserted here (bench/bench_cli_startup.py measures it as ratios).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BANNED = ["uvicorn", "redis", "jinja2", "httpx", "starlette", "sse_starlette", "asyncio"]

_PROBE = """
import json, runpy, sys
banned = json.loads(sys.argv[2])
sys.argv = ["swarm"] + json.loads(sys.argv[1])
code = 0
try:
    runpy.run_module("swarm", run_name="__main__")
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "loaded": sorted({m.split(".")[0] for m in sys.modules} & set(banned))}),
      file=sys.stderr)
"""


def _loaded(argv: list[str], repo_root: Path, **env: str) -> tuple[int, list[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(argv), json.dumps(BANNED)],
        capture_output=True, text=True, cwd=repo_root, timeout=60, env={**os.environ, **env},
    )
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    return report["code"], report["loaded"]


@pytest.mark.parametrize("argv", [
    ["token", "architect", "--spec", "specs"],
    ["token", "--admin", "--spec", "specs"],
    ["token", "--read", "--spec", "specs"],
    ["--version"],
    ["validate", "specs"],
    ["validate", "-o", "json", "specs"],
])
def test_quick_commands_import_no_heavy_dependency(argv: list[str], repo_root: Path) -> None:
    code, loaded = _loaded(argv, repo_root, SWARM_REGISTRY_SECRET="s3cret")
    assert code == 0
    assert loaded == [], f"swarm {' '.join(argv)} imported {loaded}"


def test_the_probe_sees_a_heavy_import(repo_root: Path) -> None:
    """The check can fail: `swarm agents` against nothing imports httpx before it errors."""
    code, loaded = _loaded(["agents", "specs", "--registry-url", "http://127.0.0.1:9"], repo_root)
    assert code == 2
    assert "httpx" in loaded


def test_token_prints_the_same_token_as_the_registry_derives(repo_root: Path) -> None:
    from swarm.registry.auth import agent_token

    out = subprocess.run([sys.executable, "-m", "swarm", "token", "architect", "--spec", "specs"],
                         capture_output=True, text=True, cwd=repo_root, timeout=60,
                         env={**os.environ, "SWARM_REGISTRY_SECRET": "s3cret"}, check=True)
    assert out.stdout.strip() == agent_token("s3cret", "research", "architect")
