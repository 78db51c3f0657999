"""The watch's ``reset`` snapshot streamed a batch at a time (real registry, real Redis).

2,500 agents (five batches of 500). The snapshot is one SSE event whose batches
are separate ``data:`` lines: parsed, it is every agent as registered (written out
here field by field, the private metadata left out; the times are the lease's, read
from Redis); with one batch it is byte for byte the frame sse_starlette makes of
that value. Registrations made while the snapshot streams are not lost: each is in
the snapshot or comes as an event after it, in stream order, and applying the
events to the snapshot gives what the store lists at the end. Keep-alive pings
never land inside the snapshot event.
"""

from __future__ import annotations

import pytest
import asyncio
import json
import threading
from typing import Any

import httpx
import redis
from redis import asyncio as aioredis
from sse_starlette import ServerSentEvent

from swarm.registry.admission import resolve_registration
from swarm.registry.models import RegisterRequest
from swarm.registry.store import RegistryStore
from tests.registry.conftest import RegistryFactory, make_catalog
from tests.support.services import RedisServer

N = 2500
LATE = 40  # registered while the snapshot streams
NEVER = "9999999999999-0"  # an id the stream never produced: the watch answers with a snapshot
TTL_MS = 600_000
LEASES = "swarm:{research}:leases"
EVENTS = "swarm:{research}:events"


def _register(redis_server: RedisServer, catalog: Any, ids: list[str]) -> None:
    async def run() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        store = RegistryStore(client, "research")
        try:
            for n, agent_id in enumerate(ids):
                req = RegisterRequest(agent_id=agent_id, metadata={"secret_note": f"s{n}", "zone": f"z{n % 3}"})
                await store.register(resolve_registration(req, catalog), catalog)
        finally:
            await client.aclose()

    asyncio.run(run())


def _expected(n: int, agent_id: str, lease_expires_at: int) -> dict[str, Any]:
    """Agent ``n`` of a make_catalog(..., ttl_seconds=600) catalog as the watch shows it: registered
    by _register (metadata without the private ``secret_note``), lease untouched since."""
    return {
        "agent_id": agent_id, "agent_name": agent_id.title(), "host": None, "port": 9000 + n, "ttl_seconds": 600,
        "version": "1.0.0", "role": "worker", "health_url": None,
        "topics": {"publish": ["results.research"], "subscribe": ["tasks.research"]},
        "capabilities": ["research"], "metadata": {"zone": f"z{n % 3}"}, "declared": True,
        "registered_at": lease_expires_at - TTL_MS, "updated_at": lease_expires_at - TTL_MS,
        "lease_expires_at": lease_expires_at, "heartbeat_interval": 200.0, "status": "healthy",
    }


def _leases_and_last_id(redis_server: RedisServer) -> tuple[dict[str, int], str]:
    """Each agent's lease expiry (ms) and the event stream's last id, as Redis holds them."""
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        leases = {agent: int(score) for agent, score in r.zrange(LEASES, 0, -1, withscores=True)}
        [(last_id, _fields)] = r.xrevrange(EVENTS, count=1)
        return leases, last_id
    finally:
        r.close()


async def _read_events(url: str, headers: dict[str, str], until: int, on_first_chunk: Any = None
                       ) -> tuple[bytes, list[tuple[str, str, str]]]:
    """Raw bytes of the watch and its events (id, type, data) until ``until`` events after the reset."""
    raw = b""
    async with httpx.AsyncClient(headers=headers, timeout=60) as http:
        async with http.stream("GET", url + "/agents/watch", headers={"Last-Event-ID": NEVER}) as resp:
            assert resp.status_code == 200
            async for chunk in resp.aiter_bytes():
                if not raw and on_first_chunk is not None:
                    on_first_chunk()  # the snapshot has begun: its stream position is taken
                raw += chunk
                done = raw[:raw.rfind(b"\r\n\r\n") + 1]  # the complete frames
                if b"event: reset" in done and done.count(b"event: registered") >= until:
                    break
    events = []
    for block in raw.decode().split("\r\n\r\n"):
        fields: dict[str, list[str]] = {}
        for line in block.split("\r\n"):
            if line and not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields.setdefault(name, []).append(value)
        if "data" in fields:
            events.append((fields["id"][-1], fields["event"][-1], "\n".join(fields["data"])))
    return raw, events





def _id(text: str) -> tuple[int, int]:
    ms, seq = text.split("-")
    return int(ms), int(seq)


