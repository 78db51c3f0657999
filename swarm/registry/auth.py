"""Bearer tokens of the registry: per-agent HMAC tokens and the admin token.

Pure (no I/O). The server (``server.py``) calls :class:`Authorizer` for every
write; ``swarm token AGENT_ID`` prints :func:`agent_token`; generated agents and
the reconciler compute the same values from the shared secret.

A per-agent token is ``hex(HMAC-SHA256(secret, "agent:" + agent_id))``: the
registry stores no token table, any registry process holding the secret can check
any agent, and a leaked agent token lets its holder act only as that agent. The
admin token is ``SWARM_ADMIN_TOKEN`` or, when that is unset,
``hex(HMAC-SHA256(secret, "admin"))`` (:func:`admin_token`). Comparisons use
:func:`hmac.compare_digest`.

Rules: writes about an agent (register, heartbeat, deregister) need that agent's
token or the admin token; ``PUT /catalog`` needs the admin token; reads are open.
A missing token is 401, a token that does not grant the action 403.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from swarm.errors import AuthError


def _hmac_hex(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def agent_token(secret: str, agent_id: str) -> str:
    """The bearer token of ``agent_id``: hex HMAC-SHA256(secret, "agent:" + agent_id).

    >>> agent_token("s3cret", "architect")[:16]
    '09b7040b2919f723'
    """
    return _hmac_hex(secret, "agent:" + agent_id)


def admin_token(secret: str) -> str:
    """The admin token derived from the secret (used when SWARM_ADMIN_TOKEN is unset)."""
    return _hmac_hex(secret, "admin")


_TOKEN_CACHE_MAX = 100_000


class MissingTokenError(AuthError):
    """No bearer token was sent (HTTP 401)."""


class ForbiddenError(AuthError):
    """A token was sent but does not grant the action (HTTP 403)."""


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


@dataclass(frozen=True)
class Authorizer:
    """Decides whether a bearer token may act; ``enabled=False`` allows everything."""

    secret: str | None
    admin: str | None
    enabled: bool = True
    _cache: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def create(cls, secret: str | None, admin: str | None, *, enabled: bool) -> "Authorizer":
        if admin is None and secret is not None:
            admin = admin_token(secret)
        return cls(secret=secret, admin=admin, enabled=enabled)

    def _expected(self, agent_id: str) -> bytes:
        """The agent's token, memoized: heartbeats are the hot path and ids are few."""
        cache = self._cache
        value = cache.get(agent_id)
        if value is None:
            if len(cache) >= _TOKEN_CACHE_MAX:
                cache.clear()
            value = cache[agent_id] = agent_token(self.secret or "", agent_id).encode()
        return value

    def is_admin(self, token: str) -> bool:
        return self.admin is not None and hmac.compare_digest(token.encode(), self.admin.encode())

    def require_admin(self, authorization: str | None) -> None:
        if not self.enabled:
            return
        token = bearer_token(authorization)
        if token is None:
            raise MissingTokenError("missing bearer token (admin token required)")
        if not self.is_admin(token):
            raise ForbiddenError("this action needs the admin token")

    def require_agent(self, authorization: str | None, agent_id: str) -> None:
        """Allow the admin token or ``agent_id``'s own token."""
        if not self.enabled:
            return
        token = bearer_token(authorization)
        if token is None:
            raise MissingTokenError(f"missing bearer token (agent {agent_id!r} or admin token required)")
        if self.is_admin(token):
            return
        if self.secret is not None and hmac.compare_digest(token.encode(), self._expected(agent_id)):
            return
        raise ForbiddenError(f"token does not grant acting on agent {agent_id!r}")
