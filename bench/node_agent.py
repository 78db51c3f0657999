"""Benchmark: a compiled node (NestJS) agent against a compiled Python agent, in one run.

Run from the repository root (node 20 and npm on PATH; the first run installs the node
runtime's dependencies from npm's cache or the registry into bench/out/npm)::

    .venv/bin/python -m bench.node_agent [--heartbeats 200] [--messages 200] [--rounds 6]

One redis-server (no persistence), one registry (``swarm registry serve --no-route``,
its prober on), one router process (``swarm bus route``). A small swarm is compiled
with two consumers that differ only in their runtime: ``py`` (runtime python, served
by uvicorn) and ``nd`` (runtime node, ``npm run build`` then ``node dist/main.js``),
each with a handler that appends ``now - payload.t`` (seconds; both read the same wall
clock) to a file; the publisher is a Python ``EventBus``.

1. heartbeat: the registry client of each runtime (Python ``AgentRegistryClient``,
   node ``RegistryClient`` from the shared package, run by ``node``) registers, then
   renews its lease 5 times (warm-up) and then ``--heartbeats`` / 2 times back to back, in two
   alternating rounds; per-call latency p50/p99.
2. publish -> handler: one message every 5 ms to ``tasks.py`` then ``tasks.nd``
   (alternating which goes first per round), ``--messages`` per agent per round, over
   ``--rounds`` rounds; latency from before the publisher's XADD to the handler's
   clock, through the router. p50/p99 of all messages of each agent.

Reported: each side's figures and the node/python ratios (measured in the same run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from swarm.bus import EventBus, apply_bus
from swarm.bus.apply import agent_redis_url
from swarm.compiler import compile_loaded, write_output
from swarm.desired import AclDocument, BusPlan, RegistryCatalog
from swarm.registry import AgentRegistryClient
from swarm.registry.auth import agent_token, admin_token
from swarm.registry.catalog_push import push_catalog
from swarm.spec.loader import load_spec_full
from tests.compiler.conftest import agent_doc, swarm_doc, write_spec
from tests.runtimes.node.support import installed_modules, link_modules, run
from tests.support.router import RouterProcess
from tests.support.services import ProcessServer, RedisServer, free_port, python_cmd

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out" / "node_agent"
SECRET = "bench-node-agent-secret"
PY_HANDLER = '''
import os, time

async def handle(message, publish):
    with open(os.environ["BENCH_LOG"], "a") as fh:
        fh.write(f"{time.time() - message.payload['t']}\\n")
'''
NODE_HANDLER = """\
import { appendFileSync } from "node:fs";

import type { Handler } from "@swarm-gitops/agent-runtime";

export const handle: Handler = (message) => {
  const now = (performance.timeOrigin + performance.now()) / 1000;
  appendFileSync(process.env.BENCH_LOG ?? "", `${now - (message.payload as { t: number }).t}\\n`);
};
"""
NODE_HEARTBEATS = """\
import { RegistryClient } from "@swarm-gitops/agent-runtime";

const n = Number(process.argv[2]);
const config = JSON.parse(process.argv[3]);
const client = new RegistryClient(config);
await client.register();
for (let i = 0; i < 5; i++) await client.heartbeat(); // warm-up, not counted
const times = [];
for (let i = 0; i < n; i++) {
  const t0 = performance.now();
  if (!(await client.heartbeat())) throw new Error("heartbeat 404");
  times.push((performance.now() - t0) / 1000);
}
console.log(JSON.stringify(times));
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


async def python_heartbeats(url: str, token: str, n: int) -> list[float]:
    os.environ["AGENT_HOST"], os.environ["AGENT_PORT"] = "127.0.0.1", "9"  # never probed: no health_url
    client = AgentRegistryClient(url, "hb-py", ttl_seconds=60, heartbeat_interval=20, token=token)
    try:
        await client.register({"version": "0.1.0", "role": "worker"})
        for _ in range(5):  # warm-up, not counted (as on the node side)
            await client.heartbeat()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            assert await client.heartbeat()
            times.append(time.perf_counter() - t0)
        return times
    finally:
        await client.deregister()
        await client.aclose()


