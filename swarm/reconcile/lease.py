"""One writer per swarm: the reconcile lease in Redis, with a fencing token.

Two ``swarm reconcile --watch`` daemons on one swarm (say, a laptop and a CI
runner with different checkouts) would otherwise undo each other's catalog on
every pass. So a daemon reconciles only while it holds ``swarm:{N}:lease``:

* **Taking it** (:meth:`Lease.acquire`, one script): when the key is absent,
  ``INCR swarm:{N}:fence`` gives a new fencing token and the key is set to
  ``{"owner", "token", "since", "pid", "host"}`` with a TTL (``PX``, Redis clock).
  The holder asking again just renews.
* **Renewing** (:meth:`Lease.renew`, one script): ``PEXPIRE`` only while the key
  still holds this token. The daemon renews every ``ttl/3``; a holder that misses
  renewals for a whole TTL (paused, partitioned, SIGKILLed) loses the lease and
  a standby takes it at its next try (it tries every ``ttl/3``): takeover within
  about ``4/3`` TTL.
* **Fencing**: a paused ex-holder wakes up believing it still holds the lease. So
  every write of a pass to Redis is ``WATCH lease; GET lease`` (the token must be
  ours) ``; MULTI; …; EXEC`` (:meth:`Fence.holds` and the bus port): if the lease
  expired or moved in between, EXEC writes nothing (a WATCHed key that expires
  or changes aborts the transaction) and the pass ends with :class:`LeaseLost`.
  The catalog push goes to the registry over HTTP, which does not know the
  lease: the pass checks the token right before it (a window of one HTTP call).
* **Standing by**: a daemon without the lease does no pass; it says so in its
  log and records itself in ``swarm:{N}:standby`` (hash owner -> JSON, entries
  older than three TTLs are stale), which ``swarm status`` shows beside the
  holder.

``swarm reconcile --once`` takes the lease for its pass and releases it at the
end; while another process holds it, it refuses (exit 1, naming the holder)
instead of racing a daemon. ``swarm plan`` and ``--dry-run`` write nothing and
take no lease.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from swarm.errors import TransientError
from swarm.foreign import REDIS_ERRORS, redis_error
from swarm.keys import SwarmKeys, as_text

#: Default lease TTL of ``swarm reconcile`` (seconds).
DEFAULT_TTL = 10.0

_ACQUIRE = """
local held = redis.call('GET', KEYS[1])
if held then
  local ok, doc = pcall(cjson.decode, held)
  if ok and type(doc) == 'table' and doc['owner'] == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, held}
  end
  return {0, held}
end
local token = redis.call('INCR', KEYS[2])
local now = redis.call('TIME')
local doc = cjson.encode({owner = ARGV[1], token = token, since_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000),
                          pid = tonumber(ARGV[3]), host = ARGV[4]})
redis.call('SET', KEYS[1], doc, 'PX', ARGV[2])
return {1, doc}
"""

_RENEW = """
local held = redis.call('GET', KEYS[1])
if not held then return 0 end
local ok, doc = pcall(cjson.decode, held)
if ok and type(doc) == 'table' and doc['token'] == tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
local held = redis.call('GET', KEYS[1])
if not held then return 0 end
local ok, doc = pcall(cjson.decode, held)
if ok and type(doc) == 'table' and doc['token'] == tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


