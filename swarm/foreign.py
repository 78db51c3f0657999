"""The one translation of foreign errors (redis-py, httpx) into swarm's error tree.

Adapters call these and nothing else to turn a library's exception or an HTTP
status into a :class:`~swarm.errors.SwarmError`, so the retry policy is decided
once, here, and every caller agrees on it:

* **Transient** (:class:`~swarm.errors.RedisUnavailableError`, retried with
  :mod:`swarm.backoff`): the connection failing or timing out, and Redis refusing a
  command for a state that passes: ``OOM`` (over maxmemory), ``READONLY`` (a replica
  during failover), ``LOADING``, ``BUSY`` (a long script), ``MISCONF``,
  ``MASTERDOWN``, ``TRYAGAIN``, ``CLUSTERDOWN``, ``NOREPLICAS``.
* **Permanent** (:class:`~swarm.errors.RedisRefusedError`): every other refusal
  (``NOPERM``, ``WRONGTYPE``, ``NOGROUP``, a syntax error): the same command will
  be refused again, so a loop must report it instead of spinning on it. So is
  ``NOAUTH`` (Redis wants a password and none was given): the message says where
  the password comes from (``SWARM_REDIS_PASSWORD``, :mod:`swarm.redis_auth`).
  ``WRONGPASS`` stays transient: an agent's user vanishes when Redis restarts and
  the reconciler re-creates it within a second or so.
* HTTP: connection trouble, 5xx and 429 are transient
  (:class:`~swarm.errors.RegistryUnavailableError`, honouring ``Retry-After``);
  401/403 :class:`~swarm.errors.AuthError`; 404 :class:`~swarm.errors.NotDeclaredError`;
  409 :class:`~swarm.errors.ConflictError`; other 4xx
  :class:`~swarm.errors.InvalidRequestError`.

Adapters wrap with ``raise redis_error(exc, "what") from exc``.
"""

from __future__ import annotations

from typing import Any

import httpx
from redis import exceptions as rexc

from swarm.errors import (
    AuthError,
    ConflictError,
    InvalidRequestError,
    NotDeclaredError,
    RedisRefusedError,
    RedisUnavailableError,
    RegistryUnavailableError,
    SwarmError,
)
from swarm.redis_auth import PASSWORD_HINT

#: Errors of redis-py and the socket layer that adapters catch and hand to :func:`redis_error`.
REDIS_ERRORS: tuple[type[BaseException], ...] = (rexc.RedisError, OSError)
#: What Redis says for WRONGPASS (redis-py drops the word itself); any other authentication error is NOAUTH.
_WRONGPASS = "invalid username-password pair"
#: Leading word of a Redis error reply for a state that passes: retry later.
TRANSIENT_REDIS_CODES = frozenset(
    {"OOM", "READONLY", "LOADING", "BUSY", "MISCONF", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS"}
)


_CLASS_CODES: tuple[tuple[type[BaseException], str], ...] = (
    (rexc.OutOfMemoryError, "OOM"),
    (rexc.TryAgainError, "TRYAGAIN"),
    (rexc.ClusterDownError, "CLUSTERDOWN"),
    (rexc.MasterDownError, "MASTERDOWN"),
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


def http_transport_error(exc: BaseException, what: str, *, delay: float = 0.5) -> SwarmError:
    """An httpx transport error (connect, read, timeout) while doing ``what``: transient."""
    if isinstance(exc, SwarmError):
        return exc
    return RegistryUnavailableError(f"{what}: registry unreachable: {exc}", delay=delay)


def _detail(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:300]
    return str(body)[:300]


def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", default)))
    except ValueError:
        return default


def http_status_error(response: httpx.Response, what: str, *, delay: float = 1.0) -> SwarmError:
    """A registry answer that is not a success, as a swarm error (see the module docstring)."""
    code = response.status_code
    text = f"{what}: registry answered {code}: {_detail(response)}"
    if code >= 500 or code == 429:
        return RegistryUnavailableError(text, delay=_retry_after(response, delay))
    if code in (401, 403):
        return AuthError(text)
    if code == 404:
        return NotDeclaredError(text)
    if code == 409:
        return ConflictError(text)
    return InvalidRequestError(text)
