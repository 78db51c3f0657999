"""Benchmark: the pure stages of one save of ``swarm reconcile --watch``, in process (no I/O).

Run from the repository root::

    PYTHONPATH=$PWD .venv/bin/python -m bench.bench_save_stages [--agents 1000] [--rounds 9]

Builds the spec of ``bench.bench_reconcile`` (``--agents`` agents in 10 files, 70 topics,
roles ``worker`` and ``planner``) in memory, loads it once with the daemon's caches (the
document cache of the loader, the desired-state memo, the texts of catalog, bus.json and
acl.json; between passes the heap is collected and frozen, as the daemon does), then makes ``--rounds`` edits of each kind as the reconcile bench does and times
each stage of the pass that follows, as the daemon runs them:

* ``parse``: ``parse_spec_texts`` with the document cache (only the changed file is parsed;
  the cross-file checks and the source map still see every document);
* ``desired``: ``desired_from_spec`` with its memo (the last build patched);
* ``delta``: ``desired_delta`` against the last applied state;
* ``plan``: ``incremental_plan`` of that delta;
* ``text``: the catalog digest (``CatalogText``) and the bus.json / acl.json texts
  (``AgentsDocumentText``).

Prints the median of each stage per edit kind, in milliseconds.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Callable

from bench.bench_reconcile import SPARE, agent_doc, swarm_yaml
from swarm.desired import AgentsDocumentText, CatalogText, DesiredMemo, DesiredState, desired_from_spec
from swarm.reconcile.delta import desired_delta, incremental_plan
from swarm.spec.loader import DocumentCache, parse_spec_texts

REDIS, REGISTRY = "redis://127.0.0.1:1/0", "http://127.0.0.1:1"
STAGES = ("parse", "desired", "delta", "plan", "text")


class Pass:
    """What the daemon keeps between passes, and one pass over ``files``."""

    def __init__(self) -> None:
        self.cache, self.memo = DocumentCache(), DesiredMemo()
        self.catalog, self.bus, self.acl = CatalogText(), AgentsDocumentText(), AgentsDocumentText()
        self.last: DesiredState | None = None

    def run(self, files: dict[str, bytes]) -> dict[str, float]:
        times: dict[str, float] = {}

        def timed(stage: str, step: Callable[[], object]) -> object:
            t0 = time.perf_counter()
            out = step()
            times[stage] = (time.perf_counter() - t0) * 1000
            return out

        loaded = timed("parse", lambda: parse_spec_texts(files, None, cache=self.cache))
        desired = timed("desired", lambda: desired_from_spec(loaded.spec, loaded.digest, self.memo))  # type: ignore[attr-defined]
        assert isinstance(desired, DesiredState)
        last = self.last
        if last is not None:
            d = timed("delta", lambda: desired_delta(last, desired, self.memo.changed_since(last, desired)))
            timed("plan", lambda: incremental_plan(last, desired, d, prune=True,  # type: ignore[arg-type]
                                                   users_managed=True, retired=frozenset()))
        timed("text", lambda: (self.catalog.digest(desired.registry), self.bus.text(desired.bus),
                               self.acl.text(desired.acl)))
        self.last = desired
        gc.collect()  # between passes, as the daemon's heap settle: the pass's collector work is its own
        gc.freeze()
        return times


def spec_files(agents: int, spare: list[int], worker_extra: bool, planner_extra: bool) -> dict[str, bytes]:
    files = {"specs/swarm.yaml": swarm_yaml(spare, worker_extra, REDIS, REGISTRY, planner_extra).encode()}
    for f in range(10):
        docs = [agent_doc(i) for i in range(agents) if i % 10 == f]
        files[f"specs/agents/group{f}.yaml"] = "---\n".join(docs).encode()
    return files


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()

    spare = list(range(SPARE))
    worker_extra = planner_extra = False
    files = spec_files(args.agents, spare, worker_extra, planner_extra)
    p = Pass()
    p.run(files)
    p.run(files)  # warm: every agent's text is kept from here on

    kinds = ("add agent", "acl rule", "role 10%", "remove topic")
    seen: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    next_agent = args.agents
    for n in range(args.rounds * len(kinds)):
        kind = kinds[n % len(kinds)]
        if kind == "add agent":
            files = {**files, f"specs/agents/new-{next_agent}.yaml": agent_doc(next_agent).encode()}
            next_agent += 1
        else:
            if kind == "acl rule":
                worker_extra = not worker_extra
            elif kind == "role 10%":
                planner_extra = not planner_extra
            else:
                spare.pop(0)
            files = {**files, "specs/swarm.yaml":
                     swarm_yaml(spare, worker_extra, REDIS, REGISTRY, planner_extra).encode()}
        seen[kind].append(p.run(files))

    print(f"pure stages of one save, {args.agents} agents, median of {args.rounds} edits each (ms)")
    print(f"| {'edit':12} | " + " | ".join(f"{s:>7}" for s in STAGES) + " |   total |")
    for kind, runs in seen.items():
        med = {s: statistics.median(r.get(s, 0.0) for r in runs) for s in STAGES}
        total = statistics.median(sum(r.values()) for r in runs)
        print(f"| {kind:12} | " + " | ".join(f"{med[s]:7.1f}" for s in STAGES) + f" | {total:7.1f} |")


if __name__ == "__main__":
    main()
