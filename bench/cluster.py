"""A swarm on a Redis Cluster vs on a single Redis, in one run; and failover time to the first publish.

    .venv/bin/python -m bench.cluster --agents 100 --passes 10 --edits 6 --seconds 3 --rounds 3 --failovers 3

Backends, both started here (append-only, fsync always, the ``--proto-max-bulk-len``
``swarm up`` gives its Redis): one redis-server, and a 3-master / 3-replica cluster
(:mod:`tests.support.cluster`) reached through a node that does NOT own the swarm's
slot. Per backend: ``swarm registry serve`` (no prober) and the reconciler in-process
(``swarm reconcile --once`` code) on a generated spec (``bench.bench_reconcile``: 100
agents, 70 topics).

* reconcile: median wall time of a no-change pass (observe + plan + verify), and of
  an ACL-edit pass (role ``worker`` gains / loses a publish topic: ~90 Redis users
  rewritten, on the cluster also copied to the 5 other nodes);
* heartbeats/s: every agent registered, then ``POST /agents/{id}/heartbeat`` with each
  agent's token, 32 in flight (httpx), ``--seconds`` per round, backends alternating;
  and the Redis side alone: ``RegistryStore.heartbeat`` (the one EVALSHA) in-process,
  32 in flight;
* failover (cluster only): a router and a publisher (``publish(wait=True)`` in a loop);
  ``CLUSTER FAILOVER`` on the replica of the slot's master; time from the command, and
  from the promotion showing in ``CLUSTER NODES``, to the first publish the router
  confirms after it (Redis re-asked every 6 s if a manual failover gives up after 5 s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.bench_reconcile import SECRET, SPARE, swarm_yaml, write_agents
from swarm.bus.apply import agent_redis_url
from swarm.bus.bus import EventBus
from swarm.cli import build_parser
from swarm.cli.reconcile_cmds import _config, _reconciler
from swarm.errors import SwarmError
from swarm.registry.auth import admin_token, agent_token
from tests.support.cluster import RedisCluster
from tests.support.router import RouterProcess
from tests.support.services import ProcessServer, RedisServer, free_port, python_cmd

SWARM = "bench"


def _registry(url: str, log: Path) -> ProcessServer:
    port = free_port()
    return ProcessServer(
        python_cmd("-m", "swarm", "registry", "serve", "--port", str(port), "--redis-url", url, "--swarm", SWARM,
                   "--no-probe", "--log-level", "warning"),
        port=port, env=dict(os.environ), log=log,
    ).start()


class Backend:
    def __init__(self, name: str, url: str, root: Path, agents: int) -> None:
        self.name, self.url, self.agents = name, url, agents
        self.root = root / name
        self.spec = self.root / "specs"
        self.spec.mkdir(parents=True)
        self.registry = _registry(url, self.root / "registry.log")
        self.extra = False
        self._write()
        write_agents(self.spec, agents)
        args = build_parser().parse_args(["reconcile", str(self.spec), "--once", "--prune", "--redis-url", url,
                                          "--registry-url", self.registry.url])
        self.rec = _reconciler(_config(args, dry_run=False, resync_seconds=args.resync, compiled_dir=None,
                                       lease_ttl=args.lease_ttl, redis_check_seconds=args.redis_check))

    def _write(self) -> None:
        (self.spec / "swarm.yaml").write_text(swarm_yaml(list(range(SPARE)), self.extra, self.url, self.registry.url))

    def run_pass(self) -> float:
        start = time.perf_counter()
        result = self.rec.run_pass("once")
        took = time.perf_counter() - start
        if result.state not in ("synced",):
            raise RuntimeError(f"{self.name}: pass ended {result.state}: {result.error}")
        return took

    def edit_pass(self) -> float:
        self.extra = not self.extra
        self._write()
        return self.run_pass()

    def ids(self) -> list[str]:
        return [f"agent-{i:03d}" for i in range(self.agents)]

    async def register_all(self) -> None:
        async with httpx.AsyncClient(base_url=self.registry.url, timeout=10) as http:
            for agent_id in self.ids():
                r = await http.post("/agents/register", json={"agent_id": agent_id},
                                    headers={"Authorization": f"Bearer {agent_token(SECRET, SWARM, agent_id)}"})
                r.raise_for_status()

    async def heartbeats(self, seconds: float, concurrency: int = 32) -> float:
        ids = self.ids()
        headers = {a: {"Authorization": f"Bearer {agent_token(SECRET, SWARM, a)}"} for a in ids}
        done = 0
        deadline = time.perf_counter() + seconds
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=self.registry.url, timeout=10, limits=limits) as http:
            async def worker(k: int) -> None:
                nonlocal done
                i = k
                while time.perf_counter() < deadline:
                    agent_id = ids[i % len(ids)]
                    r = await http.post(f"/agents/{agent_id}/heartbeat", headers=headers[agent_id])
                    if r.status_code != 200:
                        raise RuntimeError(f"{self.name}: heartbeat {r.status_code}: {r.text}")
                    done += 1
                    i += concurrency

            start = time.perf_counter()
            await asyncio.gather(*(worker(k) for k in range(concurrency)))
            return done / (time.perf_counter() - start)

    async def store_heartbeats(self, seconds: float, concurrency: int = 32) -> float:
        """The Redis side alone: RegistryStore.heartbeat (one EVALSHA) in this process, no HTTP."""
        from swarm.redis_conn import async_client
        from swarm.registry.store import RegistryStore

        client = async_client(self.url, swarm=SWARM, blocking_pool=True, max_connections=concurrency, timeout=5)
        store = RegistryStore(client, SWARM)
        ids = self.ids()
        done = 0
        deadline = time.perf_counter() + seconds

        async def worker(k: int) -> None:
            nonlocal done
            i = k
            while time.perf_counter() < deadline:
                if await store.heartbeat(ids[i % len(ids)]) is None:
                    raise RuntimeError(f"{self.name}: {ids[i % len(ids)]} is not registered")
                done += 1
                i += concurrency

        try:
            start = time.perf_counter()
            await asyncio.gather(*(worker(k) for k in range(concurrency)))
            return done / (time.perf_counter() - start)
        finally:
            await client.aclose()

    def close(self) -> None:
        self.rec.close()
        self.registry.stop()


async def failover_times(cluster: RedisCluster, url: str, root: Path, count: int) -> list[tuple[float, float]]:
    """Per failover: (from the CLUSTER FAILOVER command, from the promotion seen in CLUSTER NODES) to the publish."""
    router = RouterProcess(redis_url=url, swarm=SWARM, log=root / "router.log").start()
    bus = EventBus(redis_url=agent_redis_url(url, SWARM, "agent-000", SECRET), swarm=SWARM, agent_id="agent-000")
    await bus.connect()
    times: list[tuple[float, float]] = []
    try:
        for n in range(count):
            for i in range(5):
                await bus.publish("work.t0", {"n": n, "i": i}, wait=True, timeout=5)
            start = time.perf_counter()
            await asyncio.to_thread(cluster.failover, SWARM)
            promoted = time.perf_counter()
            while True:
                try:
                    await bus.publish("work.t0", {"n": n, "after": True}, wait=True, timeout=2)
                    break
                except SwarmError as exc:
                    if time.perf_counter() - promoted > 60:
                        where = bus.redis.connection_pool.connection_kwargs.get("resolver")
                        raise RuntimeError(f"no publish 60 s after failover {n}: {exc}; "
                                           f"client resolver {vars(where) if where else None}") from exc
                    await asyncio.sleep(0.02)
            times.append((time.perf_counter() - start, time.perf_counter() - promoted))
            await asyncio.to_thread(cluster.wait_ok)
    finally:
        await bus.close()
        router.stop()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--passes", type=int, default=10, help="no-change passes per backend")
    parser.add_argument("--edits", type=int, default=6, help="ACL-edit passes per backend")
    parser.add_argument("--seconds", type=float, default=3.0, help="heartbeat round length")
    parser.add_argument("--rounds", type=int, default=3, help="heartbeat rounds per backend (alternating)")
    parser.add_argument("--failovers", type=int, default=3)
    parser.add_argument("--no-aof", action="store_true", help="both backends without the append-only file")
    args = parser.parse_args()
    os.environ.update(SWARM_REGISTRY_SECRET=SECRET, SWARM_ADMIN_TOKEN=admin_token(SECRET, SWARM))

    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        root = Path(tmp)
        single = RedisServer(root / "single", appendonly=not args.no_aof).start()
        cluster = RedisCluster(root / "cluster", appendonly=not args.no_aof).start()
        backends: list[Backend] = []
        try:
            backends = [Backend("single", single.url, root, args.agents),
                        Backend("cluster", cluster.non_owner_url(SWARM), root, args.agents)]
            first = {b.name: b.run_pass() for b in backends}
            passes: dict[str, list[float]] = {b.name: [] for b in backends}
            edits: dict[str, list[float]] = {b.name: [] for b in backends}
            for _ in range(args.passes):
                for b in backends:
                    passes[b.name].append(b.run_pass())
            for _ in range(args.edits):
                for b in backends:
                    edits[b.name].append(b.edit_pass())
            beats: dict[str, list[float]] = {b.name: [] for b in backends}
            store_beats: dict[str, list[float]] = {b.name: [] for b in backends}
            for b in backends:
                asyncio.run(b.register_all())
            for _ in range(args.rounds):
                for b in backends:
                    beats[b.name].append(asyncio.run(b.heartbeats(args.seconds)))
                    store_beats[b.name].append(asyncio.run(b.store_heartbeats(args.seconds)))
            fails = asyncio.run(failover_times(cluster, backends[1].url, root, args.failovers))
        finally:
            for b in backends:
                b.close()
            cluster.stop()
            single.stop()

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:.1f} ms"

    s, c = "single", "cluster"
    print(f"append-only file: {'no' if args.no_aof else 'yes, fsync always'}")
    print(f"agents {args.agents}; first (apply) pass: single {first[s] * 1000:.0f} ms, cluster {first[c] * 1000:.0f} ms")
    print("| measure | single Redis | cluster (non-owner URL) | cluster / single |")
    print("|---|---|---|---|")
    print(f"| no-change reconcile pass, median of {args.passes} | {ms(passes[s])} | {ms(passes[c])} | "
          f"{statistics.median(passes[c]) / statistics.median(passes[s]):.2f}x |")
    print(f"| ACL-edit reconcile pass, median of {args.edits} | {ms(edits[s])} | {ms(edits[c])} | "
          f"{statistics.median(edits[c]) / statistics.median(edits[s]):.2f}x |")
    print(f"| heartbeats/s, median of {args.rounds} x {args.seconds:g} s | {statistics.median(beats[s]):.0f} | "
          f"{statistics.median(beats[c]):.0f} | {statistics.median(beats[c]) / statistics.median(beats[s]):.2f}x |")
    print(f"| heartbeats/s, RegistryStore.heartbeat alone (no HTTP), median of {args.rounds} | "
          f"{statistics.median(store_beats[s]):.0f} | {statistics.median(store_beats[c]):.0f} | "
          f"{statistics.median(store_beats[c]) / statistics.median(store_beats[s]):.2f}x |")
    print(f"heartbeat rounds: single {[round(x) for x in beats[s]]}, cluster {[round(x) for x in beats[c]]}")
    print(f"CLUSTER FAILOVER -> first confirmed publish: {', '.join(f'{t * 1000:.0f} ms' for t, _ in fails)} "
          f"(median {statistics.median(t for t, _ in fails) * 1000:.0f} ms)")
    print(f"promotion seen -> first confirmed publish: {', '.join(f'{p * 1000:.0f} ms' for _, p in fails)} "
          f"(median {statistics.median(p for _, p in fails) * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
