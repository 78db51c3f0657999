"""Benchmark: Redis memory per registered agent (target <= 2 KB).

Run from the repository root::

    .venv/bin/python -m bench.bench_memory [--agents 1000]

Starts a fresh redis-server and a registry, pushes a catalog declaring
``--agents`` agents, registers each through HTTP (as a generated agent does: id,
host, port, ttl; the rest filled from the catalog), then measures with
``MEMORY USAGE key SAMPLES 0`` (exact, every element counted):

* the agent's own hash ``swarm:{N}:agent:<id>`` (every agent, then min/median/max);
* its share of the lease zset ``swarm:{N}:leases`` (usage / agents);
* its share of the event stream ``swarm:{N}:events`` (usage / agents: one
  ``registered`` event each; the stream is capped, so this share shrinks as the
  fleet grows past the cap).

The per-agent figure is the median hash plus the two shares. As a cross-check it
also prints ``INFO memory used_memory`` growth per agent across the registrations
(which includes allocator and dict overhead the per-key figures do not), and the
baseline of one bare 1-field hash per agent measured in the same Redis, so the
ratio says what our layout costs over the smallest possible record.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

from bench.bench_registry import SWARM, agent_ids, push_catalog, register_all, registry_services

TARGET_BYTES = 2048


def used_memory(r: Any) -> int:
    return int(r.info("memory")["used_memory"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument(
        "--hash-max-listpack-value", type=int, default=None,
        help="CONFIG SET this before registering (Redis default 64: a longer value turns a hash into a hashtable)",
    )
    args = parser.parse_args(argv)
    ids = agent_ids(args.agents)
    from swarm.keys import SwarmKeys

    keys = SwarmKeys(SWARM)
    with registry_services() as services:
        r: Any = services.redis.client(decode_responses=True)
        if args.hash_max_listpack_value is not None:
            r.config_set("hash-max-listpack-value", args.hash_max_listpack_value)
        listpack_value = r.config_get("hash-max-listpack-value")["hash-max-listpack-value"]
        # the catalog is declared state shared by all agents: pushed before measuring
        asyncio.run(push_catalog(services.registry.url, ids, ttl_seconds=3600))
        events_before = int(r.memory_usage(keys.events, samples=0) or 0)
        before = used_memory(r)
        asyncio.run(register_all(services.registry.url, ids, ttl_seconds=3600))
        after = used_memory(r)
        per_hash = [int(r.memory_usage(keys.agent(a), samples=0)) for a in ids]
        leases = int(r.memory_usage(keys.leases, samples=0))
        events = int(r.memory_usage(keys.events, samples=0)) - events_before
        n_events = int(r.xlen(keys.events))
        catalog = int(r.memory_usage(keys.catalog, samples=0) or 0)
        sample = r.hgetall(keys.agent(ids[0]))
        encoding = r.object("encoding", keys.agent(ids[0]))

        # baseline: the smallest record that could hold "agent is registered"
        base_before = used_memory(r)
        pipe = r.pipeline(transaction=False)
        for a in ids:
            pipe.hset(f"bench:bare:{a}", "doc", "1")
        pipe.execute()
        bare = statistics.median(int(r.memory_usage(f"bench:bare:{a}", samples=0)) for a in ids)
        base_growth = (used_memory(r) - base_before) / len(ids)

    median_hash = statistics.median(per_hash)
    per_agent = median_hash + leases / len(ids) + events / len(ids)
    print(f"{len(ids)} agents registered; MEMORY USAGE ... SAMPLES 0; hash-max-listpack-value {listpack_value}")
    print(f"  agent hash        min {min(per_hash)}  median {median_hash:.0f}  max {max(per_hash)} bytes")
    print(f"  hash fields       {sorted(sample)} (doc {len(sample.get('doc', ''))} bytes of JSON)")
    print(f"  hash encoding     {encoding}; longest value {max(len(v) for v in sample.values())} bytes")
    print(f"  leases zset       {leases} bytes total = {leases / len(ids):.1f} per agent")
    print(f"  events stream     {events} bytes grown ({n_events} events in the stream) = {events / len(ids):.1f} per agent")
    print(f"  catalog (shared)  {catalog} bytes = {catalog / len(ids):.1f} per agent (declared state, not counted)")
    print(f"  PER AGENT         {per_agent:.0f} bytes (target <= {TARGET_BYTES})")
    print(f"  used_memory growth per agent {(after - before) / len(ids):.0f} bytes (cross-check)")
    print(f"  baseline 1-field hash: {bare:.0f} bytes (used_memory growth {base_growth:.0f})")
    print(f"  ratio per-agent / baseline = {per_agent / bare:.2f}; ratio to target = {per_agent / TARGET_BYTES:.2f}")
    return 0 if per_agent <= TARGET_BYTES else 1


if __name__ == "__main__":
    raise SystemExit(main())
