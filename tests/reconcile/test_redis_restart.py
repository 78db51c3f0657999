"""A Redis restart heals by itself: the --watch daemon re-creates the ACL users at once.

Redis keeps ACL users in memory only (no aclfile): after a restart, even with the
append-only file keeping every stream, no agent can log in. The daemon reads
Redis' run_id every ``--redis-check`` seconds and starts a pass on a change, so
the users are back within a bounded wait far below the resync interval (set to
300 s here: the resync timer cannot be what heals it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import redis
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, ConnectionError as RedisConnectionError
from redis.retry import Retry

from swarm.bus.apply import bus_password
from swarm.keys import SwarmKeys
from swarm.spec.loader import load_spec_full
from tests.reconcile.conftest import Daemon
from tests.registry.conftest import TEST_SECRET, RegistryProcess

KEYS = SwarmKeys("research")
AGENT = "summarizer"
RESYNC = 300.0


def _agent_logs_in(live: RegistryProcess) -> bool:
    agent = redis.Redis(host="127.0.0.1", port=live.redis.port, username=KEYS.redis_user(AGENT),
                        password=bus_password(TEST_SECRET, "research", AGENT), retry=Retry(NoBackoff(), 0),
                        socket_timeout=2)
    try:
        return bool(agent.xadd(KEYS.outbox(AGENT), {"topic": "results.summary", "payload": "{}"}))
    except (AuthenticationError, RedisConnectionError):
        return False
    finally:
        agent.close()


def test_users_are_back_soon_after_a_redis_restart(
    live: RegistryProcess, spec_dir: Path, daemon_factory: Callable[..., Daemon]
) -> None:
    d = daemon_factory(spec_dir, "--resync", str(RESYNC), "--redis-check", "0.2")
    first = d.wait_for(lambda s: s.state == "synced" and s.last_applied is not None)
    assert _agent_logs_in(live)

    live.redis.restart()  # SIGTERM, then the same port and append-only file
    restarted = time.monotonic()
    client: Any = live.redis.client(decode_responses=True)
    try:
        assert client.exists(KEYS.outbox(AGENT)), "streams survive in the AOF"
        deadline = time.monotonic() + 15  # a bounded wait, far below the 300 s resync
        while not _agent_logs_in(live):
            assert d.alive(), d.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the users were not re-created:\n" + d.log.read_text()[-3000:]
            time.sleep(0.05)
        print(f"users back {time.monotonic() - restarted:.2f}s after the restart")  # a figure, not a claim
        declared = {a.id for a in load_spec_full(spec_dir).spec.agents}
        assert {u for u in client.acl_users() if u.startswith(KEYS.redis_user_prefix)} == {
            KEYS.redis_user(a) for a in declared}
    finally:
        client.close()
    # the daemon saw the restart and ran a pass for it. The registry re-creates missing users too
    # (for a swarm without a daemon): when it wins the race (more often on Valkey, whose restart is
    # quicker) that pass finds nothing to do; when the daemon wins, users are all it re-created
    healed = d.wait_for(lambda s: s.state == "synced" and s.last_attempted is not None
                        and "redis-restart" in s.last_attempted.trigger)
    assert healed.last_applied is not None and first.last_applied is not None
    if healed.last_applied.at != first.last_applied.at:
        assert "redis-restart" in healed.last_applied.trigger, healed.last_applied
        assert {a["kind"] for a in healed.last_applied.actions} == {"put-redis-user"}
    assert "Redis restarted" in d.log.read_text()
