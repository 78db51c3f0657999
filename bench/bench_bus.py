"""Benchmark: the agent's side of the mediated bus against raw redis-py, in one run.

Run from the repository root::

    .venv/bin/python -m bench.bench_bus [--messages 5000] [--batches 100] [--latency 1000] [--pairs 20]
                                        [--latency-rounds 10]

A fresh redis-server (no persistence, so both sides pay the same) gets a small
swarm's bus installed with ``apply_bus``. Measured in ``--pairs`` paired chunks (agent
and raw back to back, alternating which goes first, so both sides of a pair see the
same load on a shared machine); the median paired ratio is reported with its range:

1. sequential ``EventBus.publish`` (declared topic, the agent's rights, JSON, size and
   message id checked in process, the breaker from its cached read, then ONE XADD to
   the agent's outbox) vs a raw ``XADD`` of the same entry to the same outbox with the
   same client settings, built as a raw client builds it (``json.dumps`` of the payload
   each time, as the previous bus benchmark did). Target ratio >= 0.90. The figure
   against a pre-serialised entry (no JSON work at all on the raw side) is printed too.
2. ``publish_many`` in batches of 100 (one pipeline of XADDs) vs a redis-py pipeline of
   100 raw XADDs built the same way (informative; routed throughput is bench_router's).
3. publish -> handler latency through a real router process (``swarm bus route``,
   its own process like in production): one publisher and one subscriber
   (``EventBus.subscribe`` on the inbox, XREADGROUP BLOCK, ack each) in one process,
   one message every 2 ms; p50 and p99. Baseline: a raw XADD and a raw XREADGROUP
   BLOCK loop with XACK on one stream, same pacing. Run in ``--latency-rounds``
   alternating rounds. Target p99 <= 3x raw.

No router runs during 1 and 2 (the outbox is trimmed between chunks), so they measure
the agent side alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import redis.asyncio as aioredis

from swarm.bus.apply import apply_bus
from swarm.bus.bus import EventBus
from swarm.desired import DesiredState, desired_from_spec
from swarm.spec.models import Spec, SwarmDocument
from tests.support.router import RouterProcess
from tests.support.services import RedisServer

TOPIC = "tasks.bench"
OUTBOX = "swarm:{bench}:outbox:producer"
PAYLOAD = {"task": "summarise", "url": "https://example.org/paper.pdf", "priority": 3, "tags": ["a", "b"]}
BODY = json.dumps(PAYLOAD, separators=(",", ":"), ensure_ascii=False).encode()


def desired() -> DesiredState:
    doc = SwarmDocument.model_validate(
        {
            "apiVersion": "swarm/v1", "kind": "Swarm", "metadata": {"name": "bench"},
            "topics": [{"name": TOPIC, "max_len": 100000}],
            "roles": {"pub": {"publish": ["tasks.>"]}, "sub": {"subscribe": ["tasks.*"]}},
            "agents": [
                {"id": "producer", "role": "pub", "port": 1, "publishes": [TOPIC]},
                {"id": "consumer", "role": "sub", "port": 2, "subscribes": [TOPIC]},
            ],
        },
        strict=False,
    )
    return desired_from_spec(Spec(swarm=doc, agents=list(doc.agents)), "bench")


def raw_client(url: str, **kwargs: object) -> aioredis.Redis:
    """The client settings EventBus uses (bytes replies), so only the bus's own work differs."""
    return aioredis.Redis.from_url(url, decode_responses=False, socket_connect_timeout=2.0, **kwargs)  # type: ignore[arg-type]