def node_heartbeats(agent_dir: Path, url: str, token: str, n: int) -> list[float]:
    script = agent_dir / "bench-heartbeats.mjs"
    script.write_text(NODE_HEARTBEATS)
    config = {"swarm": "bench", "agentId": "hb-nd", "agentName": "hb-nd", "version": "0.1.0", "role": "worker",
              "capabilities": [], "publishes": [], "subscribes": [], "port": 9, "host": "127.0.0.1",
              "redisUrl": None, "registry": {"url": url, "ttlSeconds": 60, "heartbeatInterval": 20}, "token": token}
    out = subprocess.run(["node", str(script), str(n), json.dumps(config)], cwd=agent_dir, capture_output=True,
                         text=True, check=True, timeout=300)
    httpx.delete(f"{url}/agents/hb-nd", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    return [float(t) for t in json.loads(out.stdout)]


async def latency_round(bus: EventBus, topic: str, log: Path, n: int) -> list[float]:
    before = len(log.read_text().splitlines()) if log.exists() else 0
    for i in range(n):
        await bus.publish(topic, {"t": time.time(), "i": i})
        await asyncio.sleep(0.005)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        if len(lines) >= before + n:
            return [float(x) for x in lines[before:before + n]]
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{topic}: only {len(lines) - before} of {n} messages handled")


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready")


async def main_async(args: argparse.Namespace) -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    repo = OUT / "repo"
    (repo / "handlers").mkdir(parents=True)
    (repo / "handlers" / "bench.ts").write_text(NODE_HANDLER)
    (repo / "bench_handlers.py").write_text(PY_HANDLER)
    py_port, nd_port = free_port(), free_port()
    roles = {"worker": {"publish": ["results.*"], "subscribe": ["tasks.>"]}, "boss": {"publish": ["tasks.*"]}}
    topics = [{"name": "tasks.py"}, {"name": "tasks.nd"}]
    registry_settings = {"url": "http://127.0.0.1:8700", "ttl_seconds": 60, "heartbeat_interval": 20}
    agents = [
        agent_doc("py", py_port, role="worker", subscribes=["tasks.py"], handler="bench_handlers:handle"),
        agent_doc("nd", nd_port, role="worker", runtime="node", subscribes=["tasks.nd"], handler="handlers/bench.ts:handle"),
        agent_doc("boss", free_port(), role="boss", registry=False, publishes=["tasks.py", "tasks.nd"]),
        agent_doc("hb-py", free_port(), role="worker"),
        agent_doc("hb-nd", free_port(), role="worker", runtime="node"),
    ]
    spec = swarm_doc("bench", roles=roles, topics=topics, registry=registry_settings)
    files = compile_loaded(load_spec_full(write_spec(repo / "specs", spec, agents)))
    write_output(files, repo / "compiled", "bench")
    root = repo / "compiled" / "bench"
    nd_dir = root / "agents" / "nd"
    link_modules(nd_dir, installed_modules(OUT.parent / "npm"))
    run(["npm", "run", "build"], nd_dir)

    redis_server = RedisServer(OUT / "redis", appendonly=False).start()
    procs: list[Any] = []
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        await apply_bus(admin, BusPlan.model_validate_json(files["bench/bus.json"]),
                        AclDocument.model_validate_json(files["bench/acl.json"]), secret=SECRET)
        reg_port = free_port()
        registry = ProcessServer(
            python_cmd("-m", "swarm", "registry", "serve", "--port", str(reg_port), "--redis-url", redis_server.url,
                       "--swarm", "bench", "--log-level", "warning", "--no-route"),
            port=reg_port, env={"SWARM_REGISTRY_SECRET": SECRET, "SWARM_ADMIN_TOKEN": ""}, cwd=REPO,
            log=OUT / "registry.log").start()
        procs.append(registry)
        push_catalog(registry.url, RegistryCatalog.model_validate_json(files["bench/registry.json"]), "bench",
                     admin_token(SECRET, "bench"))
        router = RouterProcess(redis_url=redis_server.url, swarm="bench", log=OUT / "router.log").start()
        procs.append(router)

        def agent_env(agent_id: str, port: int) -> dict[str, str]:
            return {"AGENT_ID": agent_id, "AGENT_HOST": "127.0.0.1", "AGENT_PORT": str(port),
                    "SWARM_LISTEN_HOST": "127.0.0.1", "REGISTRY_URL": registry.url,
                    "SWARM_AGENT_TOKEN": agent_token(SECRET, "bench", agent_id),
                    "REDIS_URL": agent_redis_url(redis_server.url, "bench", agent_id, SECRET),
                    "BENCH_LOG": str(OUT / f"{agent_id}.lat"), "SWARM_LOG_LEVEL": "WARNING"}

        py = ProcessServer(
            python_cmd("-m", "uvicorn", "server:app", "--host", "127.0.0.1", "--port", str(py_port), "--no-access-log",
                       "--log-level", "warning"),
            port=py_port, cwd=root / "agents" / "py", log=OUT / "py.log",
            env={**agent_env("py", py_port), "PYTHONPATH": f"{repo}:{REPO}"}).start()
        procs.append(py)
        nd = ProcessServer(["node", "dist/main.js"], port=nd_port, cwd=nd_dir, log=OUT / "nd.log",
                           env=agent_env("nd", nd_port)).start()
        procs.append(nd)
        wait_ready(py.url)
        wait_ready(nd.url)

        # 1. heartbeats
        hb: dict[str, list[float]] = {"python": [], "node": []}
        for r in range(2):
            order = ["python", "node"] if r % 2 == 0 else ["node", "python"]
            for side in order:
                if side == "python":
                    hb[side] += await python_heartbeats(registry.url, agent_token(SECRET, "bench", "hb-py"),
                                                        args.heartbeats // 2)
                else:
                    hb[side] += await asyncio.to_thread(node_heartbeats, nd_dir, registry.url,
                                                        agent_token(SECRET, "bench", "hb-nd"), args.heartbeats // 2)

        # 2. publish -> handler
        lat: dict[str, list[float]] = {"python": [], "node": []}
        async with EventBus(redis_url=redis_server.url, swarm="bench", agent_id="boss") as boss:
            await latency_round(boss, "tasks.py", OUT / "py.lat", 20)  # warm-up, not counted
            await latency_round(boss, "tasks.nd", OUT / "nd.lat", 20)
            for r in range(args.rounds):
                order = [("python", "tasks.py", "py"), ("node", "tasks.nd", "nd")]
                for side, topic, agent_id in (order if r % 2 == 0 else order[::-1]):
                    lat[side] += await latency_round(boss, topic, OUT / f"{agent_id}.lat", args.messages)
    finally:
        for proc in reversed(procs):
            proc.stop()
        await admin.aclose()
        redis_server.stop()

    load = os.getloadavg()[0]
    print(f"node agent vs python agent (load average {load:.1f}, {os.cpu_count()} cores)")
    print(f"{'measure':40} {'python':>10} {'node':>10} {'node/python':>12}")
    rows = [
        (f"heartbeat p50 ({len(hb['python'])} calls)", statistics.median(hb["python"]), statistics.median(hb["node"])),
        ("heartbeat p99", pct(hb["python"], 0.99), pct(hb["node"], 0.99)),
        (f"publish->handler p50 ({len(lat['python'])} msgs)", statistics.median(lat["python"]),
         statistics.median(lat["node"])),
        ("publish->handler p99", pct(lat["python"], 0.99), pct(lat["node"], 0.99)),
    ]
    for name, p, n in rows:
        print(f"{name:40} {ms(p):>10} {ms(n):>10} {n / p:>11.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heartbeats", type=int, default=200)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    if shutil.which("node") is None or shutil.which("npm") is None:
        sys.exit("bench.node_agent needs node and npm on PATH")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
