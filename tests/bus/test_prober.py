"""HealthProber against a real uvicorn health endpoint and a real redis-server: failures
open the breaker on threshold+1, publishing is refused, a single probe closes it again,
and two probers at once count one check per interval."""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from swarm.bus import HealthProber
from swarm.errors import BreakerOpenError
from tests.bus.conftest import BusFactory
from tests.support.services import free_port

INTERVAL = 0.03


class Health:
    """A real HTTP server whose health answers the test switches."""

    def __init__(self) -> None:
        self.status: dict[str, int] = {}
        self.hits: dict[str, int] = {}

    async def health(self, request: Request) -> JSONResponse:
        agent = request.path_params["agent"]
        self.hits[agent] = self.hits.get(agent, 0) + 1
        code = self.status.get(agent, 200)
        return JSONResponse({"ok": code < 400}, status_code=code)


@pytest.fixture
async def health_server() -> AsyncIterator[tuple[Health, str]]:
    health = Health()
    app = Starlette(routes=[Route("/health/{agent}", health.health)])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield health, f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def register(redis: aioredis.Redis, agent: str, url: str, *, live: bool = True) -> None:
    seconds, _ = await redis.time()
    await redis.hset(f"swarm:{{lab}}:agent:{agent}", mapping={"health_url": f"{url}/health/{agent}"})
    await redis.zadd("swarm:{lab}:leases", {agent: (int(seconds) + (60 if live else -60)) * 1000})


async def rounds(prober: HealthProber, http: httpx.AsyncClient, n: int) -> list[dict[str, str]]:
    out = []
    for _ in range(n):
        out.append(await prober.probe_once(http))
        await asyncio.sleep(INTERVAL)
    return out


async def test_failures_open_on_threshold_plus_one_and_one_probe_closes(
    health_server: tuple[Health, str], applied: aioredis.Redis, make_bus: BusFactory
) -> None:
    health, url = health_server
    await register(applied, "planner", url)
    await register(applied, "worker-a", url, live=False)  # lease expired: never probed
    planner = await make_bus("planner", breaker_refresh_seconds=0)  # read the breaker on every publish
    health.status["planner"] = 503
    prober = HealthProber(applied, "lab", interval=INTERVAL)
    async with httpx.AsyncClient() as http:
        await rounds(prober, http, 3)
        assert await applied.hget("swarm:{lab}:breaker:planner", "state") == "closed"
        await planner.publish("tasks.research", {"n": 1})  # three failures: still allowed
        await rounds(prober, http, 1)
        assert await applied.hget("swarm:{lab}:breaker:planner", "state") == "open"
        with pytest.raises(BreakerOpenError):
            await planner.publish("tasks.research", {"n": 2})
        hits = health.hits["planner"]
        assert (await rounds(prober, http, 1))[0]["planner"] == "skipped"  # open, before the cooldown
        assert health.hits["planner"] == hits

        health.status["planner"] = 200
        await asyncio.sleep(0.35)  # cooldown 0.3 s in the test plan
        assert (await rounds(prober, http, 1))[0]["planner"] == "ok 200"
        assert await applied.hget("swarm:{lab}:breaker:planner", "state") == "closed"
        await planner.publish("tasks.research", {"n": 3})
    assert "worker-a" not in health.hits
    events = await applied.xrange("swarm:{lab}:events")
    assert [(e[1]["type"], e[1]["agent"]) for e in events] == [("breaker-opened", "planner"), ("breaker-closed", "planner")]


async def test_a_success_resets_the_count(health_server: tuple[Health, str], applied: aioredis.Redis) -> None:
    health, url = health_server
    await register(applied, "planner", url)
    prober = HealthProber(applied, "lab", interval=INTERVAL)
    async with httpx.AsyncClient() as http:
        for status in (500, 500, 500, 200, 500, 500, 500):
            health.status["planner"] = status
            await rounds(prober, http, 1)
    state = await applied.hgetall("swarm:{lab}:breaker:planner")
    assert (state["state"], state["failures"]) == ("closed", "3")  # 3 + 3 failures, split by a success


async def test_two_probers_count_one_check_per_interval(health_server: tuple[Health, str], applied: aioredis.Redis) -> None:
    health, url = health_server
    await register(applied, "planner", url)
    health.status["planner"] = 500
    a = HealthProber(applied, "lab", interval=1.0)
    b = HealthProber(applied, "lab", interval=1.0)
    async with httpx.AsyncClient() as http:
        ra, rb = await asyncio.gather(a.probe_once(http), b.probe_once(http))
    assert sorted([ra["planner"], rb["planner"]]) == ["failed 500", "locked"]
    assert await applied.hget("swarm:{lab}:breaker:planner", "failures") == "1"


async def test_unreachable_agent_counts_as_failure_and_run_stops(applied: aioredis.Redis) -> None:
    await register(applied, "planner", f"http://127.0.0.1:{free_port()}")
    await applied.hset("swarm:{lab}:agent:worker-a", "health_url", "http://[bad")  # malformed: a failure too
    await applied.zadd("swarm:{lab}:leases", {"worker-a": (int((await applied.time())[0]) + 60) * 1000})
    prober = HealthProber(applied, "lab", interval=INTERVAL, timeout=0.5)
    stop = asyncio.Event()
    task = asyncio.create_task(prober.run(stop))
    for _ in range(200):
        if prober.rounds >= 5:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 5)
    for agent in ("planner", "worker-a"):
        assert await applied.hget(f"swarm:{{lab}}:breaker:{agent}", "state") in ("open", "half_open")


async def test_logs_changes_of_health_only(
    health_server: tuple[Health, str], applied: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Many probes of an unchanged agent log one line; each flip logs one more; a breaker transition its own."""
    health, url = health_server
    await register(applied, "planner", url)
    await register(applied, "worker-b", url)
    prober = HealthProber(applied, "lab", interval=INTERVAL)

    def lines() -> list[tuple[int, str]]:
        return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "swarm.bus.prober"]

    caplog.set_level(logging.DEBUG, logger="swarm.bus.prober")
    async with httpx.AsyncClient() as http:
        await rounds(prober, http, 4)
        assert lines() == [(logging.INFO, "health of planner: ok (200)"), (logging.INFO, "health of worker-b: ok (200)")]
        caplog.clear()
        health.status["planner"] = 503
        await rounds(prober, http, 2)  # two failures: under the threshold, the breaker stays closed
        assert lines() == [(logging.WARNING, "health of planner: failing (503), was ok")]
        caplog.clear()
        await rounds(prober, http, 2)  # the 4th failure opens the breaker: that transition is a change too
        assert lines() == [(logging.WARNING, "breaker of planner is now open (health 503)")]
        caplog.clear()
        health.status["planner"] = 200
        await asyncio.sleep(0.35)  # the cooldown
        await rounds(prober, http, 3)
        assert lines() == [(logging.INFO, "health of planner: ok (200), was failing"),
                           (logging.WARNING, "breaker of planner is now closed (health 200)")]
        caplog.clear()
        await applied.zadd("swarm:{lab}:leases", {"worker-b": 1})  # lease ended: forgotten
        await rounds(prober, http, 1)
        await register(applied, "worker-b", url)  # registered again: its first result is logged again
        await rounds(prober, http, 2)
        assert lines() == [(logging.INFO, "health of worker-b: ok (200)")]
