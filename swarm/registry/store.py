"""Registry state in Redis: registrations, leases, the catalog and the event stream.

Called by the server's handlers, the lease sweeper (``sweeper.py``) and the
watch hub (``watch.py``). Every state change runs as ONE Lua script that also
appends its watch event (XADD ... MAXLEN ~) to ``swarm:{N}:events``: there is no
change without its event and no event without its change, and because Redis runs
a script atomically, several registry processes can serve one swarm with no
in-process source of truth. All clocks are Redis's (``TIME`` inside the scripts),
so hosts with skewed clocks agree on every lease.

Keys (see :mod:`swarm.keys`): ``agent:<id>`` hash {doc (registration JSON),
version, ttl_ms, hb_ms, registered_at, updated_at, health_url (read by the bus's
health prober), imm (digests of the immutable fields)},
``leases`` zset id -> expiry ms, ``events`` stream {type, agent, data},
``catalog`` string JSON {digest, revision, catalog} (in that order), ``protection`` string (ms
since protection began), ``status`` (written by the reconciler, read here).

Every redis-py error is re-raised through :func:`swarm.foreign.redis_error`
(:func:`redis_errors`); the server answers 503 to it.
"""

from __future__ import annotations

import builtins
import hashlib
import json
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncGenerator, AsyncIterator, Sequence, cast

import redis.asyncio as aioredis
import redis.exceptions as rexc

from swarm.desired import RegistryCatalog
from swarm.errors import ConflictError, RedisRefusedError, RedisUnavailableError
from swarm.foreign import REDIS_ERRORS, redis_error
from swarm.keys import SwarmKeys, as_text
from swarm.registry.admission import heartbeat_interval, immutable_values
from swarm.registry.models import AgentFields, AgentStatus, CatalogPutResult, CatalogState, Registration, canonical_json

_NOW = """
local _t = redis.call('TIME')
local now = tonumber(_t[1]) * 1000 + math.floor(tonumber(_t[2]) / 1000)
"""

#: KEYS agent, leases, events; ARGV id, doc, ttl_ms, version, maxlen, health_url, hb_ms, imm, field*
#: ``imm`` holds one 16-hex-digit digest per immutable field (in ``field*`` order,
#: space separated): the script names the fields that changed without storing the
#: values twice (memory per agent is a target). health_url is also a hash field of
#: its own: the bus's health prober reads it.
REGISTER_LUA = _NOW + """
local id, doc, ttl, imm = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[8]
local exp = redis.call('ZSCORE', KEYS[2], id)
local kind, registered_at = 'registered', now
if exp and tonumber(exp) > now and redis.call('EXISTS', KEYS[1]) == 1 then
  local cur = redis.call('HMGET', KEYS[1], 'version', 'imm', 'registered_at', 'doc')
  if cur[1] == ARGV[4] and cur[2] ~= imm then
    local changed = {}
    local old = cur[2] or ''
    for k = 9, #ARGV do
      local off = (k - 9) * 17 + 1
      if string.sub(old, off, off + 15) ~= string.sub(imm, off, off + 15) then
        table.insert(changed, ARGV[k])
      end
    end
    if #changed > 0 then return {'conflict', changed} end
  end
  registered_at = tonumber(cur[3]) or now
  if cur[4] == doc then kind = 'same' else kind = 'updated' end
end
local expiry = now + ttl
redis.call('ZADD', KEYS[2], expiry, id)
local updated_at = now
if kind == 'same' then
  updated_at = tonumber(redis.call('HGET', KEYS[1], 'updated_at')) or now
  redis.call('HSET', KEYS[1], 'hb_ms', ARGV[7])
  return {kind, registered_at, updated_at, expiry, ''}
end
redis.call('DEL', KEYS[1])
local fields = {'doc', doc, 'version', ARGV[4], 'ttl_ms', ttl, 'registered_at', registered_at,
                'updated_at', updated_at, 'hb_ms', ARGV[7], 'imm', imm}
if ARGV[6] ~= '' then table.insert(fields, 'health_url'); table.insert(fields, ARGV[6]) end
redis.call('HSET', KEYS[1], unpack(fields))
local data = '{"lease_expires_at":' .. expiry .. ',"registered_at":' .. registered_at ..
             ',"updated_at":' .. updated_at .. ',' .. string.sub(doc, 2)
local sid = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'type', kind, 'agent', id, 'data', data)
return {kind, registered_at, updated_at, expiry, sid}
"""

