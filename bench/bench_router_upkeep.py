"""Benchmark: what an idle router costs, by fleet size (its upkeep: reclaim, trims, lengths).

Run from the repository root::

    PYTHONPATH=$PWD .venv/bin/python -m bench.bench_router_upkeep [--agents 1000 10000] [--seconds 30]

For each size: a redis-server of its own, the ``bench.bench_reconcile`` spec applied with
``swarm bus apply`` (every agent's outbox, inbox and Redis user), then ``swarm bus
route`` (the trusted router, alone in its process) with no traffic at all. After a 10 s
warm-up (the first load and group creation), the CPU time of the router process and of
redis-server over ``--seconds`` is read from ``/proc`` and printed as a share of one core.
Nothing is routed: this is the fleet-size-bound part of the router's cost, which the
registry's process (where the router runs by default) pays beside its requests.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench.bench_reconcile import SECRET, swarm_yaml, write_agents
from tests.support.services import RedisServer, python_cmd

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def measure(agents: int, seconds: float) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="bench-upkeep-") as tmp:
        root = Path(tmp)
        rs = RedisServer(root / "redis", appendonly=False).start()
        env = {**os.environ, "SWARM_BUS_SECRET": SECRET}
        try:
            spec = root / "specs"
            spec.mkdir()
            (spec / "swarm.yaml").write_text(swarm_yaml(list(range(30)), False, rs.url, "http://127.0.0.1:9"))
            write_agents(spec, agents)
            subprocess.run(python_cmd("-m", "swarm", "bus", "apply", "--spec", str(spec), "--redis-url", rs.url),
                           env=env, cwd=root, check=True, capture_output=True)
            log = open(root / "router.log", "wb")
            router = subprocess.Popen(python_cmd("-m", "swarm", "bus", "route", "--spec", str(spec),
                                                 "--redis-url", rs.url, "--log-level", "warning"),
                                      env=env, cwd=root, stdout=log, stderr=log)
            try:
                time.sleep(10.0)
                assert router.poll() is None, (root / "router.log").read_text()
                r0, s0 = cpu_seconds(router.pid), cpu_seconds(rs.proc.pid)
                time.sleep(seconds)
                r1, s1 = cpu_seconds(router.pid), cpu_seconds(rs.proc.pid)
            finally:
                router.terminate()
                router.wait(timeout=30)
                log.close()
        finally:
            rs.stop()
    return (r1 - r0) / seconds, (s1 - s0) / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    print(f"idle router, {args.seconds:.0f} s after a 10 s warm-up: CPU share of one core")
    print("| agents | router process | redis-server |")
    for n in args.agents:
        router, redis = measure(n, args.seconds)
        print(f"| {n:,} | {router * 100:.1f} % | {redis * 100:.1f} % |")


if __name__ == "__main__":
    main()
