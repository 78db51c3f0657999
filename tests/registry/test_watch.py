"""GET /agents/watch: SSE from the capped event stream, with real redis-py and redis-server."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.registry.conftest import RegistryFactory, RegistryProcess, SSEReader
from tests.support.services import RedisServer


async def areg(http: httpx.AsyncClient, reg: RegistryProcess, agent_id: str, **body: object) -> httpx.Response:
    return await http.post(reg.url + "/agents/register", json={"agent_id": agent_id, **body},
                           headers=reg.agent_headers(agent_id))


async def test_events_arrive_for_every_change(registry: RegistryProcess) -> None:
    async with httpx.AsyncClient(headers=registry.read_headers(), timeout=10) as http:
        async with http.stream("GET", registry.url + "/agents/watch") as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            sse = SSEReader(resp)
            assert (await areg(http, registry, "architect")).status_code == 201
            ev = await sse.next_event()
            assert ev.event == "registered" and ev.json()["agent_id"] == "architect"  # type: ignore[index]
            assert ev.id is not None and "-" in ev.id
            await areg(http, registry, "architect")  # same again: no event
            await areg(http, registry, "architect", host="h2")
            ev2 = await sse.next_event()
            assert ev2.event == "updated" and ev2.json()["host"] == "h2"  # type: ignore[index]
            await http.delete(registry.url + "/agents/architect", headers=registry.agent_headers("architect"))
            ev3 = await sse.next_event()
            assert ev3.event == "deregistered" and ev3.json()["agent_id"] == "architect"  # type: ignore[index]
            await asyncio.to_thread(registry.push, None, "rev-2")  # same catalog, new revision: no event
            from tests.registry.conftest import make_catalog

            await asyncio.to_thread(registry.push, make_catalog(["alpha"]), "rev-3")
            ev4 = await sse.next_event()
            assert ev4.event == "catalog-changed" and ev4.json()["revision"] == "rev-3"  # type: ignore[index]
            assert ev.id < ev2.id < ev3.id < ev4.id  # type: ignore[operator]


async def test_resume_with_last_event_id_has_no_gap_and_no_repeat(registry: RegistryProcess) -> None:
    ids = ["architect", "reviewer", "summarizer", "paper-researcher", "web-researcher"]
    async with httpx.AsyncClient(headers=registry.read_headers(), timeout=10) as http:
        async with http.stream("GET", registry.url + "/agents/watch") as resp:
            sse = SSEReader(resp)
            await areg(http, registry, ids[0])
            await areg(http, registry, ids[1])
            first = [await sse.next_event(), await sse.next_event()]
        last_id = first[-1].id
        # changes while disconnected
        await areg(http, registry, ids[2])
        await areg(http, registry, ids[3])
        seen = []
        async with http.stream("GET", registry.url + "/agents/watch", headers={"Last-Event-ID": last_id}) as resp:
            sse = SSEReader(resp)
            seen.append(await sse.next_event())
            seen.append(await sse.next_event())
            await areg(http, registry, ids[4])  # live, after the backlog
            seen.append(await sse.next_event())
        assert [e.json()["agent_id"] for e in seen] == ids[2:]  # type: ignore[index]
        assert len({e.id for e in first + seen}) == 5
        # the query parameter form resumes the same way
        async with http.stream("GET", registry.url + "/agents/watch",
                               params={"last_event_id": seen[0].id}) as resp:
            with_query = await SSEReader(resp).next_event()
        assert with_query.id == seen[1].id
        bad = await http.get(registry.url + "/agents/watch", headers={"Last-Event-ID": "garbage"})
        assert bad.status_code == 422


async def test_trimmed_resume_id_gets_reset_with_snapshot(registry_factory: RegistryFactory) -> None:
    reg = registry_factory(extra_args=["--events-maxlen", "1"])
    reg.push()
    async with httpx.AsyncClient(headers=reg.read_headers(), timeout=10) as http:
        async with http.stream("GET", reg.url + "/agents/watch") as resp:
            sse = SSEReader(resp)
            await areg(http, reg, "architect")
            old = await sse.next_event()
        # MAXLEN ~ trims whole macro nodes: push enough events that the old one goes
        r = reg.redis.client()
        for i in range(300):
            r.xadd("swarm:{research}:events", {"type": "noise", "agent": "", "data": "{}"},  # type: ignore[attr-defined]
                   maxlen=1, approximate=False)
        r.close()  # type: ignore[attr-defined]
        await areg(http, reg, "reviewer")
        async with http.stream("GET", reg.url + "/agents/watch", headers={"Last-Event-ID": old.id}) as resp:
            sse = SSEReader(resp)
            reset = await sse.next_event()
            assert reset.event == "reset"
            agents = reset.json()["agents"]  # type: ignore[index]
            assert sorted(a["agent_id"] for a in agents) == ["architect", "reviewer"]
            await areg(http, reg, "summarizer")
            live = await sse.next_event()
            assert live.event == "registered" and live.json()["agent_id"] == "summarizer"  # type: ignore[index]
            assert live.id > reset.id  # type: ignore[operator]


async def test_resume_after_redis_lost_its_data_gets_reset(registry: RegistryProcess) -> None:
    async with httpx.AsyncClient(headers=registry.read_headers(), timeout=10) as http:
        async with http.stream("GET", registry.url + "/agents/watch") as resp:
            sse = SSEReader(resp)
            await areg(http, registry, "architect")
            old = await sse.next_event()
        # Redis comes back empty (no persistence): architect is gone with no event
        r = registry.redis.client()
        r.delete("swarm:{research}:events", "swarm:{research}:leases", "swarm:{research}:agent:architect")  # type: ignore[attr-defined]
        r.close()  # type: ignore[attr-defined]
        await areg(http, registry, "reviewer")  # the new stream already has a (later) event
        async with http.stream("GET", registry.url + "/agents/watch", headers={"Last-Event-ID": old.id}) as resp:
            sse = SSEReader(resp)
            reset = await sse.next_event()
            assert reset.event == "reset"
            assert [a["agent_id"] for a in reset.json()["agents"]] == ["reviewer"]  # type: ignore[index]
            await areg(http, registry, "summarizer")
            live = await sse.next_event()
            assert live.event == "registered" and live.json()["agent_id"] == "summarizer"  # type: ignore[index]


async def test_filters_by_capability_and_topic(registry: RegistryProcess) -> None:
    async with httpx.AsyncClient(headers=registry.read_headers(), timeout=10) as http:
        async with http.stream("GET", registry.url + "/agents/watch", params={"capability": "citations"}) as a, \
                http.stream("GET", registry.url + "/agents/watch", params={"topic": "tasks.summarize"}) as b:
            by_cap, by_topic = SSEReader(a), SSEReader(b)
            for agent_id in ("architect", "reviewer", "paper-researcher"):
                await areg(http, registry, agent_id)
            assert (await by_cap.next_event()).json()["agent_id"] == "paper-researcher"  # type: ignore[index]
            assert (await by_topic.next_event()).json()["agent_id"] == "architect"  # type: ignore[index]
            await areg(http, registry, "summarizer")  # neither filter matches ...
            await areg(http, registry, "web-researcher")  # ... this one has capability research only
            await http.delete(registry.url + "/agents/paper-researcher",
                              headers=registry.agent_headers("paper-researcher"))
            ev = await by_cap.next_event()
            assert ev.event == "deregistered" and ev.json()["agent_id"] == "paper-researcher"  # type: ignore[index]


async def test_keep_alive_comments(registry_factory: RegistryFactory) -> None:
    reg = registry_factory(extra_args=["--ping-interval", "0.2"])
    async with httpx.AsyncClient(headers=reg.read_headers(), timeout=10) as http:
        async with http.stream("GET", reg.url + "/agents/watch") as resp:
            comment = await SSEReader(resp).next_comment(timeout=5)
            assert comment.startswith("ping")


async def test_many_watchers_share_one_reader_and_all_receive(registry: RegistryProcess) -> None:
    async with httpx.AsyncClient(headers=registry.read_headers(), timeout=10) as http:
        streams = [http.stream("GET", registry.url + "/agents/watch") for _ in range(5)]
        responses = [await s.__aenter__() for s in streams]
        try:
            readers = [SSEReader(r) for r in responses]
            metrics = (await http.get(registry.url + "/metrics")).text
            assert "swarm_registry_watchers 5.0" in metrics
            await areg(http, registry, "architect")
            events = await asyncio.gather(*(r.next_event() for r in readers))
            assert {e.id for e in events} == {events[0].id}
            # ONE Redis reader for the five watchers: a single connection ever ran XREAD
            r = registry.redis.client()
            readers_in_redis = [c for c in r.client_list() if c["cmd"] == "xread"]  # type: ignore[attr-defined]
            r.close()  # type: ignore[attr-defined]
            assert len(readers_in_redis) == 1, readers_in_redis
        finally:
            for s in streams:
                await s.__aexit__(None, None, None)


async def test_watch_responses_never_streamed_leave_no_subscriber(registry: RegistryProcess) -> None:
    async with httpx.AsyncClient(headers=registry.read_headers(), timeout=10) as http:
        for _ in range(3):  # HEAD answers the headers and never iterates the stream
            head = await http.head(registry.url + "/agents/watch")
            assert head.status_code == 200 and head.headers["content-type"].startswith("text/event-stream")
        assert "swarm_registry_watchers 0.0" in (await http.get(registry.url + "/metrics")).text
        async with http.stream("GET", registry.url + "/agents/watch") as resp:
            sse = SSEReader(resp)
            await areg(http, registry, "architect")
            assert (await sse.next_event()).event == "registered"
            assert "swarm_registry_watchers 1.0" in (await http.get(registry.url + "/metrics")).text
        for _ in range(50):  # the server notices the closed stream on its next write or ping
            if "swarm_registry_watchers 0.0" in (await http.get(registry.url + "/metrics")).text:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the closed watch was not unsubscribed")


async def test_slow_subscriber_overflows_and_is_dropped() -> None:
    from swarm.registry.watch import Entry, Subscriber

    sub = Subscriber(limit=2)
    for i in range(3):
        sub.offer(Entry(f"{i}-0", {"type": "registered"}))
    assert sub.overflowed
    assert await sub.next(timeout=0.1) is None  # the stream ends; the client resumes by Last-Event-ID
    ok = Subscriber(limit=2)
    ok.offer(Entry("1-0", {"type": "registered", "data": "{}"}))
    got = await ok.next(timeout=0.1)
    assert got == Entry("1-0", {"type": "registered", "data": "{}"})
    assert got is not None and got.frame() == b"id: 1-0\r\nevent: registered\r\ndata: {}\r\n\r\n"
    assert await ok.next(timeout=0.05) is None  # nothing more: timeout


async def test_watcher_that_falls_behind_is_disconnected_and_resumes_without_gap(
    registry_factory: RegistryFactory,
) -> None:
    reg = registry_factory(extra_args=["--watch-queue-size", "5"])
    reg.push()
    async with httpx.AsyncClient(headers=reg.read_headers(), timeout=10) as http:
        async with http.stream("GET", reg.url + "/agents/watch") as resp:
            sse = SSEReader(resp)
            await areg(http, reg, "architect")
            last = await sse.next_event()
            # 20 events in one transaction: the hub's one XREAD hands all of them to this
            # client's buffer of 5 before it can send any, so it overflows
            r = reg.redis.client()
            with r.pipeline(transaction=True) as pipe:  # type: ignore[attr-defined]
                for i in range(20):
                    pipe.xadd("swarm:{research}:events", {"type": "noise", "agent": "", "data": f'{{"n":{i}}}'})
                added = [x.decode() for x in pipe.execute()]
            r.close()  # type: ignore[attr-defined]
            got = []
            with pytest.raises(EOFError):  # the server ends the stream
                while True:
                    got.append(await sse.next_event())
        assert "fell 5 events behind" in reg.log_text()
        ids = [e.id for e in got]
        resume_from = ids[-1] if ids else last.id
        async with http.stream("GET", reg.url + "/agents/watch", headers={"Last-Event-ID": resume_from}) as resp:
            sse = SSEReader(resp)
            rest = [await sse.next_event() for _ in range(20 - len(got))]
        assert ids + [e.id for e in rest] == added  # every event once, in order
        assert [e.json()["n"] for e in got + rest] == list(range(20))  # type: ignore[index]


async def test_shutdown_ends_open_watches_cleanly(registry: RegistryProcess) -> None:
    async with httpx.AsyncClient(headers=registry.read_headers(), timeout=10) as http:
        async with http.stream("GET", registry.url + "/agents/watch") as resp:
            sse = SSEReader(resp)
            await areg(http, registry, "architect")
            assert (await sse.next_event()).event == "registered"
            code = await asyncio.to_thread(registry.stop)  # SIGTERM
            with pytest.raises(EOFError):  # a complete body, not a protocol error (cut chunked stream)
                await sse.next_event()
    log = registry.log_text()
    assert code in (0, -15), log[-2000:]
    assert "without completing response" not in log  # uvicorn's ERROR for a cut response


def test_filter_matching() -> None:
    from swarm.registry.watch import matches

    agent = {"capabilities": ["a"], "topics": {"publish": ["t.x"], "subscribe": ["t.y"]}}
    assert matches(agent, None, None)
    assert matches(agent, "a", "t.y")
    assert not matches(agent, "b", None)
    assert not matches(agent, None, "t.z")
    assert matches({"revision": "r"}, "b", "t.z")  # catalog-changed passes any filter


@pytest.mark.slow  # moved out of the quick suite (CI time budget)
async def test_watch_continues_after_redis_restarts(registry: RegistryProcess) -> None:
    async with httpx.AsyncClient(headers=registry.read_headers(), timeout=10) as http:
        async with http.stream("GET", registry.url + "/agents/watch") as resp:
            sse = SSEReader(resp)
            await areg(http, registry, "architect")
            first = await sse.next_event()
            await asyncio.to_thread(registry.redis.restart)  # append-only: data and stream survive
            for _ in range(50):  # the registry's pooled connections notice the restart on first use
                if (await areg(http, registry, "reviewer")).status_code == 201:
                    break
                await asyncio.sleep(0.1)
            ev = await sse.next_event(timeout=10)
            assert ev.event == "registered" and ev.json()["agent_id"] == "reviewer"  # type: ignore[index]
            assert ev.id > first.id  # type: ignore[operator]


async def test_stream_trimmed_while_backlog_is_read_gets_reset_not_gap(registry_factory: RegistryFactory) -> None:
    """A slow client reading a long backlog while churn trims the capped stream: the
    next backlog page would silently start at the oldest kept entry; instead the
    client gets every event id contiguously, or a reset snapshot."""
    reg = registry_factory(extra_args=["--events-maxlen", "1100", "--watch-queue-size", "5000"])
    reg.push()
    key = "swarm:{research}:events"
    r = reg.redis.client()
    async with httpx.AsyncClient(headers=reg.read_headers(), timeout=10) as http:
        async with http.stream("GET", reg.url + "/agents/watch") as resp:
            sse = SSEReader(resp)
            await areg(http, reg, "architect")
            old = await sse.next_event()
        assert old.id is not None
        # a full first backlog page of big events: far more than the socket buffers hold,
        # so the server is still sending page 1 when the churn below trims the stream
        big = '"' + "x" * 30_000 + '"'
        pipe = r.pipeline(transaction=False)  # type: ignore[attr-defined]
        for _ in range(1050):
            pipe.xadd(key, {"type": "noise", "agent": "", "data": big})
        produced: list[str] = [old.id, *(i.decode() for i in pipe.execute())]
        async with http.stream("GET", reg.url + "/agents/watch", headers={"Last-Event-ID": old.id}) as resp:
            sse = SSEReader(resp)
            received = [await sse.next_event()]
            pipe = r.pipeline(transaction=False)  # type: ignore[attr-defined]
            for _ in range(1200):
                pipe.xadd(key, {"type": "noise", "agent": "", "data": "{}"}, maxlen=1100, approximate=False)
            produced += [i.decode() for i in pipe.execute()]
            await areg(http, reg, "summarizer")
            while True:
                ev = await sse.next_event()
                received.append(ev)
                if ev.event in ("registered", "reset"):
                    break
            if ev.event == "reset":  # it includes summarizer; then live events follow it
                assert "summarizer" in [a["agent_id"] for a in ev.json()["agents"]]  # type: ignore[index]
                await areg(http, reg, "reviewer")
                received.append(await sse.next_event())
        r.close()  # type: ignore[attr-defined]
        produced += [e.id for e in received if e.event in ("registered", "reset")]  # type: ignore[misc]
        position = {event_id: n for n, event_id in enumerate(produced)}
        previous = old.id
        resets = 0
        for ev in received:
            assert ev.id is not None
            if ev.event == "reset":
                resets += 1
            else:
                assert position[ev.id] == position[previous] + 1, f"gap after {previous}: got {ev.id}"
            previous = ev.id
        assert resets <= 1
        assert received[-1].event == "registered"


def test_hub_reader_socket_timeout_is_block_plus_margin() -> None:
    from swarm.registry.config import RegistryConfig
    from swarm.registry.server import RegistryApp
    from swarm.registry.watch import READ_MARGIN, reader_socket_timeout

    app = RegistryApp(RegistryConfig(swarm="research", insecure=True, probe=False))
    timeout = app.reader.connection_pool.connection_kwargs["socket_timeout"]
    assert timeout == reader_socket_timeout(app.hub.block_ms) == app.hub.block_ms / 1000 + READ_MARGIN
    assert timeout is not None and timeout > app.hub.block_ms / 1000


@pytest.mark.slow  # moved out of the quick suite (CI time budget)
async def test_hub_reconnects_when_its_connection_silently_dies(redis_server: RedisServer) -> None:
    """A NAT or firewall drops the hub's TCP flow without a reset: the blocked XREAD
    times out past block + margin, and the reader reconnects instead of hanging."""
    import redis.asyncio as aioredis

    from swarm.registry.models import AgentFields
    from swarm.registry.store import RegistryStore
    from swarm.registry.watch import WatchHub, reader_client

    flows: list[dict[str, Any]] = []

    async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, flow: dict[str, Any]) -> None:
        while data := await src.read(65536):
            if not flow["dead"]:  # a dead flow swallows everything, both ways
                dst.write(data)
                await dst.drain()

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", redis_server.port)
        flow: dict[str, Any] = {"dead": False, "writers": [writer, up_w]}
        flows.append(flow)
        await asyncio.gather(pump(reader, up_w, flow), pump(up_r, writer, flow), return_exceptions=True)

    def agent(i: int) -> AgentFields:
        return AgentFields(agent_id=f"a{i}", agent_name="a", host="h", port=1, ttl_seconds=60, version="1",
                           role="w", health_url="", capabilities=[], metadata={}, declared=False,
                           topics={"publish": [], "subscribe": []})

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    direct = aioredis.Redis.from_url(redis_server.url)
    reader = reader_client(f"redis://127.0.0.1:{port}/0", block_ms=300, margin=1.0)
    store = RegistryStore(direct, "hang")
    hub = WatchHub(reader, store, block_ms=300)
    sub = hub.subscribe()
    stop = asyncio.Event()
    task = asyncio.create_task(hub.run(stop))
    try:
        while hub.reads == 0:  # the hub is reading through the proxy
            await asyncio.sleep(0.05)
        await store.register(agent(0), None)
        first = await sub.next(timeout=10)
        assert first is not None and first.fields["agent"] == "a0"
        for flow in flows:
            flow["dead"] = True
        await store.register(agent(1), None)
        second = await sub.next(timeout=15)  # hangs forever (None) without the socket timeout
        assert second is not None and second.fields["agent"] == "a1"
    finally:
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await reader.aclose()
        await direct.aclose()
        for flow in flows:
            for w in flow["writers"]:
                w.close()
        server.close()
        await server.wait_closed()


async def test_hub_logs_and_keeps_running_on_refusals_and_odd_errors(caplog: pytest.LogCaptureFixture) -> None:
    import redis.exceptions as rexc

    from swarm.registry.watch import WatchHub

    class Keys:
        events = "swarm:{t}:events"

    class Store:
        keys = Keys()

        async def last_event_id(self) -> str:
            return "0-0"

    class Reader:
        def __init__(self) -> None:
            self.replies: list[Any] = [rexc.ResponseError("NOPERM no permissions"), RuntimeError("odd reply"),
                                       [(b"k", [(b"1-1", {b"type": b"registered", b"data": b"{}"})])]]

        async def xread(self, streams: dict[str, str], count: int, block: int) -> Any:
            reply = self.replies.pop(0) if self.replies else None
            if isinstance(reply, Exception):
                raise reply
            if reply is None:
                await asyncio.sleep(0.01)
            return reply

    hub = WatchHub(Reader(), Store(), block_ms=10)  # type: ignore[arg-type]
    sub = hub.subscribe()
    stop = asyncio.Event()
    task = asyncio.create_task(hub.run(stop))
    try:
        entry = await sub.next(timeout=10)
        assert entry is not None and entry.id == "1-1"
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
    messages = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "swarm.registry.watch"]
    assert ("WARNING", "watch reader: watch read: Redis refused it: NOPERM no permissions; retrying") in messages
    assert ("ERROR", "watch reader failed; retrying") in messages
