"""The lease sweeper: evicts expired agents, guards against mass eviction, grants grace.

Runs as a background task in the registry app's lifespan (``server.py``), one per
process. Safe with several processes on one swarm because every decision is made
inside Redis (``store.SWEEP_LUA``): the script re-checks each lease and the one
that ZREMs it emits the single ``expired`` event.

Mass-eviction guard: when more than ``ratio`` (half) of the registered agents and
at least ``min_protect`` (10) would expire in one sweep, nothing is evicted and
``swarm:{N}:protection`` is set (shown in /status, /health and the
``swarm_registry_protection_mode`` gauge). That pattern means the registry or its
network failed, not the agents. Protection ends by itself as soon as a sweep
finds few enough expired leases (heartbeats renew even expired-but-not-evicted
leases); that sweep gives the still-expired leases one more TTL instead of
evicting them at once (the rest of the fleet is probably renewing right now), and
later sweeps evict normally whoever still does not renew.

Grace: when this process starts, and when Redis restarted (a changed ``run_id``),
every lease is extended to at least one full TTL from now (``store.GRACE_LUA``)
before anything is evicted, so agents that could not heartbeat while Redis or the
registry was away are not evicted for it. After failed sweeps against the same
Redis, only the leases the outage may have hurt get it: those whose TTL minus two
heartbeat intervals is shorter than the outage (measured from this process's last
good sweep), so a flaky link does not keep dead agents registered for many TTLs. We extend leases instead of keeping a "grace-until" timestamp
because the extension lives in Redis, is monotone (any number of processes may
apply it) and heartbeats keep working unchanged during the grace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from swarm.registry.metrics import RegistryMetrics
from swarm.registry.models import SweepInfo
from swarm.registry.store import REDIS_TROUBLE, RegistryStore

log = logging.getLogger("swarm.registry.sweeper")

MIN_INTERVAL = 0.1


class LeaseSweeper:
    """``await LeaseSweeper(store, ...).run(stop_event)``; ``tick()`` does one pass."""

    def __init__(
        self,
        store: RegistryStore,
        metrics: RegistryMetrics,
        *,
        interval: float | None,
        ttl_seconds: Callable[[], Awaitable[float | None]],
        min_protect: int = 10,
        ratio: float = 0.5,
        on_new_redis: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        #: called when this process first sees a Redis, and after each Redis restart
        #: (new run_id): the registry re-creates the agents' Redis users there
        self.on_new_redis = on_new_redis
        self.metrics = metrics
        self.fixed_interval = interval
        self.ttl_seconds = ttl_seconds
        self.min_protect = min_protect
        self.ratio = ratio
        self.last: SweepInfo | None = None
        self.protected = False
        self.graces = 0
        self._run_id: str | None = None
        self._owed = False  # a sweep failed since the last good one
        self._last_ok: float | None = None  # monotonic time of the last good sweep

    async def interval(self) -> float:
        if self.fixed_interval is not None:
            return self.fixed_interval
        try:
            ttl = await self.ttl_seconds()
        except REDIS_TROUBLE:
            ttl = None
        return max(MIN_INTERVAL, (ttl or 10.0) / 10)

    async def _new_redis(self) -> None:
        assert self.on_new_redis is not None
        try:
            await self.on_new_redis()
        except Exception as exc:  # a failed repair must not stop the sweeps; the next restart retries
            log.warning("after a new Redis run: %s", exc)

    async def tick(self) -> SweepInfo | None:
        """Grace if Redis is new to us, then one sweep; None when Redis is unreachable."""
        try:
            run_id = await self.store.run_id()
            if run_id != self._run_id or (self._owed and self._last_ok is None):
                extended = await self.store.grace()  # this process starts, or Redis restarted
                self.graces += 1
                log.info("lease grace applied (redis run_id %s): %d leases extended", run_id, extended)
                if self.on_new_redis is not None and run_id != self._run_id:
                    await self._new_redis()
            elif self._owed and self._last_ok is not None:
                outage_ms = int((time.monotonic() - self._last_ok) * 1000)
                extended = await self.store.grace(outage_ms=outage_ms)
                self.graces += 1
                log.info("lease grace after a %d ms outage: %d leases extended", outage_ms, extended)
            self._run_id = run_id
            self._owed = False
            outcome = await self.store.sweep(min_protect=self.min_protect, ratio=self.ratio)
            self._last_ok = time.monotonic()
        except REDIS_TROUBLE as exc:
            self._owed = True
            self.metrics.sweeps.labels(result="error").inc()
            log.warning("sweep skipped: %s", exc)
            return None
        if outcome.protected and not self.protected:
            log.warning(
                "mass-eviction protection ON: %d of %d leases expired at once; evicting none",
                outcome.expired_seen, outcome.live,
            )
        elif self.protected and not outcome.protected:
            log.warning("mass-eviction protection OFF: renewals returned")
        self.protected = outcome.protected
        self.metrics.protection.set(1 if outcome.protected else 0)
        self.metrics.evictions.inc(outcome.evicted)
        self.metrics.sweeps.labels(result="protected" if outcome.protected else "swept").inc()
        self.last = SweepInfo(
            at=time.time(),
            evicted=outcome.evicted,
            expired_seen=outcome.expired_seen,
            live=outcome.live,
            protected=outcome.protected,
        )
        return self.last

    async def run(self, stop_event: asyncio.Event) -> None:
        while not stop_event.is_set():
            try:
                await self.tick()
            except Exception:  # a bug must not stop eviction for good: log, retry next tick
                log.exception("sweep failed")
            try:
                await asyncio.wait_for(stop_event.wait(), timeout=await self.interval())
            except asyncio.TimeoutError:
                pass
