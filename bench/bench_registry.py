"""Benchmark: heartbeats/s of the registry against a bare Starlette + one Redis SET.

Run from the repository root (needs ``wrk``: ``apt-get install -y wrk``)::

    .venv/bin/python -m bench.bench_registry [--agents 1000] [--seconds 8] [--connections 32] [--rounds 2]

What it does, all in one run so the ratio is fair on this machine:

1. starts a fresh redis-server (no persistence) on a free port;
2. starts two uvicorn servers with *identical* settings (one worker, access log off,
   the same ``--loop``/``--http`` implementations, log level warning):
   ``bare`` — :func:`bare_app`, a Starlette route ``POST /agents/{id}/heartbeat``
   doing exactly one ``SET key value PX ttl`` — and ``registry`` — our
   :func:`swarm.registry.server.create_app` with auth on;
3. pushes a catalog declaring ``--agents`` agents and registers all of them;
4. drives both with the same wrk Lua script (round-robin over the agents, each
   request carrying that agent's own bearer token), alternating bare/registry for
   ``--rounds`` rounds after a warm-up, and prints requests/s and p99 latency of
   each plus the ratios (target: throughput ratio >= 0.85, p99 <= 2x bare).

This module also holds the small harness (start Redis, start a registry, push a
catalog) reused by ``bench_sse.py`` and ``bench_memory.py``. It is never part of
the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import httpx

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/bench_registry.py` works too
    sys.path.insert(0, str(REPO))

from tests.support.services import ProcessServer, RedisServer, free_port  # noqa: E402

if TYPE_CHECKING:
    from swarm.desired import RegistryCatalog

SECRET = "bench-secret"
SWARM = "bench"
#: The same uvicorn flags for every server under comparison.
UVICORN_FLAGS = ["--workers", "1", "--no-access-log", "--log-level", "warning", "--loop", "asyncio", "--http", "h11"]


# -- the two apps (uvicorn --factory targets) ------------------------------------------


def bare_app() -> Any:
    """The baseline: one Starlette route doing one Redis SET, nothing else."""
    import redis.asyncio as aredis
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    client = aredis.Redis.from_url(os.environ["BENCH_REDIS_URL"])

    async def heartbeat(request: Request) -> JSONResponse:
        agent_id = request.path_params["agent_id"]
        await client.set(f"bench:lease:{agent_id}", "1", px=60_000)
        return JSONResponse({"agent_id": agent_id})

    return Starlette(routes=[Route("/agents/{agent_id}/heartbeat", heartbeat, methods=["POST"])])


def registry_app() -> Any:
    """Our registry, configured as ``swarm registry serve`` would (access log off)."""
    from swarm.registry.config import config_from_env
    from swarm.registry.server import create_app

    config = config_from_env(
        os.environ,
        swarm=os.environ.get("BENCH_SWARM", SWARM),
        redis_url=os.environ["BENCH_REDIS_URL"],
        # the agents here are fictitious: probing their health URLs would only add noise
        probe=False,
    )
    return create_app(config)


# -- harness ----------------------------------------------------------------------------


def agent_ids(n: int) -> list[str]:
    return [f"agent-{i:05d}" for i in range(n)]


def agent_token(agent_id: str) -> str:
    from swarm.registry.auth import agent_token as derive

    return derive(SECRET, os.environ.get("BENCH_SWARM", SWARM), agent_id)


def admin_token() -> str:
    from swarm.registry.auth import admin_token as derive

    return derive(SECRET, os.environ.get("BENCH_SWARM", SWARM))


def read_token() -> str:
    from swarm.registry.auth import read_token as derive

    return derive(SECRET, os.environ.get("BENCH_SWARM", SWARM))


def make_catalog(ids: list[str], *, ttl_seconds: int = 60, heartbeat_interval: int = 20) -> "RegistryCatalog":
    """A RegistryCatalog declaring ``ids`` (one worker role, one topic each)."""
    from swarm.desired import DeclaredAgent, RegistryCatalog, RegistryDefaults, TopicRights

    return RegistryCatalog(
        swarm=SWARM,
        spec_digest="bench",
        settings=RegistryDefaults(
            url="http://127.0.0.1:8700",
            ttl_seconds=ttl_seconds,
            heartbeat_interval=heartbeat_interval,
            allow_undeclared=False,
        ),
        agents={
            agent_id: DeclaredAgent(
                agent_id=agent_id,
                agent_name=agent_id,
                version="1.0.0",
                role="worker",
                capabilities=["research"],
                topics=TopicRights(publish=["results.research"], subscribe=["tasks.research"]),
                port=8000,
                runtime="python",
                registry=True,
            )
            for agent_id in ids
        },
    )


@dataclass
class Services:
    redis: RedisServer
    registry: ProcessServer
    workdir: Path


def uvicorn_server(target: str, port: int, env: dict[str, str], log: Path) -> ProcessServer:
    args = [sys.executable, "-m", "uvicorn", target, "--factory", "--host", "127.0.0.1", "--port", str(port)]
    return ProcessServer(args + UVICORN_FLAGS, port=port, env=env, cwd=REPO, ready_path=None, log=log)


@contextlib.contextmanager
def registry_services(*, appendonly: bool = False) -> Iterator[Services]:
    """A fresh redis-server and one registry process (auth on), stopped on exit."""
    workdir = Path(tempfile.mkdtemp(prefix="swarm-bench-"))
    redis = RedisServer(workdir / "redis", appendonly=appendonly).start()
    env = {"BENCH_REDIS_URL": redis.url, "BENCH_SWARM": SWARM, "SWARM_REGISTRY_SECRET": SECRET}
    registry = uvicorn_server("bench.bench_registry:registry_app", free_port(), env, workdir / "registry.log")
    try:
        registry.start()
        yield Services(redis=redis, registry=registry, workdir=workdir)
    finally:
        registry.stop()
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def push_catalog(url: str, ids: list[str], *, ttl_seconds: int = 60) -> None:
    """PUT /catalog declaring ``ids`` (admin token), as ``swarm registry push`` does."""
    from swarm.registry.catalog_push import push_catalog_async

    catalog = make_catalog(ids, ttl_seconds=ttl_seconds, heartbeat_interval=max(1, ttl_seconds // 3))
    await push_catalog_async(url, catalog, "bench", admin_token(), timeout=30)


async def register_all(url: str, ids: list[str], *, ttl_seconds: int = 60, concurrency: int = 32) -> None:
    """Register each of ``ids`` with its own token, as a generated agent would."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        gate = asyncio.Semaphore(concurrency)

        async def one(agent_id: str) -> None:
            async with gate:
                r = await http.post(
                    "/agents/register",
                    json={"agent_id": agent_id, "host": "127.0.0.1", "port": 8000, "ttl_seconds": ttl_seconds},
                    headers={"Authorization": f"Bearer {agent_token(agent_id)}"},
                )
                if r.status_code not in (200, 201):
                    raise RuntimeError(f"register {agent_id}: {r.status_code} {r.text}")

        await asyncio.gather(*(one(a) for a in ids))


