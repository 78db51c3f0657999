"""Benchmark: routed publish -> inbox throughput against raw pipelined XADD of the same entries.

Run from the repository root::

    .venv/bin/python -m bench.bench_router [--messages 5000] [--pairs 6] [--subscribers 1] [--batch-size 100]

A fresh redis-server (no persistence, so both sides pay the same) gets a small swarm's
bus installed with ``apply_bus`` and one ``swarm bus route`` process (the router as it
runs in production: its own process, its own connections). Measured in the same run in
``--pairs`` paired chunks of ``--messages`` entries (routed and raw back to back,
alternating which goes first, so both sides of a pair see the same load on a shared
machine); the median paired ratio is reported with its range:

* routed: the producer XADDs the entries (topic, payload, message_id) to its outbox in
  pipelines of 500, the router validates each, and runs route.lua per batch (breaker,
  dedup mark, topic log, every subscriber's inbox, receipt, XACK + XDEL); the clock
  stops when the last subscriber's inbox holds all of them.
* raw: the same entries, with the fields an inbox entry has, XADDed straight into each
  subscriber's inbox in pipelines of 500 (what a bus without a router costs).

Target: routed/raw >= 0.5. ``--batch-size 1`` measures one script run per entry.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis.asyncio as aioredis

from swarm.bus.apply import apply_bus
from swarm.desired import DesiredState, desired_from_spec
from swarm.keys import SwarmKeys
from swarm.spec.models import Spec, SwarmDocument
from tests.support.router import RouterProcess
from tests.support.services import RedisServer

TOPIC = "tasks.bench"
K = SwarmKeys("bench")
PAYLOAD = json.dumps({"task": "summarise", "url": "https://example.org/paper.pdf", "priority": 3, "tags": ["a", "b"]},
                     separators=(",", ":"))
PIPE = 500


def desired(subscribers: int) -> DesiredState:
    doc = SwarmDocument.model_validate(
        {
            "apiVersion": "swarm/v1", "kind": "Swarm", "metadata": {"name": "bench"},
            "topics": [{"name": TOPIC, "max_len": 1_000_000}],
            "roles": {"pub": {"publish": ["tasks.>"]}, "sub": {"subscribe": ["tasks.*"]}},
            "agents": [{"id": "producer", "role": "pub", "port": 1, "publishes": [TOPIC]}]
            + [{"id": f"consumer-{i}", "role": "sub", "port": 2 + i, "subscribes": [TOPIC]} for i in range(subscribers)],
        },
        strict=False,
    )
    return desired_from_spec(Spec(swarm=doc, agents=list(doc.agents)), "bench")


async def routed(r: aioredis.Redis, n: int, inboxes: list[str]) -> float:
    mids = [str(uuid.uuid4()) for _ in range(n)]
    targets = {box: await r.xlen(box) + n for box in inboxes}
    t = time.perf_counter()
    for i in range(0, n, PIPE):
        async with r.pipeline(transaction=False) as pipe:
            for mid in mids[i:i + PIPE]:
                pipe.xadd(K.outbox("producer"), {"topic": TOPIC, "payload": PAYLOAD, "message_id": mid})
            await pipe.execute()
    for box, target in targets.items():
        while await r.xlen(box) < target:
            await asyncio.sleep(0.001)
    return n / (time.perf_counter() - t)


async def raw(r: aioredis.Redis, n: int, inboxes: list[str]) -> float:
    mids = [str(uuid.uuid4()) for _ in range(n)]
    t = time.perf_counter()
    for i in range(0, n, PIPE):
        async with r.pipeline(transaction=False) as pipe:
            for mid in mids[i:i + PIPE]:
                fields = {"topic": TOPIC, "message_id": mid, "sender": "producer", "payload": PAYLOAD,
                          "content_type": "application/json", "topic_entry_id": "0-1"}
                for box in inboxes:
                    pipe.xadd(box, fields, maxlen=1_000_000, approximate=True)
            await pipe.execute()
    return n / (time.perf_counter() - t)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis", appendonly=False).start()
        router = RouterProcess(redis_url=server.url, swarm="bench", log=Path(tmp) / "router.log",
                               extra_args=["--batch-size", str(args.batch_size)],
                               block_ms=1000)
        r = aioredis.Redis.from_url(server.url, decode_responses=True)
        try:
            state = desired(args.subscribers)
            await apply_bus(r, state.bus, state.acl)
            router.start()
            inboxes = [K.inbox(f"consumer-{i}") for i in range(args.subscribers)]
            await routed(r, 500, inboxes)  # warm up: script loaded, connections open
            await raw(r, 500, inboxes)
            ratios, routed_rates, raw_rates = [], [], []
            for pair in range(args.pairs):
                if pair % 2 == 0:
                    a = await routed(r, args.messages, inboxes)
                    b = await raw(r, args.messages, inboxes)
                else:
                    b = await raw(r, args.messages, inboxes)
                    a = await routed(r, args.messages, inboxes)
                routed_rates.append(a)
                raw_rates.append(b)
                ratios.append(a / b)
            cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
            print(f"routed publish -> inbox, {args.subscribers} subscriber(s), batch {args.batch_size}, "
                  f"{args.pairs} pairs of {args.messages} entries ({cpu} cores)")
            print(f"  routed: median {statistics.median(routed_rates):,.0f} msg/s "
                  f"(range {min(routed_rates):,.0f}-{max(routed_rates):,.0f})")
            print(f"  raw pipelined XADD: median {statistics.median(raw_rates):,.0f} msg/s "
                  f"(range {min(raw_rates):,.0f}-{max(raw_rates):,.0f})")
            print(f"  ratio routed/raw: median {statistics.median(ratios):.2f} "
                  f"(range {min(ratios):.2f}-{max(ratios):.2f}; target >= 0.5)")
        finally:
            await r.aclose()
            router.stop()
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--subscribers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=100)
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
