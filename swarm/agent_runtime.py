"""The part of a compiled agent server that is the same for every agent.

``swarm compile`` writes ``compiled/<swarm>/agents/<id>/server.py`` with the agent's
configuration, its registry wiring and its health routes; the readiness bookkeeping
and the event-bus loop (connect with backoff, consume, call the handler, await its
publishes, ack) live here. Only the standard library and :mod:`swarm.errors` are
imported at run time, so an agent without bus or registry needs neither redis nor httpx.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from typing import TYPE_CHECKING, Any, Callable

from swarm.errors import PermanentError

if TYPE_CHECKING:
    from swarm.bus import EventBus
    from swarm.bus.bus import Message

#: Backoff between attempts while a dependency is down (seconds, doubled up to the cap, with jitter).
RETRY_INITIAL = 0.5
RETRY_CAP = 10.0


class AgentState:
    """What /health/ready reports: every startup step done, nothing crashed.

    ``checks`` maps each startup step (in the order /health/ready lists them) to a
    callable that says whether it is done.
    """

    def __init__(self) -> None:
        self.checks: dict[str, Callable[[], bool]] = {}
        self.tasks: list[asyncio.Task[None]] = []

    def pending(self) -> list[str]:
        return [name for name, done in self.checks.items() if not done()]


def level_of(exc: BaseException) -> int:
    """Refusals (PermanentError) are errors an operator must fix; outages are warnings."""
    return logging.ERROR if isinstance(exc, PermanentError) else logging.WARNING


async def backoff(delay: float) -> float:
    """Sleep ``delay`` plus jitter and return the next, capped delay."""
    await asyncio.sleep(delay + random.uniform(0, delay / 2))
    return min(delay * 2, RETRY_CAP)


class Publisher:
    """The handler's ``publish(topic, payload, message_id=None)``, for sync and async handlers.

    Each call starts the publish at once and returns it as an awaitable task: an
    async handler may ``await publish(...)``; a sync handler just calls it. The
    server awaits every publish a handler started before it acks the message.
    """

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.started: list[asyncio.Task[Any]] = []

    def __call__(self, topic: str, payload: Any, *, message_id: str | None = None) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(self.bus.publish(topic, payload, message_id=message_id))
        self.started.append(task)
        return task

    async def settle(self) -> None:
        """Wait for every started publish; raise the first failure (after all have finished)."""
        results = await asyncio.gather(*self.started, return_exceptions=True)
        for result in results:
            if isinstance(result, asyncio.CancelledError):
                raise RuntimeError("a publish was cancelled before it finished")
            if isinstance(result, BaseException):
                raise result


async def handle(message: Message, handler: Callable[..., Any], bus: EventBus, log: logging.Logger) -> None:
    """Call the handler, then wait for its publishes; ack only when all succeeded,
    so a failure (of the handler or of one of its publishes) is redelivered later."""
    publish = Publisher(bus)
    try:
        try:
            result = handler(message, publish)
            if inspect.isawaitable(result):
                await result
        finally:
            await publish.settle()
    except Exception:
        log.exception("handler failed on %s (%s); left unacked for redelivery", message.message_id, message.topic)
        return
    await message.ack()


async def run_bus(
    bus: EventBus,
    subscribes: list[str],
    handler: Callable[..., Any],
    log: logging.Logger,
    connected: asyncio.Event,
) -> None:
    """Connect (retrying while Redis is down), set ``connected``, then consume ``subscribes``."""
    delay = RETRY_INITIAL
    while True:
        try:
            await bus.connect()
            break
        except Exception as exc:  # Redis down or the bus not applied yet: keep trying, never crash
            log.log(level_of(exc), "connecting to the bus failed (%s); retrying", exc)
            delay = await backoff(delay)
    connected.set()
    if not subscribes:
        return
    delay = RETRY_INITIAL
    while True:
        try:
            async for message in bus.subscribe(subscribes):
                await handle(message, handler, bus, log)
                delay = RETRY_INITIAL
            log.warning("subscription ended; resubscribing")
            delay = await backoff(delay)
        except Exception as exc:  # e.g. no consumer group until `swarm bus apply`: keep trying
            log.log(level_of(exc), "subscription interrupted (%s); resubscribing", exc)
            delay = await backoff(delay)
