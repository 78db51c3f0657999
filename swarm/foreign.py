"""The one translation of foreign errors (redis-py, httpx) into swarm's error tree.

Adapters call these and nothing else to turn a library's exception or an HTTP
status into a :class:`~swarm.errors.SwarmError`, so the retry policy is decided
once, here, and every caller agrees on it:

* **Transient** (:class:`~swarm.errors.RedisUnavailableError`, retried with
  :mod:`swarm.backoff`): the connection failing or timing out, and Redis refusing a
  command for a state that passes: ``OOM`` (over maxmemory), ``READONLY`` (a replica
  during failover), ``LOADING``, ``BUSY`` (a long script), ``MISCONF``,
  ``MASTERDOWN``, ``TRYAGAIN``, ``CLUSTERDOWN``, ``NOREPLICAS``, and in a Redis Cluster
  ``MOVED`` / ``ASK`` / ``UNBLOCKED`` (the swarm's slot moved to another master: the
  client of :mod:`swarm.redis_conn` reconnects to it).
* **Permanent** (:class:`~swarm.errors.RedisRefusedError`): every other refusal
  (``NOPERM``, ``WRONGTYPE``, ``NOGROUP``, a syntax error): the same command will
  be refused again, so a loop must report it instead of spinning on it. So is
  ``NOAUTH`` (Redis wants a password and none was given): the message says where
  the password comes from (``SWARM_REDIS_PASSWORD``, :mod:`swarm.redis_auth`).
  ``WRONGPASS`` stays transient: an agent's user vanishes when Redis restarts and
  the reconciler re-creates it within a second or so.
* HTTP (httpx): :mod:`swarm.foreign_http`, re-exported here; it imports no redis so
  the agents' light registry client can use it too.

Adapters wrap with ``raise redis_error(exc, "what") from exc``. redis-py's own
reconnect-and-retry of one command also draws its waits from :mod:`swarm.backoff`
(:func:`redis_retry`), so there is one backoff policy in the whole package.

One more quirk of redis-py's asyncio client: a ``Task.cancel()`` that lands while a
blocking read (XREAD / XREADGROUP ``BLOCK``) sits inside its internal timeout can be
swallowed (redis-py issues #2028, #2551): the command returns as if timed out and the
task, though ``cancelling()``, runs on. Every ``while True`` loop around such a read
calls :func:`raise_if_cancelled` at its top, so a cancel always ends it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis import exceptions as rexc
from redis.backoff import AbstractBackoff
from redis.retry import Retry as SyncRetry

from swarm.backoff import backoff_delay
from swarm.errors import RedisRefusedError, RedisUnavailableError, SwarmError
from swarm.foreign_http import http_status_error, http_transport_error, response_detail, retry_after
from swarm.redis_auth import PASSWORD_HINT

__all__ = [
    "REDIS_ERRORS",
    "TRANSIENT_REDIS_CODES",
    "RedisRetryBackoff",
    "http_status_error",
    "http_transport_error",
    "is_transient_redis",
    "raise_if_cancelled",
    "redis_error",
    "redis_error_code",
    "redis_retry",
    "response_detail",
    "retry_after",
]

#: Errors of redis-py and the socket layer that adapters catch and hand to :func:`redis_error`.
REDIS_ERRORS: tuple[type[BaseException], ...] = (rexc.RedisError, OSError)


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` if the running task was asked to stop (a cancel redis-py swallowed)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop: no task to stop
        return
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


#: What Redis says for WRONGPASS (redis-py drops the word itself); any other authentication error is NOAUTH.
_WRONGPASS = "invalid username-password pair"
#: Leading word of a Redis error reply for a state that passes: retry later.
TRANSIENT_REDIS_CODES = frozenset(
    {"OOM", "READONLY", "LOADING", "BUSY", "MISCONF", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS",
     "MOVED", "ASK", "UNBLOCKED"}
)


_CLASS_CODES: tuple[tuple[type[BaseException], str], ...] = (
    (rexc.OutOfMemoryError, "OOM"),
    (rexc.TryAgainError, "TRYAGAIN"),
    (rexc.ClusterDownError, "CLUSTERDOWN"),
    (rexc.MasterDownError, "MASTERDOWN"),
    (rexc.MovedError, "MOVED"),
    (rexc.AskError, "ASK"),
)


def redis_error_code(exc: BaseException) -> str:
    """The leading word of a Redis error reply (``NOPERM``, ``OOM`` ...), or ``""``."""
    if isinstance(exc, rexc.NoPermissionError):
        return "NOPERM"
    if isinstance(exc, rexc.BusyLoadingError):
        return "LOADING"
    if isinstance(exc, rexc.ReadOnlyError):
        return "READONLY"
    # redis-py strips the leading word of the replies it maps to a class of its own
    for cls, code in _CLASS_CODES:
        if isinstance(exc, cls):
            return code
    if isinstance(exc, rexc.ResponseError):
        text = str(exc).lstrip()
        return text.split(" ", 1)[0] if text[:1].isupper() else ""
    return ""


def is_transient_redis(exc: BaseException) -> bool:
    """Whether a redis-py (or socket) error is one a retry later may cure."""
    if isinstance(exc, rexc.AuthenticationError):
        return _WRONGPASS in str(exc)  # NOAUTH: no password given, a retry cannot cure it
    if isinstance(exc, (rexc.ConnectionError, rexc.TimeoutError, OSError)):
        return True
    return redis_error_code(exc) in TRANSIENT_REDIS_CODES


def redis_error(exc: BaseException, what: str, *, delay: float = 0.5) -> SwarmError:
    """``exc`` (from redis-py or the socket layer, while doing ``what``) as a swarm error."""
    if isinstance(exc, SwarmError):
        return exc
    if isinstance(exc, rexc.AuthenticationError):
        if _WRONGPASS not in str(exc):  # NOAUTH (redis-py drops the word): no password was given
            return RedisRefusedError(f"{what}: Redis requires a password (NOAUTH): {PASSWORD_HINT}", code="NOAUTH")
        return RedisUnavailableError(f"{what}: Redis refused the user or password: {exc} "
                                     "(an agent's user returns when the reconciler re-creates it; "
                                     f"for the default user: {PASSWORD_HINT})", delay=delay)
    if isinstance(exc, (rexc.ConnectionError, rexc.TimeoutError, OSError)):
        return RedisUnavailableError(f"{what}: Redis unreachable: {exc}", delay=delay)
    if is_transient_redis(exc):
        return RedisUnavailableError(f"{what}: Redis refused it for now: {exc}", delay=delay)
    return RedisRefusedError(f"{what}: Redis refused it: {exc}", code=redis_error_code(exc))


class RedisRetryBackoff(AbstractBackoff):
    """redis-py's retry backoff drawn from :func:`swarm.backoff.backoff_delay` (one policy)."""

    def __init__(self, *, base: float = 0.01, cap: float = 0.1) -> None:
        self.base, self.cap = base, cap

    def reset(self) -> None:
        pass

    def compute(self, failures: int) -> float:
        # redis-py counts the first retry as 1; swarm.backoff counts the first failure as 0
        return backoff_delay(max(0, failures - 1), base=self.base, cap=self.cap, floor=self.base)


def redis_retry(retries: int = 2, *, base: float = 0.01, cap: float = 0.1, asyncio: bool = True) -> Any:
    """The ``retry=`` of every redis-py client swarm makes: a few quick reconnects of one
    command (a dropped connection, a Redis restarting), waits from :mod:`swarm.backoff`.
    Longer outages are the caller's loop's business (TransientError + Backoff)."""
    if asyncio:
        from redis.asyncio.retry import Retry

        return Retry(RedisRetryBackoff(base=base, cap=cap), retries)
    return SyncRetry(RedisRetryBackoff(base=base, cap=cap), retries)
