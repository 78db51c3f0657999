"""The part of a compiled agent server that is the same for every agent.

``swarm compile`` writes ``compiled/<swarm>/agents/<id>/server.py`` with the agent's
configuration, its registry wiring and its health routes; the readiness bookkeeping
and the event-bus loop live here: connect (with the agent's own Redis user, from
REDIS_URL) retrying with :mod:`swarm.backoff`, consume the agent's inbox, call the
handler, await the publishes it started (each one XADD to the agent's outbox), and
ack only then, so a failure anywhere leaves the message for redelivery. Only the
standard library, :mod:`swarm.errors` and :mod:`swarm.backoff` are imported at run
time, so an agent without bus or registry needs neither redis nor httpx.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import TYPE_CHECKING, Any, Callable

from swarm.backoff import Backoff
from swarm.errors import PermanentError

if TYPE_CHECKING:
    from swarm.bus import EventBus
    from swarm.bus.bus import Message

__all__ = ["RETRY_BASE", "RETRY_CAP", "AgentState", "Publisher", "handle", "level_of", "log_received", "run_bus"]

#: Backoff between attempts while a dependency is down (seconds: base doubled up to the cap, full jitter).
RETRY_BASE = 0.5
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


def log_received(log: logging.Logger, message: Message) -> None:
    """The default handler's one line per message: message id, topic and sender (operators
    read it). The message id is the sender's choice: shown with repr, so a control
    character in it cannot forge a log line."""
    log.info("received %r on %s from %s (delivery %d)", message.message_id, message.topic, message.sender,
             message.deliveries)


class Publisher:
    """The handler's ``publish(topic, payload, message_id=None, wait=False)``, for sync and async handlers.

    Each call starts the publish at once and returns it as an awaitable task: an
    async handler may ``await publish(...)``; a sync handler just calls it. The
    server awaits every publish a handler started before it acks the message. A
    publish succeeds once the entry is in the agent's outbox (the router delivers
    it at least once); ``wait=True`` waits for the router's receipt instead, to
    learn the topic entry id or whether it was a duplicate.
    """

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.started: list[asyncio.Task[Any]] = []

    def __call__(
        self, topic: str, payload: Any, *, message_id: str | None = None, wait: bool = False, timeout: float = 2.0
    ) -> asyncio.Task[Any]:
        publish = self.bus.publish(topic, payload, message_id=message_id, wait=wait, timeout=timeout)
        task = asyncio.get_running_loop().create_task(publish)
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
        log.exception("handler failed on %r (%s); left unacked for redelivery", message.message_id, message.topic)
        return
    await message.ack()


async def run_bus(
    bus: EventBus,
    subscribes: list[str],
    handler: Callable[..., Any],
    log: logging.Logger,
    connected: asyncio.Event,
) -> None:
    """Connect (retrying while Redis is down), set ``connected``, then consume the inbox
    if the agent subscribes to anything. The whole inbox: it holds what the current plan
    routes to the agent, which after a spec change may differ from the compiled list."""
    backoff = Backoff(base=RETRY_BASE, cap=RETRY_CAP)
    while True:
        try:
            await bus.connect()
            break
        except Exception as exc:  # Redis down or the bus not applied yet: keep trying, never crash
            log.log(level_of(exc), "connecting to the bus failed (%s); retrying", exc)
            await backoff.sleep()
    connected.set()
    if not subscribes:
        return
    backoff.reset()
    while True:
        try:
            async for message in bus.subscribe():
                await handle(message, handler, bus, log)
                backoff.reset()
            log.warning("subscription ended; resubscribing")
        except Exception as exc:  # e.g. no consumer group until `swarm bus apply`: keep trying
            log.log(level_of(exc), "subscription interrupted (%s); resubscribing", exc)
        await backoff.sleep()
