"""Benchmark: SSE fan-out latency, registration -> each of 100 watchers (p99 <= 50 ms).

Run from the repository root::

    .venv/bin/python -m bench.bench_sse [--watchers 100] [--registrations 100] [--gap-ms 50]

A fresh redis-server and one registry process are started. A *separate* watcher
process (so the watchers' parsing does not share a loop with the registering
client; raw asyncio streams, lighter than an HTTP client library) opens ``--watchers`` connections to ``GET /agents/watch`` and writes
the wall-clock arrival time of every ``registered`` event. This process then
registers ``--registrations`` agents one at a time, ``--gap-ms`` apart, noting
the wall-clock time just before each POST. Latency = arrival - send, so it
includes the registration itself (Lua script + XADD), the registry's single
stream reader, the fan-out and SSE framing: what a watcher experiences.

Baseline, measured in the same run against the same Redis: the floor of the
technique, ``--watchers`` redis-py connections blocked in ``XREAD BLOCK`` on a
bare stream and one ``XADD`` per "registration". The printed ratio says what
the registry (HTTP, auth, admission, SSE) adds on top.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.bench_registry import agent_ids, agent_token, push_catalog, read_token, registry_services

TARGET_P99_MS = 50.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


# -- watcher process ----------------------------------------------------------------------


async def watch_all(url: str, watchers: int, expected: int, out: Path, ready: Path) -> None:
    """Hold ``watchers`` SSE connections; note when each ``registered`` event arrives.

    Raw asyncio streams, not httpx: one process parses 100 streams, and a heavier
    client would add its own queueing to every latency it reports.
    """
    host, port = url.removeprefix("http://").split(":")
    arrivals: list[list[Any]] = []
    connected = 0
    done = asyncio.Event()

    token = read_token()

    async def one(index: int) -> None:
        nonlocal connected
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"GET /agents/watch HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n"
            f"Authorization: Bearer {token}\r\n\r\n".encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"watch refused: {head!r}")
        connected += 1
        if connected == watchers:
            ready.write_text("ready")
        event = b""
        try:
            while True:
                line = (await reader.readline()).rstrip(b"\r\n")
                if not line and reader.at_eof():
                    return
                if line.startswith(b"event:"):
                    event = line[6:].strip()
                elif line.startswith(b"data:") and event == b"registered":
                    now = time.time()
                    arrivals.append([index, json.loads(line[5:]).get("agent_id"), now])
                    event = b""
                    if len(arrivals) >= expected:
                        done.set()
        finally:
            writer.close()

    tasks = [asyncio.create_task(one(i)) for i in range(watchers)]
    try:
        await asyncio.wait_for(done.wait(), timeout=120)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    out.write_text(json.dumps(arrivals))


# -- baseline: bare XADD -> XREAD BLOCK ----------------------------------------------------


async def bare_fanout(redis_url: str, watchers: int, rounds: int, gap: float) -> list[float]:
    import redis.asyncio as aredis

    from swarm.keys import as_text

    stream = "bench:bare:events"
    latencies: list[float] = []
    sent: dict[str, float] = {}
    readers = [aredis.Redis.from_url(redis_url, socket_timeout=None) for _ in range(watchers)]
    writer = aredis.Redis.from_url(redis_url)
    await writer.xadd(stream, {"x": "0"})
    start_id = as_text((await writer.xinfo_stream(stream))["last-generated-id"])

    async def read(r: Any) -> None:
        cursor = start_id
        seen = 0
        while seen < rounds:
            result = await r.xread({stream: cursor}, block=0)
            for _, entries in result:
                for entry_id, fields in entries:
                    now = time.time()
                    cursor = entry_id
                    seen += 1
                    latencies.append((now - sent[fields[b"n"].decode()]) * 1000)

    tasks = [asyncio.create_task(read(r)) for r in readers]
    await asyncio.sleep(0.5)
    for i in range(rounds):
        sent[str(i)] = time.time()
        await writer.xadd(stream, {"n": str(i)})
        await asyncio.sleep(gap)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    for r in [*readers, writer]:
        await r.aclose()
    return latencies


# -- driver ----------------------------------------------------------------------------------


async def register_spaced(url: str, ids: list[str], gap: float) -> dict[str, float]:
    sent: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        for agent_id in ids:
            sent[agent_id] = time.time()
            r = await http.post(
                "/agents/register",
                json={"agent_id": agent_id, "host": "127.0.0.1", "port": 8000},
                headers={"Authorization": f"Bearer {agent_token(agent_id)}"},
            )
            if r.status_code not in (200, 201):
                raise RuntimeError(f"register {agent_id}: {r.status_code} {r.text}")
            await asyncio.sleep(gap)
    return sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--registrations", type=int, default=100)
    parser.add_argument("--gap-ms", type=float, default=50.0)
    parser.add_argument("--watcher-process", nargs=4, metavar=("URL", "EXPECTED", "OUT", "READY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.watcher_process:
        url, expected, out, ready = args.watcher_process
        asyncio.run(watch_all(url, args.watchers, int(expected), Path(out), Path(ready)))
        return 0

    ids = agent_ids(args.registrations)
    gap = args.gap_ms / 1000
    with registry_services() as services:
        url = services.registry.url
        asyncio.run(push_catalog(url, ids, ttl_seconds=3600))
        out, ready = services.workdir / "arrivals.json", services.workdir / "ready"
        expected = args.watchers * len(ids)
        watcher = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_sse", "--watchers", str(args.watchers),
             "--watcher-process", url, str(expected), str(out), str(ready)],
        )
        deadline = time.monotonic() + 30
        while not ready.exists():
            if watcher.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("watchers did not connect")
            time.sleep(0.05)
        time.sleep(1.0)  # every watcher's subscription is live before the first registration
        sent = asyncio.run(register_spaced(url, ids, gap))
        watcher.wait(timeout=120)
        arrivals = json.loads(out.read_text())
        baseline = asyncio.run(bare_fanout(services.redis.url, args.watchers, len(ids), gap))

    latencies = [(t - sent[agent]) * 1000 for _, agent, t in arrivals if agent in sent]
    per_watcher = {w for w, _, _ in arrivals}
    p50, p99, worst = percentile(latencies, 50), percentile(latencies, 99), max(latencies)
    b50, b99 = percentile(baseline, 50), percentile(baseline, 99)
    print(f"{args.watchers} watchers x {len(ids)} registrations, {args.gap_ms:.0f} ms apart")
    print(f"  delivered {len(latencies)}/{expected} events to {len(per_watcher)} watchers")
    print(f"  registry SSE   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   max {worst:6.2f} ms (target p99 <= {TARGET_P99_MS:.0f})")
    print(f"  bare XREAD     p50 {b50:6.2f} ms   p99 {b99:6.2f} ms   ({len(baseline)} deliveries)")
    print(f"  ratio p99 registry/bare = {p99 / b99:.2f}; ratio p99 / target = {p99 / TARGET_P99_MS:.2f}")
    return 0 if p99 <= TARGET_P99_MS and len(latencies) == expected else 1


if __name__ == "__main__":
    raise SystemExit(main())
