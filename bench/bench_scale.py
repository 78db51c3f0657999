"""Benchmark: how the registry's costs grow from 100 to 1,000 to 10,000 registered agents.

Run from the repository root::

    .venv/bin/python -m bench.bench_scale [--sizes 100 1000 10000] [--watchers 100]

For each size, in a fresh redis-server and registry process (auth on): pushes a catalog
declaring the agents, registers them all, then measures

* ``GET /agents`` (the whole list, streamed in batches): wall time and body size, median of 5;
* the watch snapshot: ``GET /agents/watch`` with a ``Last-Event-ID`` the stream never
  produced, which answers ``event: reset`` carrying every agent: time to the end of that
  frame, median of 3;
* the registry's RSS (``/proc/<pid>/status`` VmRSS) idle after the registrations, and with
  ``--watchers`` SSE watchers connected (each holding its stream open);
* Redis ``used_memory`` growth per registered agent.

Targets (issue 12): RSS with 10,000 agents and 100 watchers ≤ 150 MB; ≤ 2 KB of Redis per agent.
Never part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import httpx

from bench.bench_registry import SWARM, agent_ids, push_catalog, read_token, register_all, registry_services


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def time_list(url: str, headers: dict[str, str]) -> tuple[float, int, int]:
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as http:
        times, size, count = [], 0, 0
        for _ in range(5):
            t0 = time.perf_counter()
            r = await http.get("/agents")
            times.append(time.perf_counter() - t0)
            size, count = len(r.content), r.json()["count"]
        return statistics.median(times), size, count


async def time_snapshot(url: str, headers: dict[str, str], expected: int) -> tuple[float, float]:
    """(time to the end of the reset frame, time to its first byte), medians of 3."""
    times, firsts = [], []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as http:
        for _ in range(3):
            t0 = time.perf_counter()
            async with http.stream("GET", "/agents/watch", headers={"Last-Event-ID": "9999999999999-0"}) as r:
                buf = b""
                async for chunk in r.aiter_bytes():
                    if not buf:
                        firsts.append(time.perf_counter() - t0)
                    buf += chunk
                    if b"event: reset" in buf and (b"\n\n" in buf.split(b"event: reset", 1)[1]
                                                   or b"\r\n\r\n" in buf.split(b"event: reset", 1)[1]):
                        break
            times.append(time.perf_counter() - t0)
            assert buf.count(b'"agent_id"') >= expected, "the snapshot did not carry every agent"
    return statistics.median(times), statistics.median(firsts)


async def hold_watchers(url: str, headers: dict[str, str], n: int, pid: int) -> float:
    clients = [httpx.AsyncClient(base_url=url, headers=headers, timeout=None) for _ in range(n)]
    streams = [c.stream("GET", "/agents/watch") for c in clients]
    opened = [await s.__aenter__() for s in streams]
    assert all(r.status_code == 200 for r in opened)
    await asyncio.sleep(1.0)
    rss = rss_mb(pid)
    for s in streams:
        await s.__aexit__(None, None, None)
    for c in clients:
        await c.aclose()
    return rss


def measure(size: int, watchers: int) -> dict[str, Any]:
    ids = agent_ids(size)
    with registry_services() as services:
        r: Any = services.redis.client(decode_responses=True)
        url = services.registry.url
        pid = services.registry.proc.pid  # type: ignore[union-attr]
        asyncio.run(push_catalog(url, ids, ttl_seconds=3600))
        before = int(r.info("memory")["used_memory"])
        asyncio.run(register_all(url, ids, ttl_seconds=3600))
        per_agent = (int(r.info("memory")["used_memory"]) - before) / size
        headers = {"Authorization": f"Bearer {read_token()}"}
        listed, body, count = asyncio.run(time_list(url, headers))
        assert count == size
        snapshot, first_byte = asyncio.run(time_snapshot(url, headers, size))
        idle = rss_mb(pid)
        with_watchers = asyncio.run(hold_watchers(url, headers, watchers, pid))
        r.close()
    return {"agents": size, "list_ms": listed * 1000, "list_bytes": body, "snapshot_ms": snapshot * 1000,
            "snapshot_first_ms": first_byte * 1000,
            "rss_idle_mb": idle, "rss_watchers_mb": with_watchers, "redis_bytes_per_agent": per_agent}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--watchers", type=int, default=100)
    args = parser.parse_args(argv)
    print(f"swarm {SWARM}: GET /agents and watch snapshot (medians), registry RSS, Redis bytes per agent")
    print("| agents | GET /agents | body | watch snapshot (first byte) | RSS idle | RSS + %d watchers | Redis bytes/agent |"
          % args.watchers)
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        m = measure(size, args.watchers)
        print(f"| {m['agents']:,} | {m['list_ms']:.1f} ms | {m['list_bytes'] / 1024:.0f} KiB | {m['snapshot_ms']:.1f} ms ({m['snapshot_first_ms']:.1f} ms) "
              f"| {m['rss_idle_mb']:.1f} MB | {m['rss_watchers_mb']:.1f} MB | {m['redis_bytes_per_agent']:.0f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
