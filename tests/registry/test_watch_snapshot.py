"""The watch's ``reset`` snapshot streamed a batch at a time (real registry, real Redis).

2,500 agents (five batches of 500). The snapshot is one SSE event whose batches
are separate ``data:`` lines: parsed, it is the same event as the old atomic
snapshot (``RegistryStore.snapshot``); with one batch it is byte for byte the old
frame. Registrations made while the snapshot streams are not lost: each is in
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


def _store_call(redis_server: RedisServer, catalog: Any, what: str) -> Any:
    async def run() -> Any:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            store = RegistryStore(client, "research")
            return await (store.snapshot(catalog) if what == "snapshot" else store.list(catalog))
        finally:
            await client.aclose()

    return asyncio.run(run())


def _redacted(agents: list[Any]) -> list[dict[str, Any]]:
    out = []
    for a in agents:
        data = a.model_dump(mode="json")
        data["metadata"] = {k: v for k, v in data["metadata"].items() if k != "secret_note"}
        out.append(data)
    return out


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
    old = _store_call(redis_server, catalog, "snapshot")  # the atomic snapshot the watch used to send

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
    # event equality with the old snapshot, for the agents both hold
    before = {a["agent_id"]: a for a in _redacted(old.agents)}
    assert [a for a in snapshot if a["agent_id"] in before] == [before[a] for a in sorted(before)]
    assert _id(reset_id) >= _id(old.last_id)

    after = events[1:]
    assert [e[1] for e in after] == ["registered"] * len(after)
    assert [_id(e[0]) for e in after] == sorted({_id(e[0]) for e in after})  # stream order, no repeat
    assert all(_id(e[0]) > _id(reset_id) for e in after)
    state = {a["agent_id"]: a for a in snapshot}
    for _id_, _kind, body in after:
        agent = json.loads(body)
        state[agent["agent_id"]] = agent
    assert set(late) <= set(state)  # every late registration: in the snapshot or delivered after it
    final = _store_call(redis_server, catalog, "list")
    assert sorted(state) == [a.agent_id for a in final]


def test_a_one_batch_snapshot_is_the_old_frame_byte_for_byte(
    registry_factory: RegistryFactory, redis_server: RedisServer
) -> None:
    reg = registry_factory(redis_server)
    ids = [f"agent-{i:03d}" for i in range(120)]
    base = make_catalog(ids, ttl_seconds=600)
    catalog = base.model_copy(update={"settings": base.settings.model_copy(update={"private_metadata": ["secret_note"]})})
    reg.push(catalog)
    _register(redis_server, catalog, ids)
    old = _store_call(redis_server, catalog, "snapshot")
    raw, events = asyncio.run(_read_events(reg.url, reg.read_headers(), until=0))
    frame = ServerSentEvent(id=old.last_id, event="reset",
                            data=json.dumps({"agents": _redacted(old.agents)}, separators=(",", ":")), sep="\r\n").encode()
    start = raw.index(b"id: ")
    assert raw[start:start + len(frame)] == frame


def test_an_empty_snapshot_is_an_empty_list(registry_factory: RegistryFactory, redis_server: RedisServer) -> None:
    reg = registry_factory(redis_server)
    reg.push(make_catalog(["alpha"], ttl_seconds=600))
    raw, events = asyncio.run(_read_events(reg.url, reg.read_headers(), until=0))
    assert events[0][1] == "reset" and json.loads(events[0][2]) == {"agents": []}


def test_a_snapshot_entry_is_the_old_json_value_with_filters_and_redaction() -> None:
    """Each agent is encoded by pydantic now: the same value as json.dumps of its dump (the old
    encoding), also for non-ASCII text and numbers; filters and redaction as on the dumped dict."""
    from swarm.registry.auth import Reader
    from swarm.registry.models import Registration, redact_metadata
    from swarm.registry.watch import _snapshot_json, matches

    agent = Registration(
        agent_id="zurich-agent", agent_name="Zürich — 東京", ttl_seconds=30, version="1.0.0",
        topics={"publish": ["results.x"], "subscribe": ["tasks.x"]}, capabilities=["research"],
        metadata={"secret_note": "ß", "zone": "é", "weight": 1.5, "n": 10 ** 20}, declared=True,
        registered_at=1, updated_at=2, lease_expires_at=3, heartbeat_interval=10.0,
    )
    private = frozenset({"secret_note"})
    read_only = Reader()  # the read token: sees no private field
    for capability, topic in ((None, None), ("research", None), (None, "tasks.x"), ("other", None), (None, "nope")):
        data = agent.model_dump(mode="json")
        old = (redact_metadata(data, private) if matches(data, capability, topic) else None)
        new = _snapshot_json(agent, capability, topic, private, read_only)
        assert (None if new is None else json.loads(new)) == old
    assert json.loads(_snapshot_json(agent, None, None, frozenset(), read_only) or b"")["metadata"]["secret_note"] == "ß"