#: KEYS leases, agent; ARGV id. A lease past expiry but not yet evicted (grace,
#: protection) is renewed: only eviction ends a registration.
HEARTBEAT_LUA = _NOW + """
local exp = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not exp then return {-1, 0, 0} end
local h = redis.call('HMGET', KEYS[2], 'ttl_ms', 'hb_ms')
local ttl = tonumber(h[1])
if not ttl then return {-1, 0, 0} end
local e = now + ttl
if e > tonumber(exp) then redis.call('ZADD', KEYS[1], e, ARGV[1]) else e = tonumber(exp) end
return {e, ttl, tonumber(h[2]) or math.floor(ttl / 3)}
"""

#: KEYS leases, agent, events; ARGV id, maxlen
DEREGISTER_LUA = """
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
local doc = redis.call('HGET', KEYS[2], 'doc')
redis.call('DEL', KEYS[2])
if removed == 0 and not doc then return '' end
if not doc then doc = '{"agent_id":"' .. ARGV[1] .. '"}' end
return redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'type', 'deregistered', 'agent', ARGV[1], 'data', doc)
"""

#: KEYS leases, events, protection, agent*; ARGV maxlen, min_protect, ratio, id*
#: (ids aligned with the agent keys: ARGV[i] <-> KEYS[i] for i >= 4).
#: ZREM wins: whoever removes the lease emits the one `expired` event.
SWEEP_LUA = _NOW + """
local total = redis.call('ZCARD', KEYS[1])
local expired = {}
for i = 4, #ARGV do
  local exp = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if exp and tonumber(exp) <= now then table.insert(expired, i) end
end
local n = #expired
if n >= tonumber(ARGV[2]) and n > total * tonumber(ARGV[3]) then
  local entered = redis.call('SET', KEYS[3], now, 'NX')
  return {'protected', 0, n, total, entered and 1 or 0}
end
local left = redis.call('DEL', KEYS[3])
if left == 1 then
  -- leaving protection: the still-expired get one TTL to renew instead of being
  -- evicted at once (renewals are coming back; a dead agent goes one TTL later)
  for _, i in ipairs(expired) do
    local ttl = tonumber(redis.call('HGET', KEYS[i], 'ttl_ms'))
    if ttl then redis.call('ZADD', KEYS[1], now + ttl, ARGV[i]) end
  end
  return {'swept', 0, n, total, 1}
end
local evicted = 0
for _, i in ipairs(expired) do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
    local doc = redis.call('HGET', KEYS[i], 'doc')
    redis.call('DEL', KEYS[i])
    if not doc then doc = '{"agent_id":"' .. ARGV[i] .. '"}' end
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'type', 'expired', 'agent', ARGV[i], 'data', doc)
    evicted = evicted + 1
  end
end
return {'swept', evicted, n, total, left}
"""

#: KEYS leases, agent*; ARGV outage ms (-1: unconditional), id* (aligned: ARGV[i] <->
#: KEYS[i]). Grace: a lease ends no sooner than one full TTL from now. After an outage
#: of known length, only leases it may have hurt get it: those whose agent could have
#: missed its renewal (the outage is longer than its TTL minus two heartbeat
#: intervals), so short flaps do not keep dead agents registered. Monotone, so any
#: number of processes may run it at any time.
GRACE_LUA = _NOW + """
local outage = tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do
  local exp = redis.call('ZSCORE', KEYS[1], ARGV[i])
  local h = redis.call('HMGET', KEYS[i], 'ttl_ms', 'hb_ms')
  local ttl = tonumber(h[1])
  if exp and ttl and tonumber(exp) < now + ttl then
    local hb = tonumber(h[2]) or math.floor(ttl / 3)
    if outage < 0 or outage > ttl - 2 * hb then
      redis.call('ZADD', KEYS[1], now + ttl, ARGV[i]); n = n + 1
    end
  end
end
return n
"""

