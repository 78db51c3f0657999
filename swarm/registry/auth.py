"""Bearer tokens of the registry: per-agent, admin and read-only HMAC tokens.

Pure (no I/O). The server (``server.py``) calls :class:`Authorizer` for every
request that needs a token; ``swarm token AGENT_ID`` prints :func:`agent_token`
(``--admin`` :func:`admin_token`, ``--read`` :func:`read_token`); generated
agents and the reconciler get the same values from the shared secret.

Every token binds the swarm name, so two swarms sharing one secret cannot replay
each other's tokens (``:`` is outside the name charset, so no two (swarm, id)
pairs give the same message):

* agent ``<id>`` of swarm ``<N>``: ``hex(HMAC-SHA256(secret, "agent:<N>:<id>"))``;
* admin: ``SWARM_ADMIN_TOKEN`` or, when that is unset, ``hex(HMAC-SHA256(secret, "admin:<N>"))``;
* read-only: ``hex(HMAC-SHA256(secret, "read:<N>"))``.

The registry stores no token table: any registry process holding the secret can
check any token, and a leaked agent token lets its holder act only as that agent.
Comparisons use :func:`hmac.compare_digest`.

Rules: writes about an agent (register, heartbeat, deregister) need that agent's
token or the admin token; ``PUT /catalog`` needs the admin token; reads (GET
/agents, /agents/{id}, /agents/watch, /catalog, /status) need any of the three
kinds unless the catalog says ``public_reads``. Private metadata fields are shown
only to the agent itself and the admin (:meth:`Authorizer.reader`). A missing
token is 401, a token that does not grant the action 403.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Mapping

from swarm.errors import AuthError, InvalidRequestError
from swarm.registry.config import ADMIN_TOKEN_ENV, SECRET_ENV


def _hmac_hex(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def agent_token(secret: str, swarm: str, agent_id: str) -> str:
    """The bearer token of agent ``agent_id`` of ``swarm``: hex HMAC-SHA256(secret, "agent:<swarm>:<id>").

    >>> agent_token("s3cret", "research", "architect") != agent_token("s3cret", "other", "architect")
    True
    """
    return _hmac_hex(secret, f"agent:{swarm}:{agent_id}")


def admin_token(secret: str, swarm: str) -> str:
    """The admin token of ``swarm`` derived from the secret (used when SWARM_ADMIN_TOKEN is unset)."""
    return _hmac_hex(secret, f"admin:{swarm}")


def read_token(secret: str, swarm: str) -> str:
    """The read-only token of ``swarm``: GET /agents, /catalog, /status and the watch; no private metadata."""
    return _hmac_hex(secret, f"read:{swarm}")


def admin_token_from_env(environ: Mapping[str, str] | None = None, swarm: str | None = None) -> str | None:
    """SWARM_ADMIN_TOKEN, else the token of ``swarm`` derived from SWARM_REGISTRY_SECRET, else None.

    The derived token binds the swarm name, so deriving it needs ``swarm``. Here, not in
    :mod:`swarm.registry.catalog_push` (which re-exports it), so that ``swarm token --admin``
    needs no HTTP client.
    """
    import os

    env = os.environ if environ is None else environ
    token = env.get(ADMIN_TOKEN_ENV) or None
    if token is None and env.get(SECRET_ENV):
        if swarm is None:
            raise InvalidRequestError(f"the admin token derived from {SECRET_ENV} binds the swarm name: "
                                      "name the swarm (or set " + ADMIN_TOKEN_ENV + ")")
        token = admin_token(env[SECRET_ENV], swarm)
    return token


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
class Reader:
    """Who is reading: ``admin`` sees everything, ``agent_id`` its own private fields too."""

    admin: bool = False
    agent_id: str | None = None

    def sees_private_of(self, agent_id: str) -> bool:
        return self.admin or self.agent_id == agent_id


#: The reader of an app without auth (``--insecure``): nothing is private from it.
EVERYONE = Reader(admin=True)
#: A reader that holds no token (public reads) or the read token: sees no private field.
ANONYMOUS = Reader()


@dataclass(frozen=True)
class Authorizer:
    """Decides whether a bearer token may act; ``enabled=False`` allows everything."""

    secret: str | None
    admin: str | None
    swarm: str = ""
    enabled: bool = True
    _cache: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)
    #: token -> agent id, filled with _cache: a read finds its agent in one lookup, not one HMAC per agent
    _owners: dict[bytes, str] = field(default_factory=dict, repr=False, compare=False)
    #: the read token, derived once (every read checks it)
    _read: bytes = field(default=b"", repr=False, compare=False)

    @classmethod
    def create(cls, secret: str | None, admin: str | None, *, swarm: str, enabled: bool) -> "Authorizer":
        if admin is None and secret is not None:
            admin = admin_token(secret, swarm)
        read = read_token(secret, swarm).encode() if secret is not None else b""
        return cls(secret=secret, admin=admin, swarm=swarm, enabled=enabled, _read=read)

    def _expected(self, agent_id: str) -> bytes:
        """The agent's token, memoized: heartbeats are the hot path and ids are few."""
        cache = self._cache
        value = cache.get(agent_id)
        if value is None:
            if len(cache) >= _TOKEN_CACHE_MAX:
                cache.clear()
                self._owners.clear()
            value = cache[agent_id] = agent_token(self.secret or "", self.swarm, agent_id).encode()
            self._owners[value] = agent_id
        return value

    def is_admin(self, token: str) -> bool:
        return self.admin is not None and hmac.compare_digest(token.encode(), self.admin.encode())

    def is_agent(self, token: str, agent_id: str) -> bool:
        return self.secret is not None and hmac.compare_digest(token.encode(), self._expected(agent_id))

    def is_read(self, token: str) -> bool:
        return self.secret is not None and hmac.compare_digest(token.encode(), self._read)

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
        if self.is_admin(token) or self.is_agent(token, agent_id):
            return
        raise ForbiddenError(f"token does not grant acting on agent {agent_id!r}")

    def operator(self, token: str) -> Reader | None:
        """The admin token reads everything, the read token what is not private; any other token: None."""
        if self.is_admin(token):
            return EVERYONE
        if self.is_read(token):
            return ANONYMOUS
        return None

    def reader(self, authorization: str | None, *, public: bool, agent_ids: "set[str] | frozenset[str]") -> Reader:
        """Who reads: the admin, one of ``agent_ids`` (the agents registered or declared), or the read token.

        Without a (valid) token the read is refused unless ``public``; a public read
        with a token that is not valid is refused too (a wrong token is a mistake to
        report, not to ignore).
        """
        if not self.enabled:
            return EVERYONE
        token = bearer_token(authorization)
        if token is None:
            if public:
                return ANONYMOUS
            raise MissingTokenError("missing bearer token (an agent's, the admin or the read token is required "
                                    "to read; `swarm token --read` prints the read token)")
        operator = self.operator(token)
        if operator is not None:
            return operator
        owner = self._owners.get(token.encode())
        if owner is not None and owner in agent_ids and self.is_agent(token, owner):
            return Reader(agent_id=owner)
        for agent_id in agent_ids:
            if agent_id not in self._cache and self.is_agent(token, agent_id):  # first sight of this agent
                return Reader(agent_id=agent_id)
        raise ForbiddenError("token is not valid for this swarm's registry")
