"""Faults with real processes: Redis stops, Redis restarts under load, the registry is SIGKILLed.

Each test is kept short (TTLs of a few seconds). Time bounds that are part of
the user's requirements ("recovers within 2 s of Redis returning") are checked
by polling with that deadline; everything else waits for a condition.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from swarm.registry import AgentRegistryClient
from tests.registry.conftest import RegistryFactory, RegistryProcess, SSEEvent, SSEReader, make_catalog
from tests.support.services import RedisServer


async def lease_of(http: httpx.AsyncClient, agent_id: str) -> int | None:
    r = await http.get(f"/agents/{agent_id}")
    return int(r.json()["lease_expires_at"]) if r.status_code == 200 else None


async def until(predicate: Any, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(step)
    return bool(await predicate())


# -- Redis stopped ---------------------------------------------------------------------


@pytest.mark.slow  # moved out of the quick suite (CI time budget)
async def test_redis_down_503_and_clients_recover_within_2s(
    registry: RegistryProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_HOST", "127.0.0.1")
    monkeypatch.setenv("AGENT_PORT", "8001")
    running = AgentRegistryClient(registry.url, "architect", ttl_seconds=3, heartbeat_interval=1,
                                  token=registry.agent_token("architect"))
    late = AgentRegistryClient(registry.url, "reviewer", ttl_seconds=3, heartbeat_interval=1,
                               token=registry.agent_token("reviewer"))
    async with running, late, httpx.AsyncClient(headers=registry.read_headers(), base_url=registry.url, timeout=5) as http:
        await running.register()
        await running.start_heartbeat_loop()

        registry.redis.stop()
        ready = await http.get("/health/ready")
        assert ready.status_code == 503 and ready.headers.get("retry-after")
        refused = await http.post("/agents/register", json={"agent_id": "reviewer"},
                                  headers=registry.agent_headers("reviewer"))
        assert refused.status_code == 503, refused.text
        assert refused.headers.get("retry-after") and refused.json()["error"] == "redis_unavailable"
        # an agent that starts during the outage: register fails, the loop keeps trying
        await late.start_heartbeat_loop()
        await asyncio.sleep(1.0)  # both loops retry against the outage (and must not die)
        assert running._heartbeat_task is not None and not running._heartbeat_task.done()
        assert late._heartbeat_task is not None and not late._heartbeat_task.done()
        assert not late.registered

        registry.redis.start()  # same port, same data dir (append-only)
        returned = time.monotonic()
        before = await lease_of(http, "architect")  # what Redis kept
        assert before is not None

        async def recovered() -> bool:
            lease = await lease_of(http, "architect")
            return lease is not None and lease > before and await lease_of(http, "reviewer") is not None

        assert await until(recovered, timeout=2.0), "clients did not recover within 2 s of Redis returning"
        assert time.monotonic() - returned < 2.5
        assert late.registered
        assert (await http.get("/health/ready")).status_code == 200


# -- 1,000 agents through a Redis restart ----------------------------------------------


HEARTBEATING, SILENT, TTL, PERIOD = 1000, 10, 8, 2.5


class KeepAlivePool:
    """A few raw HTTP/1.1 keep-alive connections: the lightest possible load driver.

    The test process must never be the bottleneck, or leases lapse for reasons
    that have nothing to do with the registry. httpx's pool costs ~2-4 ms of CPU
    per request under concurrency on this 2-core machine (224 req/s at 24
    concurrent, 522 at 4); writing the request line and reading the status line
    ourselves costs a small fraction of that.
    """

    def __init__(self, url: str, headers: dict[str, str], size: int = 4) -> None:
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = asyncio.Queue()
        for _ in range(size):
            self.idle.put_nowait(None)  # opened lazily

    async def post(self, path: str, body: bytes = b"") -> int:
        conn = await self.idle.get()
        try:
            if conn is None:
                conn = await asyncio.open_connection(self.host, self.port)
            reader, writer = conn
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.extra}"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
            )
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            return status
        except (OSError, asyncio.IncompleteReadError, IndexError, ValueError):
            if conn is not None:
                conn[1].close()
            conn = None
            raise ConnectionError(f"POST {path} failed") from None
        finally:
            self.idle.put_nowait(conn)

    async def close(self) -> None:
        while not self.idle.empty():
            conn = self.idle.get_nowait()
            if conn is not None:
                conn[1].close()


async def drive_heartbeats(pool: KeepAlivePool, ids: list[str], stop: asyncio.Event, stats: dict[str, int]) -> None:
    """Every agent registers, then heartbeats every PERIOD (spread evenly); failures
    retry after 0.2 s; a 404 re-registers. ``stats["max_gap_ms"]`` is the longest
    time any agent went without a renewal (measured on the driver's side).
    """

    def body(agent_id: str) -> bytes:
        return json.dumps({"agent_id": agent_id, "ttl_seconds": TTL}).encode()

    async def renew(agent_id: str) -> None:
        while not stop.is_set():
            try:
                status = await pool.post(f"/agents/{agent_id}/heartbeat")
                if status == 404:
                    stats["reregistered"] += 1
                    status = await pool.post("/agents/register", body(agent_id))
            except ConnectionError:
                stats["errors"] += 1
            else:
                if status in (200, 201):
                    stats["ok"] += 1
                    return
                stats[f"http_{status}"] = stats.get(f"http_{status}", 0) + 1
            await asyncio.sleep(0.2)

    async def agent(index: int, agent_id: str) -> None:
        status = await pool.post("/agents/register", body(agent_id))  # not inside +=: it would race
        stats["registered"] += status == 201
        last_ok = time.monotonic()
        await asyncio.sleep(PERIOD * index / len(ids))
        while not stop.is_set():
            await renew(agent_id)
            now = time.monotonic()
            stats["max_gap_ms"] = max(stats["max_gap_ms"], int((now - last_ok) * 1000))
            last_ok = now
            await asyncio.sleep(max(0.0, PERIOD - (time.monotonic() - now)))

    await asyncio.gather(*(agent(i, a) for i, a in enumerate(ids)))


@pytest.mark.slow
async def test_thousand_agents_heartbeating_through_redis_restart_none_evicted(
    redis_server: RedisServer, registry_factory: RegistryFactory
) -> None:
    # the mass-eviction guard is switched off so it cannot hide leases that lapsed
    registry = registry_factory(redis_server, extra_args=["--min-protect", "1000000", "--no-probe"])
    registry.push(make_catalog((), ttl_seconds=TTL, heartbeat_interval=1, allow_undeclared=True))
    beating = [f"agent-{i:04d}" for i in range(HEARTBEATING)]
    silent = [f"silent-{i:02d}" for i in range(SILENT)]  # the control: these must be evicted
    stats: dict[str, int] = {"registered": 0, "ok": 0, "errors": 0, "reregistered": 0, "max_gap_ms": 0}
    pool = KeepAlivePool(registry.url, registry.admin_headers())
    async with httpx.AsyncClient(base_url=registry.url, headers=registry.admin_headers(), timeout=10) as http:
        for agent_id in silent:
            answer = await http.post("/agents/register", json={"agent_id": agent_id, "ttl_seconds": TTL})
            assert answer.status_code == 201, answer.text
        stop = asyncio.Event()
        driver = asyncio.create_task(drive_heartbeats(pool, beating, stop, stats))
        try:
            async def one_round() -> bool:
                return stats["registered"] == HEARTBEATING and stats["ok"] >= HEARTBEATING

            assert await until(one_round, timeout=3 * TTL), f"not one round of heartbeats: {stats}"
            await asyncio.to_thread(redis_server.restart)  # SIGTERM, AOF replay on start
            restarted = time.time()

            async def silent_evicted() -> bool:
                r = await http.get("/agents")
                present = {a["agent_id"] for a in r.json()["agents"]} if r.status_code == 200 else set(silent)
                return not present & set(silent)

            # the control defines the wait: once the silent agents are gone, the
            # sweeper has acted on every lease that lapsed around the restart
            assert await until(silent_evicted, timeout=4 * TTL, step=0.25), "sweeper never evicted the control"
        finally:
            stop.set()
            driver.cancel()
            await asyncio.gather(driver, return_exceptions=True)
            await pool.close()

        status = (await http.get("/status")).json()
        agents = (await http.get("/agents")).json()
    redis_client: Any = redis_server.client(decode_responses=True)
    events = redis_client.xrange(f"swarm:{{{registry.swarm}}}:events")
    expired = sorted(fields["agent"] for _, fields in events if fields["type"] == "expired")
    wrong = sorted(set(expired) - set(silent))
    # if the driver itself fell behind (an overloaded machine), evictions would be
    # deserved: say so instead of blaming the registry
    assert stats.get("max_gap_ms", 0) < TTL * 1000, f"the heartbeat driver fell behind the TTL: {stats}"
    assert expired == sorted(silent), f"{len(wrong)} wrongly evicted, e.g. {wrong[:5]}; driver {stats}"
    assert agents["count"] == HEARTBEATING
    assert redis_client.zcard(f"swarm:{{{registry.swarm}}}:leases") == HEARTBEATING
    assert stats["reregistered"] == 0, stats  # Redis kept every registration (append-only)
    assert status["last_sweep"]["at"] > restarted and status["protection"] is False


# -- registry SIGKILLed ----------------------------------------------------------------


async def read_until(reader: SSEReader, predicate: Any, timeout: float = 5.0) -> list[SSEEvent]:
    events: list[SSEEvent] = []
    while True:
        event = await reader.next_event(timeout=timeout)
        events.append(event)
        if predicate(event):
            return events


def agent_of(event: SSEEvent) -> Any:
    data = event.json()
    return data.get("agent_id") if isinstance(data, dict) else None


def is_event(kind: str, agent_id: str) -> Any:
    return lambda e: e.event == kind and agent_of(e) == agent_id


@pytest.mark.slow  # moved out of the quick suite (CI time budget)
async def test_registry_sigkill_loses_nothing_and_watch_resumes_without_gap_or_repeat(
    registry: RegistryProcess, registry_factory: RegistryFactory
) -> None:
    for agent_id in ("architect", "reviewer"):
        assert registry.register(agent_id).status_code == 201
    timeout = httpx.Timeout(10, read=None)
    async with httpx.AsyncClient(headers=registry.read_headers(), base_url=registry.url, timeout=timeout) as http:
        async with http.stream("GET", "/agents/watch") as response:
            reader = SSEReader(response)
            assert (await http.post("/agents/register", json={"agent_id": "web-researcher"},
                                    headers=registry.agent_headers("web-researcher"))).status_code == 201
            seen = await read_until(reader, is_event("registered", "web-researcher"))
            last_id = seen[-1].id
            assert last_id
            registry.kill()  # SIGKILL: no shutdown code runs
            with pytest.raises((EOFError, httpx.HTTPError)):
                await reader.next_event(timeout=5)

    # while it is down another registry process serves the same swarm and Redis
    other = registry_factory(registry.redis)
    assert other.register("summarizer").status_code == 201
    r = httpx.delete(other.url + "/agents/reviewer", headers=other.agent_headers("reviewer"))
    assert r.status_code == 204
    registry.start()  # same port, same Redis
    assert registry.register("paper-researcher").status_code == 201

    async with httpx.AsyncClient(headers=registry.read_headers(), base_url=registry.url, timeout=timeout) as http:
        async with http.stream("GET", "/agents/watch", headers={"Last-Event-ID": last_id}) as response:
            assert response.status_code == 200
            resumed = await read_until(SSEReader(response), is_event("registered", "paper-researcher"))
        listed = {a["agent_id"] for a in (await http.get("/agents")).json()["agents"]}

    got = [(e.event, agent_of(e)) for e in resumed]
    assert got == [("registered", "summarizer"), ("deregistered", "reviewer"), ("registered", "paper-researcher")]
    ids = [e.id for e in resumed]
    assert len(set(ids)) == len(ids) and all(i is not None for i in ids)
    assert ids == sorted(ids, key=lambda i: tuple(int(p) for p in str(i).split("-")))
    assert last_id not in ids  # nothing seen before the kill is repeated
    redis_client: Any = registry.redis.client(decode_responses=True)
    stream = redis_client.xrange(f"swarm:{{{registry.swarm}}}:events", min=f"({last_id}", max="+")
    assert [entry_id for entry_id, _ in stream] == ids  # nothing in the stream was skipped
    # no registration was lost to the SIGKILL
    assert listed == {"architect", "web-researcher", "summarizer", "paper-researcher"}


# -- Redis refusing commands -------------------------------------------------------------


def test_redis_refusing_writes_is_503_with_retry_after_not_500(registry: RegistryProcess) -> None:
    """OOM (and READONLY, NOPERM, BUSY: all ResponseError) is Redis unavailable, not a bug."""
    assert registry.register("architect").status_code == 201
    r = registry.redis.client()
    try:
        r.config_set("maxmemory", "1")  # type: ignore[attr-defined]
        refused = registry.register("reviewer")
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"] == "redis_unavailable"
        assert "maxmemory" in refused.json()["detail"]
    finally:
        r.config_set("maxmemory", "0")  # type: ignore[attr-defined]
        r.close()  # type: ignore[attr-defined]
    assert registry.register("reviewer").status_code == 201
    log = registry.log_text()
    assert "503" in log and "maxmemory" in log
    assert "Traceback" not in log