class LeaseLost(TransientError):
    """The reconcile lease is held by someone else (or expired): this process must not write."""


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a lease, as stored in ``swarm:{N}:lease``."""

    owner: str
    token: int
    since_ms: int
    pid: int | None = None
    host: str | None = None

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since_ms / 1000))
        where = f" (pid {self.pid} on {self.host})" if self.pid is not None else ""
        return f"{self.owner}{where} since {since}, fencing token {self.token}"


def parse_holder(raw: object) -> Holder | None:
    """The holder stored in a lease key's value; None when absent or unreadable."""
    if raw is None:
        return None
    try:
        doc = json.loads(as_text(raw))
        return Holder(owner=str(doc["owner"]), token=int(doc["token"]), since_ms=int(doc["since_ms"]),
                      pid=doc.get("pid"), host=doc.get("host"))
    except (ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class Fence:
    """What a fenced write checks: the lease key still holds this token."""

    key: str
    token: int

    def holds(self, raw: object) -> bool:
        holder = parse_holder(raw)
        return holder is not None and holder.token == self.token


def new_owner_id() -> str:
    """A unique lease owner name for this process: ``<host>:<pid>:<random>``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """The reconcile lease of one swarm on one Redis (sync redis-py client)."""

    def __init__(self, client: Any, swarm: str, *, owner: str | None = None, ttl: float = DEFAULT_TTL) -> None:
        if ttl <= 0:
            raise ValueError(f"lease TTL must be > 0, got {ttl}")
        self._redis = client
        self.keys = SwarmKeys(swarm)
        self.owner = owner or new_owner_id()
        self.ttl = ttl
        self.fence: Fence | None = None  # set while this process holds the lease
        self.holder: Holder | None = None  # the last holder seen (ourselves included)

    @property
    def client(self) -> Any:
        return self._redis

    @property
    def ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))

    @property
    def standby_key(self) -> str:
        return self.keys.standby

    def _call(self, script: str, keys: list[str], args: list[object], what: str) -> Any:
        try:
            return self._redis.eval(script, len(keys), *keys, *args)
        except REDIS_ERRORS as exc:
            raise redis_error(exc, f"reconcile lease: {what}") from exc

    def acquire(self) -> Fence | None:
        """Take or renew the lease; the fence when this process holds it, else None (see :attr:`holder`)."""
        got, raw = self._call(_ACQUIRE, [self.keys.lease, self.keys.fence],
                              [self.owner, self.ttl_ms, os.getpid(), socket.gethostname()], "acquire")
        self.holder = parse_holder(raw)
        if int(got) == 1 and self.holder is not None:
            self.fence = Fence(self.keys.lease, self.holder.token)
        else:
            self.fence = None
        return self.fence

    def renew(self) -> bool:
        """Extend the lease while it still holds our token; False (and no fence) when lost."""
        if self.fence is None:
            return False
        if int(self._call(_RENEW, [self.keys.lease], [self.fence.token, self.ttl_ms], "renew")) == 1:
            return True
        self.fence = None
        return False

    def release(self) -> None:
        """Give the lease up (only if it is still ours), so a standby takes over at once."""
        if self.fence is not None:
            self._call(_RELEASE, [self.keys.lease], [self.fence.token], "release")
            self.fence = None

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless the lease still holds our token (before a non-Redis write)."""
        try:
            raw = self._redis.get(self.keys.lease)
        except REDIS_ERRORS as exc:
            raise redis_error(exc, "reconcile lease: check") from exc
        if self.fence is None or not self.fence.holds(raw):
            raise LeaseLost(f"the reconcile lease of swarm {self.keys.swarm} is no longer held by {self.owner}")

    def mark_standby(self, detail: str) -> None:
        """Record this process as standing by (for ``swarm status``); best effort."""
        now_ms = int(time.time() * 1000)
        doc = json.dumps({"since_ms": now_ms, "seen_ms": now_ms, "stale_after_ms": now_ms + 3 * self.ttl_ms,
                          "pid": os.getpid(), "host": socket.gethostname(), "detail": detail})
        try:
            old = self._redis.hget(self.standby_key, self.owner)
            if old is not None:  # keep the first "since"
                try:
                    since = json.loads(as_text(old))["since_ms"]
                    doc = json.dumps({**json.loads(doc), "since_ms": since})
                except (ValueError, KeyError, TypeError):
                    pass
            self._redis.hset(self.standby_key, self.owner, doc)
            if int(self._redis.pttl(self.standby_key)) < self.ttl_ms * 3:  # only ever extend it
                self._redis.pexpire(self.standby_key, self.ttl_ms * 3)
        except REDIS_ERRORS:
            pass

    def clear_standby(self) -> None:
        try:
            self._redis.hdel(self.standby_key, self.owner)
        except REDIS_ERRORS:
            pass


def read_lease(client: Any, swarm: str) -> tuple[Holder | None, int, dict[str, dict[str, Any]]]:
    """(holder, its remaining TTL in ms, standbys seen within their last three TTLs) for ``swarm status``."""
    keys = SwarmKeys(swarm)
    try:
        pipe = client.pipeline(transaction=False)
        pipe.get(keys.lease)
        pipe.pttl(keys.lease)
        pipe.hgetall(keys.standby)
        raw, pttl, standby = pipe.execute()
    except REDIS_ERRORS as exc:
        raise redis_error(exc, "read the reconcile lease") from exc
    waiting: dict[str, dict[str, Any]] = {}
    now_ms = int(time.time() * 1000)
    for owner, value in (standby or {}).items():
        try:
            doc = dict(json.loads(as_text(value)))
        except (ValueError, TypeError):
            continue
        if int(doc.get("stale_after_ms", 0)) >= now_ms:  # a standby that stopped refreshing is gone
            waiting[as_text(owner)] = doc
    return parse_holder(raw), int(pttl or -2), waiting
