"""Benchmark: loading a large spec (parse + positions + validation + checks).

Run from the repository root::

    .venv/bin/python -m bench.bench_spec_load [--agents 1000] [--topics 200] [--roles 10] [--repeat 5]

Generates a spec like the compile benchmark's (1,000 agents in Agent documents
spread over 20 files, 200 topics, 10 roles with wildcard and deny rules) and
measures, in the same run, best of ``--repeat``:

* the floor: ``yaml.safe_load_all`` of the same bytes (C loader when available,
  and the pure-Python SafeLoader our loader composes with);
* ``parse_spec_texts`` (compose, source map, pydantic per document, semantic checks).

Prints the ratios. The compile target (full compile <= 3x the floor) leaves
this stage most of that budget, so the ratio against the pure-Python floor is
the figure to watch.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import yaml

from swarm.spec.loader import parse_spec_texts


def generate(agents: int, topics: int, roles: int, files: int = 20) -> dict[str, bytes]:
    topic_names = [f"area{t % 20}.topic{t}" for t in range(topics)]
    lines = [
        "apiVersion: swarm/v1",
        "kind: Swarm",
        "metadata:",
        "  name: bench",
        "topics:",
    ]
    lines += [f"  - name: {t}\n    max_len: 1000" for t in topic_names]
    lines.append("roles:")
    for r in range(roles):
        lines += [
            f"  role{r}:",
            '    publish: ["*.>"]' if r % 2 == 0 else f'    publish: ["area{r}.*"]',
            '    subscribe: [">"]',
            "    deny:",
            '      publish: ["area19.admin.>"]',
        ]
    out = {"specs/swarm.yaml": ("\n".join(lines) + "\n").encode()}
    per_file = (agents + files - 1) // files
    for f in range(files):
        docs = []
        for i in range(f * per_file, min(agents, (f + 1) * per_file)):
            r = i % roles
            pub = topic_names[(r * 7 + i) % topics] if r % 2 == 0 else f"area{r}.topic{r}"
            docs.append(
                "apiVersion: swarm/v1\nkind: Agent\n"
                f"id: agent-{i}\nname: Agent {i}\nversion: 1.0.{i}\nrole: role{r}\n"
                f"port: {10000 + i}\ncapabilities: [cap{i % 5}, research]\n"
                f"publishes: [{pub}]\nsubscribes: [{topic_names[i % topics]}, {topic_names[(i + 1) % topics]}]\n"
            )
        out[f"specs/agents/part{f:02d}.yaml"] = "---\n".join(docs).encode()
    return out


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--topics", type=int, default=200)
    parser.add_argument("--roles", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    files = generate(args.agents, args.topics, args.roles)
    loaded = parse_spec_texts(files)
    assert len(loaded.spec.agents) == args.agents

    def floor(loader: type) -> Callable[[], object]:
        return lambda: [list(yaml.load_all(b, Loader=loader)) for b in files.values()]

    c_loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    t_c = best(floor(c_loader), args.repeat)
    t_py = best(floor(yaml.SafeLoader), args.repeat)
    t_load = best(lambda: parse_spec_texts(files), args.repeat)
    size = sum(len(b) for b in files.values())
    print(f"spec: {args.agents} agents, {args.topics} topics, {args.roles} roles, {len(files)} files, {size} bytes")
    print(f"floor yaml.safe_load (C loader {c_loader.__name__}): {t_c * 1000:8.1f} ms")
    print(f"floor yaml.safe_load (pure Python SafeLoader):  {t_py * 1000:8.1f} ms")
    print(f"parse_spec_texts:                                {t_load * 1000:8.1f} ms")
    print(f"ratio load / pure-Python floor: {t_load / t_py:.2f}x")
    print(f"ratio load / C floor:           {t_load / t_c:.2f}x")


if __name__ == "__main__":
    main()
