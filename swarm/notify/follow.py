"""The reconcile daemon's feed of registry events into a :class:`~swarm.notify.sender.Notifier` (async, Redis).

:func:`follow_registry` runs beside ``Reconciler.watch``: once a valid spec is
enforced it follows that swarm's ``swarm:{N}:events`` (breaker openings, expiries:
:func:`swarm.reconcile.up_events.follow_entries`) and after every read (at least
once a second) reads the mass-eviction flag ``swarm:{N}:protection``, which has no
event of its own. When the enforced spec names another swarm or Redis it follows
that one instead. Only a daemon that is not standing by notifies (the notifier
knows from the passes), so a fleet of reconcilers sends each event once.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from swarm.keys import SwarmKeys
from swarm.notify.sender import Notifier
from swarm.reconcile.up_events import follow_entries

if TYPE_CHECKING:
    from swarm.reconcile.loop import Reconciler

#: How often the target (swarm, Redis URL) is compared with the enforced spec's.
RECHECK_SECONDS = 1.0


async def follow_registry(notifier: Notifier, target: Callable[[], tuple[str, str] | None], *,
                          block_ms: int = 1000) -> None:
    """Feed ``notifier`` from the registry of ``target()`` ((swarm, Redis URL), None before any
    valid spec) until cancelled."""
    from swarm.redis_conn import async_client

    while True:
        current = target()
        if current is None:
            await asyncio.sleep(RECHECK_SECONDS / 4)
            continue
        swarm, url = current
        client: Any = async_client(url, swarm=swarm, socket_timeout=block_ms / 1000 + 5)
        protection_key = SwarmKeys(swarm).protection

        async def check_protection() -> None:
            notifier.protection(bool(await client.exists(protection_key)))

        task = asyncio.ensure_future(follow_entries(client, swarm, notifier.event, block_ms=block_ms,
                                                    after_read=check_protection))
        try:
            while target() == current and not task.done():
                await asyncio.sleep(RECHECK_SECONDS)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.aclose()


async def notify_while(reconciler: "Reconciler", run: Awaitable[None], notifier: Notifier | None = None) -> None:
    """Run ``run`` (the reconciler's ``watch``) with notifications: the spec's targets get its
    passes (``Reconciler.on_pass_end``) and the registry's events; the queues drain at the end."""
    notifier = notifier if notifier is not None else Notifier()
    reconciler.on_pass_end = notifier.pass_ended

    def target() -> tuple[str, str] | None:
        good = reconciler.good
        if good is None:
            return None
        return good.desired.registry.swarm, reconciler.config.bus_redis_url(good.desired.bus.settings.redis_url)

    follower = asyncio.ensure_future(follow_registry(notifier, target))
    try:
        await run
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await asyncio.to_thread(notifier.close)