#: KEYS catalog, events; ARGV state JSON, digest, maxlen, summary JSON
CATALOG_LUA = """
local head = redis.call('GETRANGE', KEYS[1], 0, 74)
local changed = 1
if string.sub(head, 12, 75) == ARGV[2] then changed = 0 end
redis.call('SET', KEYS[1], ARGV[1])
if changed == 1 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'type', 'catalog-changed', 'agent', '', 'data', ARGV[4])
end
return changed
"""

#: KEYS catalog, events; ARGV base digest, state JSON, digest, maxlen, summary JSON. A
#: compare-and-set: the value is replaced only while the stored digest is the base
#: the patch was computed on (else {0, stored digest}; '' when there is none).
CATALOG_PATCH_LUA = """
local head = redis.call('GETRANGE', KEYS[1], 0, 74)
local stored = ''
if string.sub(head, 1, 11) == '{"digest":"' then stored = string.sub(head, 12, 75) end
if stored ~= ARGV[1] then return {0, stored} end
redis.call('SET', KEYS[1], ARGV[2])
if ARGV[3] ~= ARGV[1] then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'type', 'catalog-changed', 'agent', '', 'data', ARGV[5])
  return {1, ARGV[3]}
end
return {2, ARGV[3]}
"""

#: KEYS leases, events, agent*; ARGV id* (aligned: ARGV[i] <-> KEYS[i + 2]). An
#: atomic snapshot for `reset`: the agents and the id of the last event they
#: include. Every key it reads is declared (restricted ACL users, Cluster), so the
#: caller passes the ids it read just before; an agent registered in between is
#: returned as 'missing' and the caller runs the script again with it included.
SNAPSHOT_LUA = _NOW + """
local idx = {}
for i = 1, #ARGV do idx[ARGV[i]] = i + 2 end
local ids = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local missing = {}
for i = 1, #ids, 2 do
  if not idx[ids[i]] then table.insert(missing, ids[i]) end
end
if #missing > 0 then return {'missing', missing} end
local out = {}
for i = 1, #ids, 2 do
  local h = redis.call('HMGET', KEYS[idx[ids[i]]], 'doc', 'registered_at', 'updated_at')
  if h[1] then table.insert(out, {ids[i], ids[i + 1], h[1], h[2], h[3]}) end
end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local lid = '0-0'
if #last > 0 then lid = last[1][1] end
return {'ok', lid, now, out}
"""

#: Rounds of :meth:`RegistryStore.snapshot` racing new registrations before it gives up.
SNAPSHOT_ATTEMPTS = 20

#: Bytes at the start of the stored catalog that hold its digest and revision.
CATALOG_HEAD = 2048  # > 75 + the longest JSON of a 256-char revision
BREAKER_CRITICAL = frozenset({"open", "half_open"})


#: What :func:`redis_errors` raises: callers that must go on (loops, health) catch these.
REDIS_TROUBLE: tuple[type[Exception], ...] = (RedisUnavailableError, RedisRefusedError)


@asynccontextmanager
async def redis_errors(what: str) -> AsyncIterator[None]:
    """Re-raise redis-py trouble through :func:`swarm.foreign.redis_error`.

    The connection failing and refusals that pass (OOM, READONLY, BUSY, LOADING ...)
    become :class:`~swarm.errors.RedisUnavailableError`; other refusals (NOPERM,
    WRONGTYPE ...) :class:`~swarm.errors.RedisRefusedError`. The server answers 503
    to both; background loops log and retry both.
    """
    try:
        yield
    except REDIS_ERRORS as exc:
        raise redis_error(exc, what) from exc


@dataclass(frozen=True)
class RegisterOutcome:
    kind: str  # registered | updated | same
    registration: Registration
    event_id: str | None