async def push_and_register(url: str, ids: list[str], *, ttl_seconds: int = 60) -> None:
    await push_catalog(url, ids, ttl_seconds=ttl_seconds)
    await register_all(url, ids, ttl_seconds=ttl_seconds)


# -- wrk ----------------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: str


def wrk_script(ids: list[str], path: Path) -> Path:
    """Lua: round-robin POST /agents/<id>/heartbeat with each agent's own token."""
    entries = ",\n".join(f'  {{"{a}", "{agent_token(a)}"}}' for a in ids)
    path.write_text(
        "local agents = {\n" + entries + "\n}\n"
        "local n = 0\n"
        "request = function()\n"
        "  n = n % #agents + 1\n"
        "  local a = agents[n]\n"
        '  return wrk.format("POST", "/agents/" .. a[1] .. "/heartbeat", '
        '{["Authorization"] = "Bearer " .. a[2], ["Content-Length"] = "0"}, nil)\n'
        "end\n"
    )
    return path


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def run_wrk(url: str, script: Path, seconds: int, connections: int, threads: int = 1) -> WrkResult:
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = ""
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += f"non-2xx={m.group(1)} "
    m = re.search(r"Socket errors: (.*)", out)
    if m:
        errors += f"socket: {m.group(1)}"
    return WrkResult(rps, p50, p99, errors.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    ids = agent_ids(args.agents)
    with registry_services() as services:
        bare = uvicorn_server(
            "bench.bench_registry:bare_app", free_port(), {"BENCH_REDIS_URL": services.redis.url},
            services.workdir / "bare.log",
        ).start()
        try:
            asyncio.run(push_and_register(services.registry.url, ids, ttl_seconds=60))
            script = wrk_script(ids, services.workdir / "heartbeat.lua")
            targets = {"bare": bare.url, "registry": services.registry.url}
            for url in targets.values():
                run_wrk(url, script, args.warmup, args.connections)
            results: dict[str, list[WrkResult]] = {name: [] for name in targets}
            for _ in range(args.rounds):
                for name, url in targets.items():
                    results[name].append(run_wrk(url, script, args.seconds, args.connections))
        finally:
            bare.stop()
    print(f"wrk -t1 -c{args.connections} -d{args.seconds}s, {args.agents} agents, {args.rounds} rounds (median)")
    summary: dict[str, tuple[float, float, float]] = {}
    for name, runs in results.items():
        rps = statistics.median(r.requests_per_s for r in runs)
        p50 = statistics.median(r.p50_ms for r in runs)
        p99 = statistics.median(r.p99_ms for r in runs)
        summary[name] = (rps, p50, p99)
        errors = "; ".join(r.errors for r in runs if r.errors) or "none"
        print(f"  {name:9s} {rps:9.0f} req/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   errors: {errors}")
        print("            runs: " + ", ".join(f"{r.requests_per_s:.0f}" for r in runs))
    throughput = summary["registry"][0] / summary["bare"][0]
    latency = summary["registry"][2] / summary["bare"][2]
    print(f"  ratio throughput registry/bare = {throughput:.2f} (target >= 0.85)")
    print(f"  ratio p99 registry/bare        = {latency:.2f} (target <= 2.0)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
