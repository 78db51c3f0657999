"""Benchmark: CLI start-up (issue 12), wall time of a whole ``python -m swarm`` process.

Run from the repository root::

    .venv/bin/python -m bench.bench_cli_startup [--runs 21]

Measures in the same run, median of ``--runs`` (interleaved, so load drifts hit all alike):

* the floor: ``python -c pass`` (the same interpreter and site, so the venv's path hooks count once);
* ``swarm --version``, ``swarm token architect --spec specs`` (SWARM_REGISTRY_SECRET set) and
  ``swarm validate specs/``.

Prints each median and its ratio to the floor (target: ``swarm token`` <= 5x).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS: dict[str, list[str]] = {
    "python -c pass": ["-c", "pass"],
    "swarm --version": ["-m", "swarm", "--version"],
    "swarm token architect": ["-m", "swarm", "token", "architect", "--spec", "specs"],
    "swarm validate specs/": ["-m", "swarm", "validate", "specs/"],
}


def _once(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    # An installed package has its bytecode compiled (pip writes __pycache__); a shell with
    # PYTHONDONTWRITEBYTECODE set would make every run recompile swarm's sources instead.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["SWARM_REGISTRY_SECRET"] = "bench-secret"
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for argv in COMMANDS.values():  # warm the page cache, __pycache__ and the spec index once
        _once(argv, env)
    for _ in range(args.runs):
        for name, argv in COMMANDS.items():
            times[name].append(_once(argv, env))
    floor = statistics.median(times["python -c pass"])
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:28s} {median * 1000:7.1f} ms  {median / floor:5.1f}x")


if __name__ == "__main__":
    main()