@dataclass(frozen=True)
class SweepOutcome:
    protected: bool
    evicted: int
    expired_seen: int
    live: int
    protection_changed: bool


@dataclass(frozen=True)
class Snapshot:
    last_id: str
    agents: list[Registration]


def _catalog_value(digest: str, revision: str | None, catalog_json: str) -> tuple[str, str]:
    """The stored catalog value and the summary of its ``catalog-changed`` event. Digest and
    revision first (not sorted): readers compare the value's first CATALOG_HEAD bytes and
    fetch the whole catalog only when those changed."""
    value = f'{{"digest":"{digest}","revision":{canonical_json(revision)},"catalog":{catalog_json}}}'
    return value, canonical_json({"revision": revision, "digest": digest, "changed": True})


class RegistryStore:
    """Async access to one swarm's registry state; one per process, shared by all requests."""

    def __init__(self, redis: aioredis.Redis, swarm: str, *, events_maxlen: int = 10_000) -> None:
        self.redis = redis
        self.swarm = swarm
        self.keys = SwarmKeys(swarm)
        self.events_maxlen = events_maxlen
        self._register = redis.register_script(REGISTER_LUA)
        self._heartbeat = redis.register_script(HEARTBEAT_LUA)
        self._deregister = redis.register_script(DEREGISTER_LUA)
        self._sweep = redis.register_script(SWEEP_LUA)
        self._grace = redis.register_script(GRACE_LUA)
        self._catalog = redis.register_script(CATALOG_LUA)
        self._catalog_patch = redis.register_script(CATALOG_PATCH_LUA)
        self._snapshot = redis.register_script(SNAPSHOT_LUA)
        self._catalog_cache: tuple[bytes, CatalogState] | None = None
        self._leases = self.keys.leases

    # -- catalog ---------------------------------------------------------------

    async def put_catalog(self, catalog: RegistryCatalog, revision: str | None, digest: str,
                          catalog_json: str | None = None) -> CatalogPutResult:
        """Store ``catalog`` (``catalog_json``: its canonical JSON when the caller has it already)."""
        text = catalog_json if catalog_json is not None else canonical_json(catalog.model_dump(mode="json"))
        value, summary = _catalog_value(digest, revision, text)
        async with redis_errors("catalog push"):
            changed = await self._catalog(
                keys=[self.keys.catalog, self.keys.events], args=[value, digest, self.events_maxlen, summary]
            )
        # the very objects pushed, as PATCH keeps them: the next patch then finds every unchanged
        # agent's text by identity (read back from Redis instead, 10,000 agents re-render: ~0.3 s);
        # in id order, as read back from the stored (canonical) JSON
        ids = list(catalog.agents)
        if ids != sorted(ids):
            catalog = catalog.model_copy(update={"agents": {aid: catalog.agents[aid] for aid in sorted(ids)}})
        self._catalog_cache = (value.encode()[:CATALOG_HEAD],
                               CatalogState(revision=revision, digest=digest, catalog=catalog))
        return CatalogPutResult(revision=revision, digest=digest, changed=bool(changed))

    async def patch_catalog(self, base_digest: str, catalog: RegistryCatalog, revision: str | None,
                            digest: str, catalog_json: str) -> CatalogPutResult | None:
        """Replace the stored catalog by ``catalog`` only while its digest is ``base_digest``.

        ``catalog_json``: the catalog's canonical JSON (``digest`` is its sha256), already
        computed by the caller. None when the stored digest is not ``base_digest`` (another
        push came first): nothing was written.
        """
        value, summary = _catalog_value(digest, revision, catalog_json)
        async with redis_errors("catalog patch"):
            res = await self._catalog_patch(keys=[self.keys.catalog, self.keys.events],
                                            args=[base_digest, value, digest, self.events_maxlen, summary])
        if int(res[0]) == 0:
            return None
        raw = value.encode()
        self._catalog_cache = (raw[:CATALOG_HEAD],
                               CatalogState(revision=revision, digest=digest, catalog=catalog))
        return CatalogPutResult(revision=revision, digest=digest, changed=int(res[0]) == 1)

    async def get_catalog(self) -> CatalogState | None:
        """The stored catalog, read from Redis on every call (several processes may push).

        Cheap when unchanged: only the value's head (digest and revision) is read and
        compared with the cached one; the full catalog (hundreds of KB for a big
        fleet) is fetched and parsed only after a change.
        """
        async with redis_errors("catalog read"):
            head = cast(bytes, await self.redis.getrange(self.keys.catalog, 0, CATALOG_HEAD - 1))
            cached = self._catalog_cache
            if not head:
                return None
            if cached is not None and head.startswith(b'{"digest":"') and cached[0] == head:
                return cached[1]
            raw = cast("bytes | None", await self.redis.get(self.keys.catalog))
        if raw is None:
            return None
        state = CatalogState.model_validate_json(raw)
        self._catalog_cache = (raw[:CATALOG_HEAD], state)
        return state

    # -- registrations -----------------------------------------------------------

    async def register(self, fields: AgentFields, catalog: RegistryCatalog | None) -> RegisterOutcome:
        doc = canonical_json(fields.model_dump(mode="json"))
        args: list[Any] = [
            fields.agent_id, doc, fields.ttl_seconds * 1000, fields.version, self.events_maxlen,
            fields.health_url or "", int(heartbeat_interval(catalog, fields.ttl_seconds) * 1000),
        ]
        values = immutable_values(fields)
        args.append(" ".join(hashlib.sha256(value.encode()).hexdigest()[:16] for _, value in values))
        args += [name for name, _ in values]
        async with redis_errors("register"):
            res = await self._register(
                keys=[self.keys.agent(fields.agent_id), self.keys.leases, self.keys.events], args=args
            )
        kind = as_text(res[0])
        if kind == "conflict":
            changed = [as_text(f) for f in res[1]]
            raise FieldConflictError(
                f"agent {fields.agent_id!r} is registered at version {fields.version} with different "
                f"{', '.join(changed)}; change the version to change them",
                changed,
            )
        reg = Registration(
            **fields.model_dump(),
            registered_at=int(res[1]),
            updated_at=int(res[2]),
            lease_expires_at=int(res[3]),
            heartbeat_interval=heartbeat_interval(catalog, fields.ttl_seconds),
        )
        return RegisterOutcome(kind=kind, registration=reg, event_id=as_text(res[4]) or None)

    async def heartbeat(self, agent_id: str) -> tuple[int, int, int] | None:
        """(new expiry ms, ttl ms, heartbeat interval ms), or None when the agent is not registered.

        One EVALSHA and nothing else: heartbeats are the hot path.
        """
        # Plain try/except and a direct EVALSHA rather than the helpers: a few µs per
        # call matter at thousands of heartbeats per second.
        script = self._heartbeat
        try:
            try:
                res = await self.redis.evalsha(script.sha, 2, self._leases, self.keys.agent(agent_id), agent_id)
            except rexc.NoScriptError:
                res = await script(keys=[self._leases, self.keys.agent(agent_id)], args=[agent_id])
        except REDIS_ERRORS as exc:
            raise redis_error(exc, "heartbeat") from exc
        if int(res[0]) < 0:
            return None
        return int(res[0]), int(res[1]), int(res[2])

    async def deregister(self, agent_id: str) -> str | None:
        """Remove the registration; the event id, or None when it was already gone."""
        async with redis_errors("deregister"):
            sid = await self._deregister(
                keys=[self.keys.leases, self.keys.agent(agent_id), self.keys.events],
                args=[agent_id, self.events_maxlen],
            )
        return as_text(sid) or None

    async def get(self, agent_id: str, catalog: RegistryCatalog | None) -> Registration | None:
        async with redis_errors("agent read"):
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.time()
                pipe.zscore(self.keys.leases, agent_id)
                pipe.hmget(self.keys.agent(agent_id), ["doc", "registered_at", "updated_at"])
                pipe.hget(self.keys.breaker(agent_id), "state")
                now, score, row, breaker = await pipe.execute()
        if score is None or row[0] is None:
            return None
        return _registration(row, int(score), _now_ms(now), breaker, catalog)

    async def registered_ids(self) -> builtins.list[str]:
        """Ids holding a lease now (live or expiring)."""
        async with redis_errors("lease read"):
            return [as_text(m) for m in await self.redis.zrange(self.keys.leases, 0, -1)]

    async def list(self, catalog: RegistryCatalog | None) -> list[Registration]:
        """Every registered agent (live or expiring), sorted by id."""
        async with redis_errors("agent list"):
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.time()
                pipe.zrange(self.keys.leases, 0, -1, withscores=True)
                now, leases = await pipe.execute()
            ids = [as_text(m) for m, _ in leases]
            async with self.redis.pipeline(transaction=False) as pipe:
                for agent_id in ids:
                    pipe.hmget(self.keys.agent(agent_id), ["doc", "registered_at", "updated_at"])
                    pipe.hget(self.keys.breaker(agent_id), "state")
                rows = await pipe.execute() if ids else []
        now_ms = _now_ms(now)
        out: list[Registration] = []
        for i, (_, score) in enumerate(leases):
            row, breaker = rows[2 * i], rows[2 * i + 1]
            if row[0] is not None:
                out.append(_registration(row, int(score), now_ms, breaker, catalog))
        out.sort(key=lambda r: r.agent_id)
        return out

    async def list_batches(self, catalog: RegistryCatalog | None, batch: int = 500
                           ) -> AsyncGenerator[builtins.list[Registration], None]:
        """Every registered agent, sorted by id, in lists of at most ``batch`` (one pipeline each).

        What :meth:`list` returns, read a batch at a time so that a listing of
        10,000 agents never holds them all (GET /agents streams them). Leases are
        read once, with the time, at the start: an agent that registers meanwhile
        is not listed, one deregistered meanwhile is skipped.
        """
        async with redis_errors("agent list"):
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.time()
                pipe.zrange(self.keys.leases, 0, -1, withscores=True)
                now, leases = await pipe.execute()
        async for part in self._registration_batches(leases, _now_ms(now), catalog, batch, "agent list"):
            yield part

    async def _registration_batches(self, leases: Any, now_ms: int, catalog: RegistryCatalog | None, batch: int,
                                    what: str) -> AsyncGenerator[builtins.list[Registration], None]:
        """The registrations of ``leases`` (ZRANGE WITHSCORES) by id, ``batch`` per pipeline; an
        agent deregistered since the leases were read is skipped."""
        ordered = sorted((as_text(m), int(score)) for m, score in leases)
        for start in range(0, len(ordered), batch):
            part = ordered[start:start + batch]
            async with redis_errors(what):
                async with self.redis.pipeline(transaction=False) as pipe:
                    for agent_id, _ in part:
                        pipe.hmget(self.keys.agent(agent_id), ["doc", "registered_at", "updated_at"])
                        pipe.hget(self.keys.breaker(agent_id), "state")
                    rows = await pipe.execute()
            yield [_registration(rows[2 * i], expiry, now_ms, rows[2 * i + 1], catalog)
                   for i, (_, expiry) in enumerate(part) if rows[2 * i][0] is not None]

    # -- leases ------------------------------------------------------------------

    async def sweep(self, *, min_protect: int, ratio: float) -> SweepOutcome:
        """Evict expired leases unless that would be a mass eviction (then protect)."""
        async with redis_errors("sweep"):
            now = _now_ms(await self.redis.time())
            ids = [as_text(m) for m in await self.redis.zrangebyscore(self.keys.leases, "-inf", now)]
            res = await self._sweep(
                keys=[self.keys.leases, self.keys.events, self.keys.protection, *map(self.keys.agent, ids)],
                args=[self.events_maxlen, min_protect, ratio, *ids],
            )
        return SweepOutcome(
            protected=as_text(res[0]) == "protected",
            evicted=int(res[1]),
            expired_seen=int(res[2]),
            live=int(res[3]),
            protection_changed=bool(int(res[4])),
        )

    async def grace(self, outage_ms: int | None = None) -> int:
        """Give every lease at least one full TTL from now; the number extended.

        With ``outage_ms`` (how long this process could not reach Redis), only the
        leases whose agents that outage may have kept from renewing.
        """
        async with redis_errors("grace"):
            ids = [as_text(m) for m in await self.redis.zrange(self.keys.leases, 0, -1)]
            if not ids:
                return 0
            outage = -1 if outage_ms is None else max(0, outage_ms)
            return int(await self._grace(keys=[self.keys.leases, *map(self.keys.agent, ids)],
                                         args=[outage, *ids]))

    async def protection(self) -> bool:
        async with redis_errors("protection read"):
            return bool(await self.redis.exists(self.keys.protection))

    async def run_id(self) -> str:
        """Redis's run id; it changes when the server restarts (then leases get grace)."""
        async with redis_errors("info"):
            info = await self.redis.info("server")
        return str(info.get("run_id", ""))

    async def reconcile_status(self) -> dict[str, Any] | None:
        async with redis_errors("status read"):
            raw = await self.redis.get(self.keys.status)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return {"unparsable": as_text(raw)[:1000]}
        return value if isinstance(value, dict) else {"value": value}

    async def ping(self) -> bool:
        try:
            async with redis_errors("ping"):
                return bool(await self.redis.ping())
        except REDIS_TROUBLE:
            return False

    # -- events ------------------------------------------------------------------

    async def snapshot(self, catalog: RegistryCatalog | None) -> Snapshot:
        ids: list[str] = []
        async with redis_errors("snapshot"):
            ids = [as_text(m) for m in await self.redis.zrange(self.keys.leases, 0, -1)]
            for _ in range(SNAPSHOT_ATTEMPTS):
                res = await self._snapshot(
                    keys=[self.keys.leases, self.keys.events, *map(self.keys.agent, ids)], args=ids
                )
                if as_text(res[0]) == "ok":
                    break
                ids += [as_text(m) for m in res[1]]  # registered since we read the ids
            else:
                raise RedisUnavailableError(
                    f"snapshot: registrations kept arriving for {SNAPSHOT_ATTEMPTS} rounds; try again"
                )
        last_id, now, rows = as_text(res[1]), int(res[2]), res[3]
        async with redis_errors("snapshot"):
            async with self.redis.pipeline(transaction=False) as pipe:
                for row in rows:
                    pipe.hget(self.keys.breaker(as_text(row[0])), "state")
                breakers = await pipe.execute() if rows else []
        agents = [
            _registration([doc, reg_at, upd_at], int(float(score)), now, breaker, catalog)
            for (_, score, doc, reg_at, upd_at), breaker in zip(rows, breakers)
        ]
        agents.sort(key=lambda r: r.agent_id)
        return Snapshot(last_id=last_id, agents=agents)

    async def snapshot_batches(self, catalog: RegistryCatalog | None, batch: int = 500
                               ) -> tuple[str, AsyncGenerator[builtins.list[Registration], None]]:
        """The watch snapshot read a batch at a time: (stream position P, batches of agents).

        The lease set and the id of the last event are read in one MULTI, so the
        agents listed are exactly those registered at P (every registration change
        writes its lease and its event together); each batch's documents are read
        when the batch is (one pipeline), so a document may be newer than P, or gone
        (then skipped). Every such change has an event after P, which the watch sends
        after the snapshot: a client that applies the snapshot, then the events after
        P, ends at the same state as with :meth:`snapshot`'s atomic read, and
        10,000 agents are never held (or encoded) at once.
        """
        async with redis_errors("snapshot"):
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.time()
                pipe.zrange(self.keys.leases, 0, -1, withscores=True)
                pipe.xrevrange(self.keys.events, "+", "-", count=1)
                now, leases, last = await pipe.execute()
        last_id = as_text(last[0][0]) if last else "0-0"
        return last_id, self._registration_batches(leases, _now_ms(now), catalog, batch, "snapshot")

    async def events_after(self, last_id: str, count: int = 1000) -> builtins.list[tuple[str, dict[str, str]]]:
        """Events strictly after ``last_id`` (XRANGE with an exclusive start)."""
        async with redis_errors("event read"):
            entries = cast(
                "list[tuple[bytes, dict[bytes, bytes]]]",
                await self.redis.xrange(self.keys.events, min="(" + last_id, max="+", count=count),
            )
        return [(as_text(i), {as_text(k): as_text(v) for k, v in f.items()}) for i, f in entries]

    async def trimmed_past(self, last_id: str) -> bool:
        """Whether resuming after ``last_id`` could miss events: they were trimmed away,
        or the stream never produced that id (Redis lost its data and the stream began
        anew, so the client's view holds agents no event will ever remove)."""
        async with redis_errors("stream info"):
            try:
                info = await self.redis.xinfo_stream(self.keys.events)
            except rexc.ResponseError as exc:
                if "no such key" not in str(exc).lower():
                    raise  # a refusal (NOPERM, ...): unavailable, below
                return last_id != "0-0"  # no stream: only "from the start" is a valid resume
        # Redis 7.0 updates max-deleted-entry-id on XDEL only, not on MAXLEN trimming,
        # so also compare with the oldest kept entry whenever anything was ever trimmed.
        # (A client whose id was the very entry before the oldest kept one gets a reset
        # it did not strictly need: harmless, a snapshot is never a gap.)
        last = _id_tuple(last_id)
        if last > _id_tuple(as_text(info.get("last-generated-id", "0-0"))):
            return True  # an id from the future: not this stream's
        if last < _id_tuple(as_text(info.get("max-deleted-entry-id", "0-0"))):
            return True
        first = info.get("first-entry")
        oldest = as_text(first[0]) if first else as_text(info.get("last-generated-id", "0-0"))
        if int(info.get("entries-added", 0)) <= int(info.get("length", 0)):
            # nothing ever removed: every id this stream gave out is "0-0" or still in it,
            # so an older one comes from a stream Redis lost (recreated since)
            return last != (0, 0) and last < _id_tuple(oldest)
        return last < _id_tuple(oldest)

    async def last_event_id(self) -> str:
        async with redis_errors("stream read"):
            last = await self.redis.xrevrange(self.keys.events, "+", "-", count=1)
        return as_text(last[0][0]) if last else "0-0"


