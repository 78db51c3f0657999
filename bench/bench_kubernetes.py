"""Benchmark of the kubernetes target's rendering on a 1,000-agent spec, against the compose
target's, in one process (not part of the test run).

The spec is ``bench_compile``'s (1,000 agents, 200 topics, 10 roles). For each target set
it renders the whole output in memory (:func:`swarm.compiler.render.render`: agents'
files, desired state, targets, manifest; no disk) and reports the median, the time the
target adds over rendering with no target, and the size of the largest kubernetes file
(the ``<swarm>-desired`` ConfigMap must stay under Kubernetes' 1 MiB object limit).

Usage::

    .venv/bin/python bench/bench_kubernetes.py [--agents 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_compile import generate_spec  # noqa: E402

from swarm import __version__  # noqa: E402
from swarm.compiler.render import render  # noqa: E402
from swarm.spec.loader import load_spec_full  # noqa: E402
from swarm.spec.models import CompileSettings, Spec  # noqa: E402


def with_targets(spec: Spec, targets: list[str]) -> Spec:
    swarm = spec.swarm.model_copy(update={"compile": CompileSettings.model_validate({"targets": targets})})
    return spec.model_copy(update={"swarm": swarm})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--topics", type=int, default=200)
    parser.add_argument("--roles", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "spec"
        generate_spec(directory, args.agents, args.topics, args.roles)
        loaded = load_spec_full(directory)
    results: dict[str, float] = {}
    sizes: dict[str, int] = {}
    for label, targets in (("none", []), ("compose", ["compose"]), ("kubernetes", ["kubernetes"]),
                           ("compose+kubernetes", ["compose", "kubernetes"])):
        spec = with_targets(loaded.spec, targets)
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            files = render(spec, loaded.digest, swarm_version=__version__)
            times.append(time.perf_counter() - start)
        results[label] = statistics.median(times) * 1000
        kube = {p: len(d) for p, d in files.items() if "/kubernetes/" in p}
        if kube:
            sizes = kube
    base = results["none"]
    print(f"{args.agents} agents, median of {args.repeat} in-memory renders")
    for label, ms in results.items():
        print(f"  {label:20s} {ms:8.0f} ms   target adds {ms - base:7.0f} ms")
    added_compose = results["compose"] - base
    added_kube = results["kubernetes"] - base
    print(f"  kubernetes added / compose added: {added_kube / added_compose:.2f}x")
    largest = max(sizes, key=lambda p: sizes[p])
    print(f"  kubernetes files: {len(sizes)}, {sum(sizes.values()) / 1024:.0f} KiB; largest {largest} "
          f"{sizes[largest] / 1024:.0f} KiB (ConfigMap limit 1024 KiB)")


if __name__ == "__main__":
    main()
