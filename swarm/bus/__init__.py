"""The event bus on Redis Streams, mediated: each agent writes its own outbox and reads its
own inbox (:class:`EventBus`); the trusted router checks, dedups and delivers; the shared
circuit breaker.

Generated agents use it like this (REDIS_URL carries the agent's own Redis user)::

    from swarm.bus import EventBus
    async with EventBus(redis_url=REDIS_URL, swarm=SWARM, agent_id=AGENT_ID) as bus:
        await bus.publish("results.research", {"done": 1})  # one XADD to the agent's outbox
        async for message in bus.subscribe():               # the agent's inbox
            ...
            await message.ack()

The Redis-backed names are imported lazily so that the pure modules
(:mod:`swarm.bus.dedup`, :mod:`swarm.bus.breaker`) load without the redis client.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from swarm.bus.apply import ApplyReport, apply_bus, bus_password
    from swarm.bus.breaker_store import BreakerStore
    from swarm.bus.bus import EventBus, Message, PublishResult
    from swarm.bus.prober import HealthProber
    from swarm.bus.router import Router

__all__ = [
    "ApplyReport",
    "BreakerStore",
    "EventBus",
    "HealthProber",
    "Message",
    "PublishResult",
    "Router",
    "apply_bus",
    "bus_password",
]

_WHERE = {
    "ApplyReport": "swarm.bus.apply",
    "apply_bus": "swarm.bus.apply",
    "bus_password": "swarm.bus.apply",
    "BreakerStore": "swarm.bus.breaker_store",
    "EventBus": "swarm.bus.bus",
    "Message": "swarm.bus.bus",
    "PublishResult": "swarm.bus.bus",
    "HealthProber": "swarm.bus.prober",
    "Router": "swarm.bus.router",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'swarm.bus' has no attribute {name!r}")
    return getattr(import_module(module), name)
