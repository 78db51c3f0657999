"""Fixtures of the bus tests: a small swarm's desired state, Redis with the bus applied,
a factory of connected EventBus instances and one of real router processes (all
against real redis-servers)."""

from __future__ import annotations

from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from swarm.bus.apply import apply_bus
from swarm.bus.bus import EventBus
from swarm.desired import DesiredState, desired_from_spec
from swarm.spec.models import Spec, SwarmDocument
from tests.support.router import router_factory  # noqa: F401  (fixture: real `swarm bus route` processes)
from tests.support.services import RedisServer

SECRET = "test-bus-secret"

SWARM_DOC: dict[str, Any] = {
    "apiVersion": "swarm/v1",
    "kind": "Swarm",
    "metadata": {"name": "lab"},
    "bus": {
        "redis_url": "redis://127.0.0.1:1/0",
        "dedup_window_seconds": 60,
        "max_payload_bytes": 4096,
        "visibility_timeout_seconds": 0.4,
        "max_deliveries": 2,
        "breaker": {"failure_threshold": 3, "cooldown_seconds": 0.3, "max_cooldown_seconds": 1.0},
    },
    "topics": [
        {"name": "tasks.research", "max_len": 1000},
        {"name": "tasks.summarize", "max_len": 1000},
        {"name": "tasks.admin.reset", "max_len": 100},
        {"name": "results.research", "max_len": 1000},
        {"name": "results.summary", "max_len": 1000},
    ],
    "roles": {
        "planner": {"publish": ["tasks.>"], "subscribe": ["results.*"], "deny": {"publish": ["tasks.admin.>"]}},
        "worker": {"publish": ["results.*"], "subscribe": ["tasks.*"]},
        "observer": {"subscribe": [">"]},
    },
    "agents": [
        {"id": "planner", "role": "planner", "port": 9001, "publishes": ["tasks.research", "tasks.summarize"],
         "subscribes": ["results.research", "results.summary"]},
        {"id": "worker-a", "role": "worker", "port": 9002, "publishes": ["results.research"],
         "subscribes": ["tasks.research"]},
        {"id": "worker-b", "role": "worker", "port": 9003, "publishes": ["results.summary"],
         "subscribes": ["tasks.research", "tasks.summarize"]},
        {"id": "watcher", "role": "observer", "port": 9004,
         "subscribes": ["tasks.research", "tasks.summarize", "results.research", "results.summary"]},
    ],
}


def make_desired(doc: dict[str, Any] | None = None) -> DesiredState:
    swarm = SwarmDocument.model_validate(doc or SWARM_DOC, strict=False)
    return desired_from_spec(Spec(swarm=swarm, agents=list(swarm.agents)), "sha256:test")


@pytest.fixture
def desired() -> DesiredState:
    return make_desired()


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def applied(admin: aioredis.Redis, desired: DesiredState) -> aioredis.Redis:
    """Redis with the test swarm's bus installed (users too)."""
    await apply_bus(admin, desired.bus, desired.acl, secret=SECRET)
    return admin


BusFactory = Callable[..., Awaitable[EventBus]]


@pytest.fixture
async def make_bus(redis_server: RedisServer, applied: aioredis.Redis) -> AsyncIterator[BusFactory]:
    """Connected buses loading settings from Redis; closed after the test."""
    made: list[EventBus] = []

    async def make(agent_id: str, **kwargs: Any) -> EventBus:
        kwargs.setdefault("redis_url", redis_server.url)
        bus = EventBus(swarm="lab", agent_id=agent_id, **kwargs)
        made.append(bus)
        return await bus.connect()

    yield make
    for bus in made:
        await bus.close()
