"""What ``swarm up --demo`` adds to every pass: the fingerprints of the agents it runs.

After each synced pass ``up`` fingerprints every demo agent's compiled folder
(:meth:`swarm.reconcile.up_agents.AgentLaunch.fingerprint`) to see which changed,
on the event loop's thread. Measured against a floor taken in the same run: reading
the same files with plain ``open().read()`` (what any change detection by content
must do at least).

    .venv/bin/python bench/bench_up_agents.py --agents 1000 --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_compile import generate_spec  # noqa: E402
from swarm.compiler import compile_loaded, write_output  # noqa: E402
from swarm.reconcile.up import demo_launches  # noqa: E402
from swarm.spec.loader import load_spec_full  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_spec(root / "specs", args.agents, 200, 10)
        loaded = load_spec_full([root / "specs"], None)
        write_output(compile_loaded(loaded), root / "compiled", loaded.output_name)
        launches = demo_launches(loaded, root / "compiled")
        files = [p for launch in launches for p in sorted(launch.folder.rglob("*")) if p.is_file()]
        floors, runs = [], []
        for _ in range(args.repeat):
            start = time.perf_counter()
            for path in files:
                path.read_bytes()
            floors.append(time.perf_counter() - start)
            start = time.perf_counter()
            for launch in launches:
                launch.fingerprint()
            runs.append(time.perf_counter() - start)
        floor, run = statistics.median(floors), statistics.median(runs)
        print(f"agents run by --demo: {len(launches)}, files: {len(files)}")
        print(f"floor: read every file      {floor * 1000:8.1f} ms")
        print(f"fingerprint every agent     {run * 1000:8.1f} ms")
        print(f"ratio fingerprint / floor   {run / floor:8.2f}x")


if __name__ == "__main__":
    main()
