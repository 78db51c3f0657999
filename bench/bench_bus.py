"""Benchmark: the bus's publish path and delivery latency against raw redis-py.

Run from the repository root::

    .venv/bin/python -m bench.bench_bus [--messages 5000] [--batches 100] [--latency 1000] [--pairs 20]

A fresh redis-server (no persistence, so both sides pay the same) gets a small
swarm's bus installed with ``apply_bus``. Measured in the same run in ``--pairs``
paired chunks (bus and raw back to back, alternating which goes first, so both
sides of a pair see the same load on a shared machine); the median paired ratio
is reported with its range:

1. sequential ``EventBus.publish`` (declared-topic + ACL check in-process, then ONE
   EVALSHA doing the breaker check, the GET of the dedup mark, XADD MAXLEN ~ and
   the SET PX of the mark) vs raw ``XADD MAXLEN ~`` of the same four fields.
   Target ratio >= 0.80.
2. ``publish_many`` in batches of 100 (one pipelined round trip per batch) vs a
   redis-py pipeline of 100 raw XADDs. Target ratio >= 0.70.
3. publish -> consume latency through a consumer group: one publisher and one
   subscriber (``EventBus.subscribe``, XREADGROUP BLOCK, ack each) in one process,
   one message every 2 ms; p50 and p99. Baseline: raw XADD and a raw XREADGROUP
   BLOCK loop with XACK, same pacing.

Every publish uses a fresh message id, so every bus publish writes a dedup mark.
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
from tests.support.services import RedisServer

TOPIC = "tasks.bench"
STREAM = "swarm:{bench}:topic:" + TOPIC
PAYLOAD = {"task": "summarise", "url": "https://example.org/paper.pdf", "priority": 3, "tags": ["a", "b"]}


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


def raw_fields() -> dict[str, str]:
    return {"message_id": str(uuid.uuid4()), "sender": "producer",
            "payload": json.dumps(PAYLOAD, separators=(",", ":")), "content_type": "application/json"}


async def seq_bus(bus: EventBus, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        await bus.publish(TOPIC, PAYLOAD)
    return n / (time.perf_counter() - t)


async def seq_raw(r: aioredis.Redis, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        await r.xadd(STREAM, raw_fields(), maxlen=100000, approximate=True)
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
                pipe.xadd(STREAM, raw_fields(), maxlen=100000, approximate=True)
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
            async for m in sub.subscribe([TOPIC]):
                now = time.perf_counter()
                await m.ack()
                if m.message_id in sent:
                    lat.append((now - sent[m.message_id]) * 1000)
                    if len(lat) >= n:
                        done.set()
                        return

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.2)
        for _ in range(n):
            mid = str(uuid.uuid4())
            sent[mid] = time.perf_counter()
            await pub.publish(TOPIC, PAYLOAD, message_id=mid)
            await asyncio.sleep(0.002)
        await asyncio.wait_for(done.wait(), 30)
        await task
    return lat


async def latency_raw(url: str, n: int) -> list[float]:
    stream, group = "raw:latency", "g"
    pub = aioredis.Redis.from_url(url, decode_responses=True)
    sub = aioredis.Redis.from_url(url, decode_responses=True, socket_timeout=None)
    await pub.xgroup_create(stream, group, id="$", mkstream=True)
    sent: dict[str, float] = {}
    lat: list[float] = []
    done = asyncio.Event()

    async def consume() -> None:
        while len(lat) < n:
            reply = await sub.xreadgroup(group, "c", {stream: ">"}, count=32, block=2000)
            for _, entries in reply or []:
                for eid, fields in entries:
                    now = time.perf_counter()
                    await pub.xack(stream, group, eid)
                    lat.append((now - sent[fields["message_id"]]) * 1000)
        done.set()

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.2)
    for _ in range(n):
        fields = raw_fields()
        sent[fields["message_id"]] = time.perf_counter()
        await pub.xadd(stream, fields, maxlen=100000, approximate=True)
        await asyncio.sleep(0.002)
    await asyncio.wait_for(done.wait(), 30)
    await task
    await pub.aclose()
    await sub.aclose()
    return lat


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), appendonly=False).start()
        try:
            admin = aioredis.Redis.from_url(server.url, decode_responses=True)
            d = desired()
            await apply_bus(admin, d.bus, d.acl)
            raw = aioredis.Redis.from_url(server.url, decode_responses=True)
            bus = await EventBus(redis_url=server.url, swarm="bench", agent_id="producer").connect()
            await seq_bus(bus, 200)  # warm up: script loaded, connections open
            await seq_raw(raw, 200)
            # Paired chunks, alternating which side goes first, so both sides of a pair see the
            # same machine load (the 2-core box is shared); report the median paired ratio.
            seq: dict[str, list[float]] = {"bus": [], "raw": []}
            many: dict[str, list[float]] = {"bus": [], "raw": []}
            chunk, bchunk = max(1, args.messages // args.pairs), max(1, args.batches // args.pairs)
            for i in range(args.pairs):
                sides = [("raw", lambda: seq_raw(raw, chunk)), ("bus", lambda: seq_bus(bus, chunk))]
                for name, fn in sides if i % 2 == 0 else reversed(sides):
                    seq[name].append(await fn())
                bsides = [("raw", lambda: batch_raw(raw, bchunk)), ("bus", lambda: batch_bus(bus, bchunk))]
                for name, fn in bsides if i % 2 == 0 else reversed(bsides):
                    many[name].append(await fn())
                if i % 5 == 4:
                    await admin.delete(STREAM)  # keep the stream small; marks expire on their own
            await bus.close()
            await raw.aclose()
            await apply_bus(admin, d.bus, d.acl)  # the deletes above dropped the consumer group too
            lat_raw = await latency_raw(server.url, args.latency)
            lat_bus = await latency_bus(server.url, args.latency)
            await admin.aclose()
        finally:
            server.stop()

    def row(name: str, d: dict[str, list[float]], target: float) -> None:
        ratios = [b / r for b, r in zip(d["bus"], d["raw"])]
        print(f"{name:<44} bus {statistics.median(d['bus']):9.0f}/s  raw {statistics.median(d['raw']):9.0f}/s  "
              f"ratio median {statistics.median(ratios):.2f} [min {min(ratios):.2f}, max {max(ratios):.2f}] "
              f"(target >= {target:.2f})")

    print(f"{args.pairs} paired chunks; {args.messages} sequential publishes and {args.batches} batches of 100 per side")
    row("sequential publish (dedup+ACL+breaker) vs XADD", seq, 0.80)
    row("publish_many x100 vs pipelined XADD x100", many, 0.70)
    for name, lat in (("raw XADD -> XREADGROUP", lat_raw), ("bus publish -> subscribe", lat_bus)):
        print(f"latency {name:<28} p50 {statistics.median(lat):6.2f} ms  p99 {pct(lat, 99):6.2f} ms  (n={len(lat)})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--latency", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=20, help="paired bus/raw chunks (default 20)")
    asyncio.run(main(parser.parse_args()))
