"""HealthProber: calls each live agent's health_url and feeds its circuit breaker.

Started by the registry server in its lifespan (one per registry process). Every
interval it lists the live agents (members of the swarm's leases zset
whose expiry is after the Redis clock's now), and for each one whose registration
hash has a ``health_url``:

1. takes the agent's check slot for this interval (``lock`` in the breaker script,
   a per-agent lock on the Redis clock), so several registry processes probing at
   once count one check per interval, not one per process;
2. asks the breaker for a ticket (closed: always; open: only after the cooldown,
   and then a single half-open probe; otherwise skip);
3. GETs the health_url with ``timeout``; a 2xx/3xx answer records a success, a
   transport error or any other status a failure, under the ticket's epoch, so a
   late answer from before a transition changes nothing.

Logs are changes of state only: an agent's first health result (INFO when ok,
WARNING when failing), each flip between ok and failing, and each breaker
transition (WARNING); a probe that finds what the last one found logs nothing.

Breaker settings and the interval come from the bus settings in Redis
(``swarm bus apply`` writes bus.json), read again every round, so a new
``bus.breaker.probe_interval_seconds`` takes effect from the next round; the
defaults of the spec apply when the bus is not installed. A fixed ``interval``
(``swarm registry serve --probe-interval``) overrides the spec's. While a long
interval is waited out, the spec's is re-read every :data:`RECHECK` seconds, so a
shorter one applies soon; an agent probed just before the change keeps its check
slot (0.9 of the old interval) until it ends.

>>> # prober = HealthProber(redis, "research")          # the spec's interval
>>> # prober = HealthProber(redis, "research", interval=5.0)
>>> # task = asyncio.create_task(prober.run(stop_event)); ...; stop_event.set(); await task
"""

from __future__ import annotations

import asyncio
import logging

import httpx
import redis.asyncio as aioredis

from swarm.bus.breaker import BreakerPolicy
from swarm.bus.breaker_store import BreakerStore, policy_from_settings
from swarm.desired import BusPlan
from swarm.errors import SwarmError
from swarm.foreign import REDIS_ERRORS
from swarm.keys import SwarmKeys, as_text
from swarm.spec.models import BreakerSettings

#: The spec's default probe interval, used while no bus.json is in Redis.
DEFAULT_INTERVAL = BreakerSettings().probe_interval_seconds
#: Seconds between re-reads of the spec's interval while waiting out a long one.
RECHECK = 5.0

log = logging.getLogger("swarm.bus.prober")


class HealthProber:
    """Probe live agents' health on an interval; safe with several registry processes."""

    def __init__(
        self,
        redis: aioredis.Redis,
        swarm: str,
        *,
        interval: float | None = None,
        http: httpx.AsyncClient | None = None,
        timeout: float = 2.0,
        policy: BreakerPolicy | None = None,
        concurrency: int = 16,
    ) -> None:
        if interval is not None and interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self.redis = redis
        self.swarm = swarm
        self.keys = SwarmKeys(swarm)
        self.fixed_interval = interval
        #: seconds between rounds: the fixed one, else the spec's as of the last round
        self.interval = interval if interval is not None else DEFAULT_INTERVAL
        self.timeout = timeout
        self._http = http
        self._fixed_policy = policy
        self._limit = asyncio.Semaphore(concurrency)
        self.rounds = 0
        #: the last health result of each live agent (True: ok), to log changes only
        self._health: dict[str, bool] = {}

    async def _policy(self) -> BreakerPolicy:
        """The round's breaker policy; also takes the spec's interval unless it is fixed."""
        raw = await self.redis.get(self.keys.bus) if self._fixed_policy is None or self.fixed_interval is None else None
        settings = BusPlan.model_validate_json(raw).settings.breaker if raw is not None else None
        if self.fixed_interval is None:
            self.interval = settings.probe_interval_seconds if settings is not None else DEFAULT_INTERVAL
        if self._fixed_policy is not None:
            return self._fixed_policy
        return policy_from_settings(settings) if settings is not None else BreakerPolicy()

    async def live_agents(self) -> list[str]:
        seconds, micros = await self.redis.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        members = await self.redis.zrangebyscore(self.keys.leases, f"({now_ms}", "+inf")
        return sorted(as_text(m) for m in members)

    async def probe_once(self, http: httpx.AsyncClient) -> dict[str, str]:
        """One round; returns agent id -> what happened (for logs and tests)."""
        store = BreakerStore(self.redis, self.swarm, await self._policy())
        agents = await self.live_agents()
        results = await asyncio.gather(*(self._probe(store, http, a) for a in agents))
        for gone in self._health.keys() - set(agents):  # lease ended: a new registration logs its first result
            del self._health[gone]
        self.rounds += 1
        return dict(zip(agents, results))

    async def _probe(self, store: BreakerStore, http: httpx.AsyncClient, agent_id: str) -> str:
        async with self._limit:
            url = await self.redis.hget(self.keys.agent(agent_id), "health_url")
            if not url:
                return "no health_url"
            url = as_text(url)
            # The slot lasts a little less than the interval so the next round is never locked out.
            if not await store.lock(agent_id, int(self.interval * 900)):
                return "locked"
            ticket = await store.acquire(agent_id)
            if ticket is None:
                return "skipped"
            try:
                response = await http.get(url, timeout=self.timeout)
                ok = response.status_code < 400
                detail = str(response.status_code)
            except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL is not an HTTPError
                ok, detail = False, type(exc).__name__
            self._note(agent_id, ok, detail)
            reply = await (store.record_success if ok else store.record_failure)(agent_id, ticket)
            if reply.transition is not None:
                log.warning("breaker of %s is now %s (health %s)", agent_id, reply.transition.value, detail)
            return ("ok " if ok else "failed ") + detail

    def _note(self, agent_id: str, ok: bool, detail: str) -> None:
        """Log an agent's health when it changes: its first result, then each flip (not every probe)."""
        before = self._health.get(agent_id)
        self._health[agent_id] = ok
        if before == ok:
            return
        if ok:
            log.info("health of %s: ok (%s)%s", agent_id, detail, "" if before is None else ", was failing")
        else:
            log.warning("health of %s: failing (%s)%s", agent_id, detail, "" if before is None else ", was ok")

    async def _wait(self, stop_event: asyncio.Event) -> None:
        """Sleep one interval; a spec interval is re-read every RECHECK seconds meanwhile,
        so shortening a long interval takes effect without waiting the old one out."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while not stop_event.is_set():
            left = started + self.interval - loop.time()
            if left <= 0:
                return
            try:
                await asyncio.wait_for(stop_event.wait(), timeout=min(left, RECHECK))
            except asyncio.TimeoutError:
                pass
            if self.fixed_interval is None and not stop_event.is_set():
                try:
                    await self._policy()
                except REDIS_ERRORS + (SwarmError, ValueError) as exc:
                    log.warning("cannot re-read the probe interval: %s", exc)

    async def run(self, stop_event: asyncio.Event) -> None:
        """Probe every ``interval`` seconds until ``stop_event`` is set; errors are logged, not raised."""
        http = self._http or httpx.AsyncClient(follow_redirects=False)
        try:
            while not stop_event.is_set():
                try:
                    await self.probe_once(http)
                except REDIS_ERRORS + (SwarmError,) as exc:
                    log.warning("health probe round failed: %s", exc)
                except Exception:  # a background loop that dies silently is worse than a logged bug
                    log.exception("health probe round failed unexpectedly")
                await self._wait(stop_event)
        finally:
            if self._http is None:
                await http.aclose()