class FieldConflictError(ConflictError):
    """Immutable fields changed at the same version; ``fields`` names them (409)."""

    def __init__(self, message: str, fields: Sequence[str]) -> None:
        super().__init__(message)
        self.fields = list(fields)


def _now_ms(time_reply: Any) -> int:
    seconds, micros = time_reply
    return int(seconds) * 1000 + int(micros) // 1000


def _id_tuple(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def parse_stream_id(value: str) -> str | None:
    """A normalized ``ms-seq`` stream id, or None when ``value`` is not one."""
    try:
        ms, seq = _id_tuple(value.strip())
    except ValueError:
        return None
    if ms < 0 or seq < 0 or ms >= 2**64 or seq >= 2**64:
        return None
    return f"{ms}-{seq}"


def _registration(
    row: Sequence[Any], expiry: int, now: int, breaker: Any, catalog: RegistryCatalog | None
) -> Registration:
    data = json.loads(row[0])
    ttl = int(data["ttl_seconds"])
    status: AgentStatus
    if expiry <= now:
        status = "expiring"
    elif breaker is not None and as_text(breaker) in BREAKER_CRITICAL:
        status = "critical"
    else:
        status = "healthy"
    return Registration(
        **data,
        registered_at=int(row[1]),
        updated_at=int(row[2]),
        lease_expires_at=expiry,
        heartbeat_interval=heartbeat_interval(catalog, ttl),
        status=status,
    )