async def seq_bus(bus: EventBus, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        await bus.publish(TOPIC, PAYLOAD)
    return n / (time.perf_counter() - t)


def raw_entry() -> dict[bytes, bytes]:
    return {b"topic": TOPIC.encode(), b"payload": json.dumps(PAYLOAD, separators=(",", ":")).encode()}


async def seq_raw(r: aioredis.Redis, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        await r.xadd(OUTBOX, raw_entry())
    return n / (time.perf_counter() - t)


async def seq_raw_preserialised(r: aioredis.Redis, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        await r.xadd(OUTBOX, {b"topic": TOPIC.encode(), b"payload": BODY})
    return n / (time.perf_counter() - t)


async def batch_bus(bus: EventBus, batches: int) -> float:
    t = time.perf_counter()
    for _ in range(batches):
        await bus.publish_many([(TOPIC, PAYLOAD)] * 100)
    return batches * 100 / (time.perf_counter() - t)


async def batch_raw(r: aioredis.Redis, batches: int) -> float:
    t = time.perf_counter()
    for _ in range(batches):
        async with r.pipeline(transaction=False) as pipe:
            for _ in range(100):
                pipe.xadd(OUTBOX, raw_entry())
            await pipe.execute()
    return batches * 100 / (time.perf_counter() - t)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def latency_bus(url: str, n: int) -> list[float]:
    sent: dict[str, float] = {}
    lat: list[float] = []
    async with EventBus(redis_url=url, swarm="bench", agent_id="producer") as pub, \
            EventBus(redis_url=url, swarm="bench", agent_id="consumer") as sub:
        done = asyncio.Event()

        async def consume() -> None:
            async for m in sub.subscribe():
                now = time.perf_counter()
                await m.ack()
                if m.message_id in sent:
                    lat.append((now - sent[m.message_id]) * 1000)
                    if len(lat) >= n:
                        done.set()
                        return

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.3)
        for _ in range(n):
            mid = uuid.uuid4().hex
            sent[mid] = time.perf_counter()
            await pub.publish(TOPIC, PAYLOAD, message_id=mid)
            await asyncio.sleep(0.002)
        await asyncio.wait_for(done.wait(), 60)
        await task
    return lat


async def latency_raw(url: str, n: int, stream: str) -> list[float]:
    group = "g"
    pub = raw_client(url)
    sub = raw_client(url, socket_timeout=None)
    await pub.xgroup_create(stream, group, id="$", mkstream=True)
    sent: dict[bytes, float] = {}
    lat: list[float] = []
    done = asyncio.Event()

    async def consume() -> None:
        while len(lat) < n:
            reply = await sub.xreadgroup(group, "c", {stream: ">"}, count=32, block=2000)
            for _, entries in reply or []:
                for eid, fields in entries:
                    now = time.perf_counter()
                    await pub.xack(stream, group, eid)
                    lat.append((now - sent[fields[b"message_id"]]) * 1000)
        done.set()

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.3)
    for _ in range(n):
        mid = uuid.uuid4().hex.encode()
        sent[mid] = time.perf_counter()
        await pub.xadd(stream, {b"topic": TOPIC.encode(), b"payload": BODY, b"message_id": mid})
        await asyncio.sleep(0.002)
    await asyncio.wait_for(done.wait(), 60)
    await task
    await pub.aclose()
    await sub.aclose()
    return lat


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), appendonly=False).start()
        router: RouterProcess | None = None
        try:
            admin = aioredis.Redis.from_url(server.url, decode_responses=True)
            d = desired()
            await apply_bus(admin, d.bus, d.acl)
            raw = raw_client(server.url)
            bus = await EventBus(redis_url=server.url, swarm="bench", agent_id="producer").connect()
            await seq_bus(bus, 200)  # warm up: connections open, per-topic checks cached
            await seq_raw(raw, 200)
            seq: dict[str, list[float]] = {"bus": [], "raw": []}
            pre: dict[str, list[float]] = {"bus": [], "raw": []}
            many: dict[str, list[float]] = {"bus": [], "raw": []}
            chunk, bchunk = max(1, args.messages // args.pairs), max(1, args.batches // args.pairs)
            for i in range(args.pairs):
                sides = [("raw", lambda: seq_raw(raw, chunk)), ("bus", lambda: seq_bus(bus, chunk))]
                for name, fn in sides if i % 2 == 0 else reversed(sides):
                    seq[name].append(await fn())
                psides = [("raw", lambda: seq_raw_preserialised(raw, chunk)), ("bus", lambda: seq_bus(bus, chunk))]
                for name, fn in psides if i % 2 == 0 else reversed(psides):
                    pre[name].append(await fn())
                bsides = [("raw", lambda: batch_raw(raw, bchunk)), ("bus", lambda: batch_bus(bus, bchunk))]
                for name, fn in bsides if i % 2 == 0 else reversed(bsides):
                    many[name].append(await fn())
                await admin.xtrim(OUTBOX, maxlen=0)  # keep the outbox small (its router group stays)
            await bus.close()
            await raw.aclose()
            router = RouterProcess(redis_url=server.url, swarm="bench", log=Path(tmp) / "router.log",
                                   block_ms=1000, reclaim_idle_ms=5000).start()
            # Latency in alternating rounds too (the router idles during raw rounds), so both
            # sides see the same machine load; percentiles over all rounds of a side.
            lat_raw: list[float] = []
            lat_bus: list[float] = []
            per_round = max(1, args.latency // args.latency_rounds)
            for i in range(args.latency_rounds):
                lsides = [("raw", lambda: latency_raw(server.url, per_round, f"raw:latency:{i}")),
                          ("bus", lambda: latency_bus(server.url, per_round))]
                for name, fn in lsides if i % 2 == 0 else reversed(lsides):
                    (lat_raw if name == "raw" else lat_bus).extend(await fn())
            await admin.aclose()
        finally:
            if router is not None:
                router.stop()
            server.stop()

    def row(name: str, d: dict[str, list[float]], target: str) -> None:
        ratios = [b / r for b, r in zip(d["bus"], d["raw"])]
        print(f"{name:<48} bus {statistics.median(d['bus']):9.0f}/s  raw {statistics.median(d['raw']):9.0f}/s  "
              f"ratio median {statistics.median(ratios):.2f} [min {min(ratios):.2f}, max {max(ratios):.2f}] {target}")

    print(f"{args.pairs} paired chunks; {args.messages} sequential publishes and {args.batches} batches of 100 per side")
    row("agent publish (checks + XADD outbox) vs XADD", seq, "(target >= 0.90)")
    row("same vs XADD of a pre-serialised entry", pre, "(stricter, informative)")
    row("publish_many x100 vs pipelined XADD x100", many, "(informative)")
    for name, lat in (("raw XADD -> XREADGROUP", lat_raw), ("publish -> router -> handler", lat_bus)):
        print(f"latency {name:<30} p50 {statistics.median(lat):6.2f} ms  p99 {pct(lat, 99):6.2f} ms  (n={len(lat)})")
    print(f"latency ratio bus/raw: p50 {statistics.median(lat_bus) / statistics.median(lat_raw):.2f}x  "
          f"p99 {pct(lat_bus, 99) / pct(lat_raw, 99):.2f}x (target p99 <= 3x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--latency", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=20, help="paired bus/raw chunks (default 20)")
    parser.add_argument("--latency-rounds", type=int, default=10, help="alternating latency rounds (default 10)")
    asyncio.run(main(parser.parse_args()))
