"""Benchmark: a no-op ``swarm plan`` on a big swarm (issue 12: <= 0.5 s at 1,000 agents).

Run from the repository root::

    PYTHONPATH=$PWD .venv/bin/python -m bench.bench_plan [--agents 1000] [--runs 5] [--profile]

Starts a redis-server and a registry of its own, applies the spec once with
``swarm reconcile SPEC --once`` (the bench_reconcile spec: every agent has its
Redis user, inbox and outbox), then times whole ``swarm plan SPEC`` processes
(the same spec: nothing to do; the plan must say so, exit 0), with the
desired-state cache filled by a first plan (:mod:`swarm.desired_cache`: a
repeated plan of unchanged files) and without it (``SWARM_CACHE_DIR=""``: every
plan parses and validates the spec). In the same run the floor is measured:
``python -c pass`` and ``swarm --version``. Prints the medians; ``--profile``
also prints a cProfile of one in-process plan (a cache hit).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_reconcile import SECRET, swarm_yaml, write_agents
from swarm.registry.auth import admin_token
from tests.support.services import ProcessServer, RedisServer, free_port, python_cmd


def _time(cmd: list[str], env: dict[str, str], cwd: Path, ok: tuple[int, ...] = (0,)) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode not in ok:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        root = Path(tmp)
        rs = RedisServer(root / "redis", appendonly=False).start()
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(SWARM_REGISTRY_SECRET=SECRET, SWARM_ADMIN_TOKEN=admin_token(SECRET, "bench"),
                   SWARM_CACHE_DIR=str(root / "cache"))
        registry = ProcessServer(
            python_cmd("-m", "swarm", "registry", "serve", "--port", str(port), "--redis-url", rs.url,
                       "--swarm", "bench", "--no-probe", "--log-level", "warning"),
            port=port, env=env, log=root / "registry.log",
        ).start()
        try:
            spec = root / "specs"
            spec.mkdir()
            (spec / "swarm.yaml").write_text(swarm_yaml(list(range(30)), False, rs.url, registry.url))
            write_agents(spec, args.agents)
            _time(python_cmd("-m", "swarm", "reconcile", str(spec), "--once", "--compiled-dir", ""), env, root)
            plan = python_cmd("-m", "swarm", "plan", str(spec))
            samples: dict[str, list[float]] = {"python -c pass": [], "swarm --version": [], "swarm plan (no-op)": [],
                                               "plan, no desired cache": []}
            uncached = {**env, "SWARM_CACHE_DIR": ""}  # every plan parses and validates the spec
            _time(plan, env, root)  # warm (and fills the desired-state cache)
            for _ in range(args.runs):
                samples["python -c pass"].append(_time([sys.executable, "-c", "pass"], env, root))
                samples["swarm --version"].append(_time(python_cmd("-m", "swarm", "--version"), env, root))
                samples["swarm plan (no-op)"].append(_time(plan, env, root))
                samples["plan, no desired cache"].append(_time(plan, uncached, root))
            print(f"{args.agents} agents, median of {args.runs}:")
            for name, values in samples.items():
                print(f"  {name:22s} {statistics.median(values) * 1000:8.1f} ms")
            if args.profile:
                import cProfile
                import pstats

                os.environ.update(env)
                os.chdir(root)
                from swarm.cli import main as swarm_main

                cProfile.runctx("swarm_main(['plan', str(spec)])", globals(), {"swarm_main": swarm_main, "spec": spec},
                                str(root / "plan.prof"))
                stats = pstats.Stats(str(root / "plan.prof"))
                stats.sort_stats("cumulative").print_stats(45)
                stats.sort_stats("tottime").print_stats(25)
        finally:
            registry.stop()
            rs.stop()


if __name__ == "__main__":
    main()
