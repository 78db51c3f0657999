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
# a None entry is a module marked absent (swarm.cli does so for httpx._main), not one imported
imported = [m for m, module in sys.modules.items() if module is not None]
print(json.dumps({"code": code, "loaded": sorted({m.split(".")[0] for m in imported} & set(banned))}),
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


#: what `swarm plan` of cached bytes needs none of (it does need httpx, redis and asyncio)
PLAN_BANNED = ["uvicorn", "jinja2", "starlette", "sse_starlette", "watchfiles", "prometheus_client",
               "yaml", "click", "rich", "pygments", "swarm.spec.models", "swarm.spec.loader",
               "swarm.spec.checks", "swarm.registry.models"]

_MODULE_PROBE = _PROBE.replace('{m.split(".")[0] for m in imported}', '({m.split(".")[0] for m in imported} | set(imported))')


def test_plan_of_cached_bytes_loads_no_parser_models_or_server_stack(repo_root: Path, tmp_path: Path) -> None:
    """The second `swarm plan` of the same files reads the desired-state cache: no YAML, no spec
    models, no httpx command-line client (click, rich). The registry is unreachable (exit 2):
    the desired state is loaded (and, the first time, cached) before the live system is asked."""
    argv = ["plan", str(repo_root / "specs"), "--registry-url", "http://127.0.0.1:9", "--redis-url",
            "redis://127.0.0.1:9/0"]

    def loaded() -> tuple[int, list[str]]:
        proc = subprocess.run(
            [sys.executable, "-c", _MODULE_PROBE, json.dumps(argv), json.dumps(PLAN_BANNED)],
            capture_output=True, text=True, cwd=tmp_path, timeout=60,
            env={**os.environ, "SWARM_REGISTRY_SECRET": "s3cret"},
        )
        report = json.loads(proc.stderr.strip().splitlines()[-1])
        return report["code"], report["loaded"]

    first_code, first = loaded()
    assert first_code == 2 and "yaml" in first and "swarm.spec.models" in first, "a miss parses: the probe sees it"
    code, again = loaded()
    assert code == 2
    assert again == [], f"swarm plan of cached bytes imported {again}"
