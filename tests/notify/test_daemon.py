"""``swarm reconcile --watch`` as a process notifies a real receiver: its passes, the protection flag and
the registry's events (a real registry on a redis-server of the test's own)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import redis

from tests.notify.test_delivery import add_notification
from tests.reconcile.conftest import Daemon
from tests.support.webhook import Receiver


def open_breaker(redis_url: str, agent: str) -> None:
    from swarm.bus.breaker import BreakerPolicy
    from swarm.bus.breaker_store import BreakerStore
    from swarm.redis_conn import async_client

    async def run() -> None:
        client = async_client(redis_url)
        try:
            store = BreakerStore(client, "research", BreakerPolicy.from_seconds(
                failure_threshold=0, cooldown_seconds=30, max_cooldown_seconds=60, probe_timeout_seconds=1))
            ticket = await store.acquire(agent)
            assert ticket is not None
            await store.record_failure(agent, ticket)
        finally:
            await client.aclose()

    asyncio.run(run())


def test_the_daemon_notifies_sync_protection_and_breaker(
    registry_factory: Any, redis_server: Any, spec_dir: Path, tmp_path: Path
) -> None:
    # no sweep after the first: the test alone sets and clears the protection flag
    live = registry_factory(redis_server, extra_args=["--no-probe", "--sweep-interval", "3600"])
    with Receiver() as receiver:
        add_notification(spec_dir, receiver.url)
        args = ["reconcile", str(spec_dir), "--watch", "--resync", "0.3", "--registry-url", live.url,
                "--redis-url", live.redis.url, "--compiled-dir", "", "-o", "json"]
        daemon = Daemon(args, cwd=tmp_path, live=live, log=tmp_path / "daemon.log").start()
        try:
            receiver.wait_for(1)
            r = redis.Redis.from_url(live.redis.url)
            try:
                r.set("swarm:{research}:protection", "1")  # what the registry's sweep sets on a mass expiry
                receiver.wait_for(2)
                r.delete("swarm:{research}:protection")
                receiver.wait_for(3)
            finally:
                r.close()
            assert live.register("summarizer").status_code in (200, 201)
            open_breaker(live.redis.url, "summarizer")
            receiver.wait_for(4)
            daemon.wait_for(lambda s: s.passes >= 5)  # resyncs went by: none of them is notified
        finally:
            assert daemon.stop() == 0, daemon.log.read_text()[-2000:]
        assert receiver.triggers() == ["on-sync-succeeded", "on-protection-mode", "on-protection-mode",
                                       "on-breaker-opened"], daemon.log.read_text()[-2000:]
        bodies = [r.body for r in receiver.requests]
        assert [b["details"].get("active") for b in bodies[1:3]] == [True, False]
        assert bodies[3]["details"]["agent"] == "summarizer"
