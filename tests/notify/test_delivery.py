"""Notifications sent to a real local HTTP receiver, from real reconcile passes and a real registry on Redis.

The receiver (tests/support/webhook.py) is an http.server on a free port; the passes run
against a registry (uvicorn subprocess) on a redis-server of the test's own. Whether
something was *not* sent is asserted after :meth:`Notifier.close`, which waits until
every queued notification went out, so no assertion depends on timing.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis

from prometheus_client import generate_latest

from swarm.notify.follow import follow_registry
from swarm.reconcile.metrics import ReconcileMetrics
from swarm.notify.sender import Notifier
from swarm.reconcile.loop import ReconcileConfig, Reconciler
from swarm.reconcile.observe import make_ports_factory
from swarm.registry.auth import admin_token
from swarm.spec.models import Notification
from tests.registry.conftest import TEST_SECRET, RegistryProcess
from tests.support.webhook import Receiver

ALL = ["on-sync-succeeded", "on-sync-failed", "on-drift-healed", "on-breaker-opened", "on-protection-mode",
       "on-agent-expired"]


def add_notification(spec_dir: Path, url: str, *, fmt: str = "json", triggers: list[str] = ALL) -> None:
    entry = {"name": "hook", "url": url, "format": fmt, "triggers": triggers, "headers": {"X-Team": "research"}}
    with open(spec_dir / "swarm.yaml", "a") as f:
        f.write(f"notifications: [{json.dumps(entry)}]\n")


def reconciler(live: RegistryProcess, spec_dir: Path, notifier: Notifier) -> Reconciler:
    config = ReconcileConfig(spec_paths=[spec_dir], registry_url=live.url, redis_url=live.redis.url)
    rec = Reconciler(config, make_ports_factory(admin_token(TEST_SECRET, "research"), TEST_SECRET))
    rec.on_pass_end = notifier.pass_ended
    return rec


@pytest.fixture
def notifier() -> Iterator[Notifier]:
    n = Notifier(backoff_base=0.05, backoff_cap=0.2)
    yield n
    n.close(timeout=2)


def test_a_successful_pass_sends_sync_succeeded_once(live: RegistryProcess, spec_dir: Path, notifier: Notifier) -> None:
    with Receiver() as receiver:
        add_notification(spec_dir, receiver.url)
        rec = reconciler(live, spec_dir, notifier)
        try:
            assert rec.run_pass("start").state == "synced"
            assert rec.run_pass("resync").state == "synced"  # nothing changed: nothing sent
        finally:
            rec.close()
        notifier.close()
        [request] = receiver.requests
        body = request.body
        assert body["trigger"] == "on-sync-succeeded" and body["swarm"] == "research" and body["version"] == 1
        assert body["details"]["digest"] == rec.good.digest  # type: ignore[union-attr]
        assert "push the registry catalog (6 declared agents)" in(body["details"]["actions"])
        assert request.headers["x-team"] == "research" and request.headers["content-type"] == "application/json"
        assert request.path == "/hook"


def test_an_invalid_spec_sends_sync_failed_with_file_line_col_once(
    live: RegistryProcess, spec_dir: Path, notifier: Notifier
) -> None:
    with Receiver() as receiver:
        add_notification(spec_dir, receiver.url, triggers=["on-sync-failed"])
        rec = reconciler(live, spec_dir, notifier)
        try:
            assert rec.run_pass("start").state == "synced"
            workers = spec_dir / "agents" / "workers.yaml"
            workers.write_text(workers.read_text().replace("role: worker", "role: wrker", 1))
            assert rec.run_pass("file").state == "invalid-spec"
            assert rec.run_pass("resync").state == "invalid-spec"  # the same error: not sent again
        finally:
            rec.close()
        notifier.close()
        [request] = receiver.requests
        body = request.body
        assert body["trigger"] == "on-sync-failed" and body["details"]["state"] == "invalid-spec"
        [issue] = body["details"]["issues"]
        assert re.fullmatch(r".*agents/workers\.yaml:7:7", issue["at"]), issue
        assert "role 'wrker' is not defined" in issue["message"]
        assert issue["at"] in body["summary"]


def expired_event(agent: str = "web-researcher") -> dict[str, str]:
    return {"type": "expired", "agent": agent, "data": json.dumps({"agent_id": agent, "role": "worker"})}


def configured(notifier: Notifier, url: str, **fields: Any) -> Notifier:
    note = Notification.model_validate({"name": "hook", "url": url, "triggers": ALL, **fields})
    notifier.configure("research", [note])
    notifier.active = True  # as after a pass of the lease holder
    return notifier


def test_a_receiver_failing_twice_with_500_gets_the_message_at_the_third_attempt(notifier: Notifier) -> None:
    with Receiver(statuses=[500, 500]) as receiver:
        configured(notifier, receiver.url).event(expired_event())
        notifier.close()
        assert len(receiver.requests) == 3
        assert len({r.raw for r in receiver.requests}) == 1  # the same notification each time
        assert receiver.requests[-1].body["trigger"] == "on-agent-expired"
        assert notifier.counts["hook"] == {"sent": 1, "gave_up": 0, "dropped": 0}


def test_gives_up_after_max_attempts_and_never_retries_a_4xx(notifier: Notifier) -> None:
    with Receiver(statuses=[503, 503, 503, 400]) as receiver:
        configured(notifier, receiver.url, max_attempts=3).event(expired_event("a"))
        receiver.wait_for(3)
        notifier.event(expired_event("b"))
        notifier.close()
        assert [r.body["details"]["agent"] for r in receiver.requests] == ["a", "a", "a", "b"]
        assert notifier.counts["hook"] == {"sent": 0, "gave_up": 2, "dropped": 0}
        metrics = ReconcileMetrics()
        metrics.track_notifications(notifier.snapshot)
        scraped = generate_latest(metrics.registry).decode()
        assert 'swarm_reconcile_notifications_total{outcome="gave_up",target="hook"} 2.0' in scraped
        assert 'swarm_reconcile_notifications_total{outcome="sent",target="hook"} 0.0' in scraped


def test_a_hanging_receiver_does_not_delay_passes(live: RegistryProcess, spec_dir: Path, notifier: Notifier) -> None:
    with Receiver(hold=True) as receiver:
        add_notification(spec_dir, receiver.url)
        rec = reconciler(live, spec_dir, notifier)
        try:
            assert rec.run_pass("start").state == "synced"
            assert receiver.arrived.wait(20), "the notification of the first pass never arrived"
            # the receiver holds that request unanswered; passes go on regardless
            workers = spec_dir / "agents" / "workers.yaml"
            workers.write_text(workers.read_text().replace("role: worker", "role: wrker", 1))
            assert rec.run_pass("file").state == "invalid-spec"
            assert rec.run_pass("resync").state == "invalid-spec"
            assert receiver.answered == 0 and len(receiver.requests) == 1  # still blocked, the second one queued
        finally:
            rec.close()
        receiver.release()
        notifier.close()
        assert receiver.triggers() == ["on-sync-succeeded", "on-sync-failed"]


def test_a_full_queue_drops_and_counts(notifier: Notifier) -> None:
    small = Notifier(queue_size=1, backoff_base=0.05, backoff_cap=0.2)
    try:
        with Receiver(hold=True) as receiver:
            configured(small, receiver.url).event(expired_event("a"))
            assert receiver.arrived.wait(20)  # "a" is out of the queue, its post hangs
            small.event(expired_event("b"))  # fills the queue
            small.event(expired_event("c"))  # dropped
            assert small.counts["hook"]["dropped"] == 1
            receiver.release()
            small.close()
            assert [r.body["details"]["agent"] for r in receiver.requests] == ["a", "b"]
    finally:
        small.close(timeout=1)


def test_slack_format_is_an_incoming_webhook_message(notifier: Notifier) -> None:
    with Receiver() as receiver:
        configured(notifier, receiver.url, format="slack").event(expired_event())
        notifier.close()
        [request] = receiver.requests
        body = request.body
        assert set(body) == {"text", "blocks"}
        assert body["text"] == "[swarm research] agent web-researcher expired: its lease ran out without a heartbeat"
        assert [b["type"] for b in body["blocks"]] == ["section", "context"]
        assert body["blocks"][0]["text"]["type"] == "mrkdwn" and "*research*" in body["blocks"][0]["text"]["text"]
        assert body["blocks"][1]["elements"][0]["text"].startswith("on-agent-expired · ")


def test_signed_requests_carry_the_hmac_of_the_body(notifier: Notifier) -> None:
    import hashlib
    import hmac

    signing = Notifier(env={"HOOK_KEY": "k3y"})
    try:
        with Receiver() as receiver:
            configured(signing, receiver.url, secret_env="HOOK_KEY").event(expired_event())
            signing.close()
            [request] = receiver.requests
            expected = "sha256=" + hmac.new(b"k3y", request.raw, hashlib.sha256).hexdigest()
            assert request.headers["x-swarm-signature-256"] == expected
    finally:
        signing.close(timeout=1)


# --------------------------------------------------------------------------- registry events


class Follower:
    """follow_registry on an event loop of its own thread (as the daemon runs it beside the passes)."""

    def __init__(self, notifier: Notifier, target: tuple[str, str]) -> None:
        self.loop = asyncio.new_event_loop()
        self.task: Any = None
        self.notifier, self.target = notifier, target
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(follow_registry(self.notifier, lambda: self.target, block_ms=200))
        try:
            self.loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass

    def __enter__(self) -> "Follower":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(lambda: self.task.cancel())
        self.thread.join(10)
        self.loop.close()


def test_breaker_opened_and_agent_expired_from_a_real_registry(
    registry_factory: Any, redis_server: Any, spec_dir: Path, notifier: Notifier
) -> None:
    from swarm.bus.breaker import BreakerPolicy
    from swarm.bus.breaker_store import BreakerStore
    from swarm.redis_conn import async_client

    live = registry_factory(redis_server, extra_args=["--no-probe", "--sweep-interval", "0.1"])
    with Receiver() as receiver:
        add_notification(spec_dir, receiver.url, triggers=["on-breaker-opened", "on-agent-expired"])
        rec = reconciler(live, spec_dir, notifier)
        try:
            assert rec.run_pass("start").state == "synced"  # configures the notifier from the spec
        finally:
            rec.close()
        with Follower(notifier, ("research", live.redis.url)):
            assert live.register("web-researcher").status_code in (200, 201)

            async def open_breaker() -> None:
                client = async_client(live.redis.url)
                try:
                    store = BreakerStore(client, "research", BreakerPolicy.from_seconds(
                        failure_threshold=0, cooldown_seconds=30, max_cooldown_seconds=60, probe_timeout_seconds=1))
                    ticket = await store.acquire("web-researcher")
                    assert ticket is not None
                    await store.record_failure("web-researcher", ticket)  # the first failure exceeds 0: open
                finally:
                    await client.aclose()

            asyncio.run(open_breaker())
            receiver.wait_for(1)
            r = redis.Redis.from_url(live.redis.url)
            try:  # the lease one second in the past (Redis clock): the registry's sweep evicts it
                seconds, micros = r.time()
                r.zadd("swarm:{research}:leases", {"web-researcher": seconds * 1000 + micros // 1000 - 1000})
            finally:
                r.close()
            receiver.wait_for(2)
        notifier.close()
        assert receiver.triggers() == ["on-breaker-opened", "on-agent-expired"]
        opened, expired = (r.body for r in receiver.requests)
        assert opened["details"]["agent"] == "web-researcher" and opened["details"]["failures"] == 1
        assert expired["details"] == {"agent": "web-researcher", "role": "worker", "version": "1.2.0",
                                      "capabilities": ["research", "web-search"]}


def test_a_standing_by_daemon_notifies_no_registry_event(notifier: Notifier) -> None:
    with Receiver() as receiver:
        configured(notifier, receiver.url).active = False  # another reconciler holds the lease: it notifies
        notifier.event(expired_event("a"))
        notifier.active = True
        notifier.event(expired_event("b"))
        notifier.close()
        assert [r.body["details"]["agent"] for r in receiver.requests] == ["b"]


def test_healed_drift_sends_drift_healed_and_no_second_success(
    live: RegistryProcess, spec_dir: Path, notifier: Notifier
) -> None:
    with Receiver() as receiver:
        add_notification(spec_dir, receiver.url)
        rec = reconciler(live, spec_dir, notifier)
        try:
            assert rec.run_pass("start").state == "synced"
            r = redis.Redis.from_url(live.redis.url)
            try:
                r.execute_command("ACL", "DELUSER", "swarm.research.web-researcher")  # drift made by hand
            finally:
                r.close()
            healed = rec.run_pass("resync")
            assert healed.state == "synced" and healed.applied
        finally:
            rec.close()
        notifier.close()
        assert receiver.triggers() == ["on-sync-succeeded", "on-drift-healed"]
        details = receiver.requests[1].body["details"]
        assert details["actions"] == [a.description for a in healed.applied]
        assert details["digest"] == rec.good.digest  # type: ignore[union-attr]


def test_a_standby_reconciler_sends_nothing_and_a_dry_run_never_calls_the_hook(
    live: RegistryProcess, spec_dir: Path, notifier: Notifier
) -> None:
    with Receiver() as receiver:
        add_notification(spec_dir, receiver.url)
        holder, standby_notifier = reconciler(live, spec_dir, notifier), Notifier()
        standby = reconciler(live, spec_dir, standby_notifier)
        dry = Reconciler(ReconcileConfig(spec_paths=[spec_dir], registry_url=live.url, redis_url=live.redis.url,
                                         dry_run=True),
                         make_ports_factory(admin_token(TEST_SECRET, "research"), TEST_SECRET))
        calls: list[str] = []
        dry.on_pass_end = lambda _source, result: calls.append(result.state)
        try:
            assert holder.run_pass("start").state == "synced"
            assert standby.run_pass("start").state == "standby"
            assert dry.run_pass("once").state == "synced"
        finally:
            for rec in (holder, standby, dry):
                rec.close()
        standby_notifier.close()
        notifier.close()
        assert standby_notifier.active is False and calls == []
        assert receiver.triggers() == ["on-sync-succeeded"]  # the holder's only