@pytest.mark.slow  # moved out of the quick suite (CI time budget)
def test_snapshot_streams_whole_and_loses_no_registration_made_meanwhile(
    registry_factory: RegistryFactory, redis_server: RedisServer
) -> None:
    reg = registry_factory(redis_server, extra_args=["--ping-interval", "0.05"])
    ids = [f"agent-{i:04d}" for i in range(N)]
    late = [f"late-{i:03d}" for i in range(LATE)]
    base = make_catalog(ids + late, ttl_seconds=600)
    catalog = base.model_copy(update={"settings": base.settings.model_copy(update={"private_metadata": ["secret_note"]})})
    reg.push(catalog)
    _register(redis_server, catalog, ids)
    leases, last_id = _leases_and_last_id(redis_server)  # before the late ones register

    writer = threading.Thread(target=_register, args=(redis_server, catalog, late))

    async def scenario() -> tuple[bytes, list[tuple[str, str, str]]]:
        result = await asyncio.wait_for(_read_events(reg.url, reg.read_headers(), until=LATE,
                                                     on_first_chunk=writer.start), 60)
        writer.join()
        return result

    raw, events = asyncio.run(scenario())
    reset_id, kind, data = events[0]
    assert kind == "reset"
    snapshot = json.loads(data)["agents"]
    in_snapshot = {a["agent_id"] for a in snapshot}
    assert in_snapshot == set(ids)  # complete, and the registrations made after its position come after it
    assert all("secret_note" not in a["metadata"] for a in snapshot)
    # streamed: the agents came in several data lines of one event, and no ping inside it
    reset_block = raw.split(b"\r\n\r\n")[[b"event: reset" in b for b in raw.split(b"\r\n\r\n")].index(True)]
    assert reset_block.count(b"\r\ndata: ") >= N // 500
    assert b": ping" not in reset_block
    # every agent as registered, in id order (no late one: their registrations come after the snapshot)
    assert snapshot == [_expected(n, agent_id, leases[agent_id]) for n, agent_id in enumerate(ids)]
    assert _id(reset_id) >= _id(last_id)

    after = events[1:]
    assert [e[1] for e in after] == ["registered"] * len(after)
    assert [_id(e[0]) for e in after] == sorted({_id(e[0]) for e in after})  # stream order, no repeat
    assert all(_id(e[0]) > _id(reset_id) for e in after)
    state = {a["agent_id"]: a for a in snapshot}
    for _id_, _kind, body in after:
        agent = json.loads(body)
        state[agent["agent_id"]] = agent
    assert sorted(state) == sorted(ids + late)  # every late registration: delivered after the snapshot


def test_a_one_batch_snapshot_is_the_sse_frame_of_its_value_byte_for_byte(
    registry_factory: RegistryFactory, redis_server: RedisServer
) -> None:
    reg = registry_factory(redis_server)
    ids = [f"agent-{i:03d}" for i in range(120)]
    base = make_catalog(ids, ttl_seconds=600)
    catalog = base.model_copy(update={"settings": base.settings.model_copy(update={"private_metadata": ["secret_note"]})})
    reg.push(catalog)
    _register(redis_server, catalog, ids)
    leases, last_id = _leases_and_last_id(redis_server)
    raw, events = asyncio.run(_read_events(reg.url, reg.read_headers(), until=0))
    agents = [_expected(n, agent_id, leases[agent_id]) for n, agent_id in enumerate(ids)]
    frame = ServerSentEvent(id=last_id, event="reset",
                            data=json.dumps({"agents": agents}, separators=(",", ":")), sep="\r\n").encode()
    start = raw.index(b"id: ")
    assert raw[start:start + len(frame)] == frame


def test_an_empty_snapshot_is_an_empty_list(registry_factory: RegistryFactory, redis_server: RedisServer) -> None:
    reg = registry_factory(redis_server)
    reg.push(make_catalog(["alpha"], ttl_seconds=600))
    raw, events = asyncio.run(_read_events(reg.url, reg.read_headers(), until=0))
    assert events[0][1] == "reset" and json.loads(events[0][2]) == {"agents": []}


def test_a_snapshot_entry_is_the_agents_json_with_filters_and_redaction() -> None:
    """Each agent is encoded by pydantic: compact JSON, non-ASCII text as UTF-8, large integers and
    floats as written; the capability and topic filters pass or drop it, the private metadata is
    left out for the read token."""
    from swarm.registry.auth import Reader
    from swarm.registry.models import Registration
    from swarm.registry.watch import _snapshot_json

    agent = Registration(
        agent_id="zurich-agent", agent_name="Zürich — 東京", ttl_seconds=30, version="1.0.0",
        topics={"publish": ["results.x"], "subscribe": ["tasks.x"]}, capabilities=["research"],
        metadata={"secret_note": "ß", "zone": "é", "weight": 1.5, "n": 10 ** 20}, declared=True,
        registered_at=1, updated_at=2, lease_expires_at=3, heartbeat_interval=10.0,
    )
    head = ('{"agent_id":"zurich-agent","agent_name":"Zürich — 東京","host":null,"port":null,"ttl_seconds":30,'
            '"version":"1.0.0","role":null,"health_url":null,'
            '"topics":{"publish":["results.x"],"subscribe":["tasks.x"]},"capabilities":["research"],')
    tail = ',"declared":true,"registered_at":1,"updated_at":2,"lease_expires_at":3,"heartbeat_interval":10.0,"status":"healthy"}'
    redacted = (head + '"metadata":{"zone":"é","weight":1.5,"n":100000000000000000000}' + tail).encode()
    whole = (head + '"metadata":{"secret_note":"ß","zone":"é","weight":1.5,"n":100000000000000000000}' + tail).encode()
    private = frozenset({"secret_note"})
    read_only = Reader()  # the read token: sees no private field
    cases = {
        (None, None): redacted,
        ("research", None): redacted,  # a capability it has
        (None, "tasks.x"): redacted,  # a topic it subscribes to
        (None, "results.x"): redacted,  # a topic it publishes on
        ("other", None): None,
        (None, "nope"): None,
        ("research", "nope"): None,  # both filters must pass
    }
    for (capability, topic), expected in cases.items():
        assert _snapshot_json(agent, capability, topic, private, read_only) == expected, (capability, topic)
    assert _snapshot_json(agent, None, None, frozenset(), read_only) == whole  # nothing private: nothing left out
