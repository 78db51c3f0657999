"""Benchmark of ``swarm compile`` on a 1,000-agent spec (200 topics, 10 roles).

Not part of the test run. In one process it measures

* **full**: ``compile_spec`` into an empty directory (load + check + render + write);
* **no-op**: ``compile_spec`` again into the same directory (must write 0 files);
  the stamp (:mod:`swarm.compiler.cache`) proves it current without rendering;
  also shown without the stamp (load + render + compare with disk);
* **floor**: ``yaml.safe_load_all`` of the same spec text plus writing the same
  output bytes with plain ``open``/``write`` (no checks, no rendering, no atomicity);
  also a stricter floor with libyaml's ``CSafeLoader`` (the loader uses libyaml too);

and prints the ratios against the floor measured in the same run, with a
breakdown of the full compile (load / render / write) for profiling. Targets:
full ≤ 3× floor; no-op ≤ 0.5× full and 0 files written.

Usage::

    .venv/bin/python bench/bench_compile.py [--agents 1000] [--topics 200] [--roles 10] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from swarm.compiler import compile_loaded, compile_spec, compile_to
from swarm.compiler.output import write_output
from swarm.spec.loader import load_spec_full

GROUPS_PER_ROLE = 2
AGENTS_PER_FILE = 100


def generate_spec(directory: Path, agents: int, topics: int, roles: int) -> None:
    """Swarm document in swarm.yaml; agents as ``kind: Agent`` documents, 100 per file."""
    groups = roles * GROUPS_PER_ROLE
    per_group = max(1, topics // groups)
    topic_names = [f"g{g}.s{s}.data" for g in range(groups) for s in range(per_group)]
    role_docs: dict[str, Any] = {}
    for r in range(roles):
        nxt = (r + 1) % roles
        role_docs[f"r{r}"] = {
            "description": f"role {r}",
            "publish": [f"g{r}.>", f"g{r + roles}.>"],
            "subscribe": [f"g{nxt}.*.data", f"g{nxt + roles}.>"],
            "deny": {"publish": [f"g{r}.s{per_group - 1}.>"]},
        }
    swarm = {
        "apiVersion": "swarm/v1",
        "kind": "Swarm",
        "metadata": {"name": "bench", "description": "generated benchmark swarm"},
        "registry": {"url": "http://127.0.0.1:8700", "ttl_seconds": 30, "heartbeat_interval": 10},
        "bus": {"redis_url": "redis://127.0.0.1:6379/0", "dedup_window_seconds": 300},
        "topics": [{"name": t, "max_len": 10000} for t in topic_names],
        "roles": role_docs,
    }
    directory.mkdir(parents=True)
    (directory / "swarm.yaml").write_text(yaml.safe_dump(swarm, sort_keys=False))
    docs: list[dict[str, Any]] = []
    for n in range(agents):
        r = n % roles
        nxt = (r + 1) % roles
        s = n % max(1, per_group - 1)  # never the denied last sub-group
        docs.append(
            {
                "apiVersion": "swarm/v1",
                "kind": "Agent",
                "id": f"agent-{n:04d}",
                "name": f"Agent {n}",
                "version": "1.0.0",
                "role": f"r{r}",
                "port": 10000 + n,
                "capabilities": [f"cap-{n % 7}", "bench"],
                "publishes": [f"g{r}.s{s}.data", f"g{r + roles}.s{s}.data"],
                "subscribes": [f"g{nxt}.s{s}.data", f"g{nxt + roles}.s{(s + 1) % per_group}.data"],
                "registry": n % 5 != 0,
            }
        )
    for start in range(0, agents, AGENTS_PER_FILE):
        chunk = docs[start : start + AGENTS_PER_FILE]
        (directory / f"agents-{start // AGENTS_PER_FILE:03d}.yaml").write_text(
            yaml.safe_dump_all(chunk, sort_keys=False)
        )


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def floor_once(spec_dir: Path, files: dict[str, bytes], out: Path, loader: Any = yaml.SafeLoader) -> None:
    for path in sorted(spec_dir.glob("*.yaml")):
        list(yaml.load_all(path.read_text(), Loader=loader))
    for rel, data in files.items():
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as fh:
            fh.write(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--topics", type=int, default=200)
    parser.add_argument("--roles", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="swarm-bench-") as tmp:
        root = Path(tmp)
        os.environ["SWARM_CACHE_DIR"] = str(root / "stamps")  # the no-op stamp, kept out of ~/.cache
        spec_dir = root / "spec"
        generate_spec(spec_dir, args.agents, args.topics, args.roles)
        spec_bytes = sum(p.stat().st_size for p in spec_dir.glob("*.yaml"))

        # warm-up: imports, template compilation, page cache
        files = compile_loaded(load_spec_full(spec_dir))
        floor_once(spec_dir, files, root / "warm-floor")
        compile_spec(spec_dir, root / "warm-full")

        full, noop, noop_render, floor, floor_c, load, render, write = [], [], [], [], [], [], [], []
        written_noop: set[int] = set()
        for i in range(args.repeat):
            out = root / f"full{i}"
            full.append(timed(lambda: compile_spec(spec_dir, out))[0])
            t, report = timed(lambda: compile_spec(spec_dir, out))
            noop.append(t)
            written_noop.add(len(report.written) + len(report.removed))
            t, result = timed(lambda: compile_to(spec_dir, out, use_stamp=False))
            noop_render.append(t)
            written_noop.add(len(result.report.written) + len(result.report.removed))
            floor.append(timed(lambda: floor_once(spec_dir, files, root / f"floor{i}"))[0])
            shutil.rmtree(root / f"floor{i}")
            floor_c.append(timed(lambda: floor_once(spec_dir, files, root / f"floor{i}", yaml.CSafeLoader))[0])
            # breakdown of a full compile
            t_load, loaded = timed(lambda: load_spec_full(spec_dir))
            t_render, rendered = timed(lambda: compile_loaded(loaded))
            t_write, _ = timed(lambda: write_output(rendered, root / f"parts{i}", loaded.spec.name))
            load.append(t_load)
            render.append(t_render)
            write.append(t_write)
            for d in (out, root / f"floor{i}", root / f"parts{i}"):
                shutil.rmtree(d)

    med = statistics.median
    print(
        f"spec: {args.agents} agents, {args.topics} topics, {args.roles} roles, "
        f"{spec_bytes / 1024:.0f} KiB YAML; output: {len(files)} files, "
        f"{sum(map(len, files.values())) / 1024 / 1024:.1f} MiB; median of {args.repeat} runs"
    )
    print(f"floor  (safe_load + plain writes)   {med(floor) * 1000:8.1f} ms")
    print(
        f"floor' (libyaml CSafeLoader + plain writes) {med(floor_c) * 1000:6.1f} ms   "
        f"full is {med(full) / med(floor_c):5.2f}x this stricter floor"
    )
    print(f"full   compile into empty dir       {med(full) * 1000:8.1f} ms   {med(full) / med(floor):5.2f}x floor (target <= 3)")
    print(f"  load+check {med(load) * 1000:.1f} ms, render {med(render) * 1000:.1f} ms, write {med(write) * 1000:.1f} ms")
    print(
        f"no-op  recompile                    {med(noop) * 1000:8.1f} ms   {med(noop) / med(full):5.2f}x full  "
        f"(target <= 0.5); files written: {sorted(written_noop)}"
    )
    print(
        f"no-op  without the stamp (render+compare) {med(noop_render) * 1000:6.1f} ms   "
        f"{med(noop_render) / med(full):5.2f}x full"
    )


if __name__ == "__main__":
    main()
