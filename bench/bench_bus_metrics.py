"""Benchmark: one scrape of the bus's series (``swarm_bus_*``, read from Redis at scrape time).

Run from the repository root::

    .venv/bin/python -m bench.bench_bus_metrics [--agents 100 1000] [--topics 50] [--repeat 20]

A fresh redis-server (no persistence) gets a swarm of ``--agents`` agents installed with
``apply_bus`` (each publishes one of ``--topics`` topics and subscribes to another), a few
entries in every topic log and inbox (half of them delivered, so lag and pending are both
non-zero), a dead letter for every tenth agent and an open breaker for every twentieth.
Measured in the same run, medians of ``--repeat``:

* refresh: :meth:`BusCollector.refresh` (one pipeline: XINFO STREAM per topic; XINFO GROUPS
  of each inbox and outbox, XINFO STREAM of the dead-letter stream and HMGET of the breaker
  per agent) forced every time (``min_interval=0``);
* render: ``generate_latest`` of the registry's metrics with that snapshot;
* floor: one pipeline of as many XLEN commands (the cheapest read, of the same keys): what
  any scrape-time read of that many keys costs at least.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

from swarm.bus.apply import apply_bus
from swarm.desired import DesiredState, desired_from_spec
from swarm.keys import SwarmKeys
from swarm.registry.metrics import RegistryMetrics
from swarm.spec.models import Spec, SwarmDocument
from tests.support.services import RedisServer

K = SwarmKeys("bench")


def desired(agents: int, topics: int) -> DesiredState:
    names = [f"work.t{i}" for i in range(topics)]
    doc = SwarmDocument.model_validate(
        {
            "apiVersion": "swarm/v1", "kind": "Swarm", "metadata": {"name": "bench"},
            "topics": [{"name": n, "max_len": 10_000} for n in names],
            "roles": {"w": {"publish": ["work.*"], "subscribe": ["work.*"]}},
            "agents": [{"id": f"agent-{i}", "role": "w", "port": 1000 + i, "publishes": [names[i % topics]],
                        "subscribes": [names[(i + 1) % topics]]} for i in range(agents)],
        },
        strict=False,
    )
    return desired_from_spec(Spec(swarm=doc, agents=list(doc.agents)), "bench")


async def seed(r: aioredis.Redis, state: DesiredState) -> None:
    async with r.pipeline(transaction=False) as pipe:
        for topic in state.bus.topics.values():
            for n in range(3):
                pipe.xadd(topic.stream, {"payload": '{"n": %d}' % n, "sender": "x", "message_id": f"m{n}"})
        for i, (agent, rights) in enumerate(sorted(state.bus.agents.items())):
            for n in range(4):
                pipe.xadd(rights.inbox, {"payload": '{"n": %d}' % n, "sender": "x", "message_id": f"m{n}"})
            pipe.xreadgroup(agent, "c", {rights.inbox: ">"}, count=2)
            if i % 10 == 0:
                pipe.xadd(rights.dead_letter_stream, {"original_entry_id": "1-0", "reason": "bench"})
            if i % 20 == 0:
                pipe.hset(K.breaker(agent), mapping={"state": "open", "failures": "4"})
        await pipe.execute()


async def floor(r: aioredis.Redis, state: DesiredState) -> float:
    t = time.perf_counter()
    async with r.pipeline(transaction=False) as pipe:
        for topic in state.bus.topics.values():
            pipe.xlen(topic.stream)
        for rights in state.bus.agents.values():
            for key in (rights.inbox, rights.outbox, rights.dead_letter_stream, rights.inbox):
                pipe.xlen(key)
        await pipe.execute()
    return time.perf_counter() - t


async def measure(url: str, agents: int, topics: int, repeat: int) -> dict[str, float]:
    r = aioredis.Redis.from_url(url)
    try:
        await r.flushall()
        state = desired(agents, topics)
        await apply_bus(r, state.bus, state.acl)
        await seed(r, state)
        metrics = RegistryMetrics()
        collector = metrics.add_bus(r, "bench")
        collector.min_interval = 0.0
        refresh, render, floors = [], [], []
        for _ in range(repeat + 1):
            t = time.perf_counter()
            snap = await collector.refresh()
            refresh.append(time.perf_counter() - t)
            t = time.perf_counter()
            text = metrics.render()
            render.append(time.perf_counter() - t)
            floors.append(await floor(r, state))
        assert snap.up and len(snap.breakers) == agents, "the scrape read the bus"
        series = sum(1 for line in text.decode().splitlines() if line.startswith("swarm_bus_"))
        return {"refresh": statistics.median(refresh[1:]), "render": statistics.median(render[1:]),
                "floor": statistics.median(floors[1:]), "series": series}
    finally:
        await r.aclose()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis", appendonly=False).start()
        try:
            print(f"one scrape of swarm_bus_*, {args.topics} topics, medians of {args.repeat}")
            print("| agents | series | refresh (Redis read) | render | floor (XLEN pipeline, same keys) | refresh / floor |")
            print("|---|---|---|---|---|---|")
            for agents in args.agents:
                m = await measure(server.url, agents, args.topics, args.repeat)
                print(f"| {agents:,} | {m['series']:,.0f} | {m['refresh'] * 1000:.1f} ms | {m['render'] * 1000:.1f} ms "
                      f"| {m['floor'] * 1000:.1f} ms | {m['refresh'] / m['floor']:.2f}x |")
        finally:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--agents", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--topics", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=20)
    asyncio.run(main(parser.parse_args()))
