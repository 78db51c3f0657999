"""The password of Redis' ``default`` user: where the command line finds it, how URLs carry and show it.

The Redis ``swarm up`` starts (and the Compose file's) requires a password for its
``default`` user, the trusted one of the registry, the reconciler, the router and
``swarm bus apply``; agents never get it (they log in as their own users). The
user's commands find it in ``SWARM_REDIS_PASSWORD`` (``swarm up`` keeps the one it
generated in ``.swarm/redis.password``): :func:`redis_url_from_env` is the one place
that reads that variable, and the command line applies it to every Redis URL it
uses that carries no credentials of its own (an explicit ``--redis-url
redis://:PASSWORD@HOST`` wins). :func:`masked` is how a URL is printed or logged.

Pure string work (no I/O but the one environment read), so any layer may import it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Mapping
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

#: Environment variable holding the password of Redis' default user (the Compose file's name too).
PASSWORD_ENV = "SWARM_REDIS_PASSWORD"
#: How a password shows in a printed URL.
MASK = "***"
#: What to tell someone whose command met a Redis that wants a password.
PASSWORD_HINT = (f"set {PASSWORD_ENV} (for the Redis of `swarm up`: export {PASSWORD_ENV}=$(cat .swarm/redis.password)) "
                 "or give it in --redis-url redis://:PASSWORD@HOST:PORT/0")


def has_credentials(url: str) -> bool:
    """Whether ``url`` names a user or a password (in its authority, or a unix socket's query)."""
    parts = urlsplit(url)
    if parts.username or parts.password is not None:
        return True
    return any(k in ("password", "username") for k, _ in parse_qsl(parts.query))


def with_password(url: str, password: str | None) -> str:
    """``url`` logging in as ``default`` with ``password`` (percent-encoded), unless it has credentials already."""
    if not password or has_credentials(url):
        return url
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return _with_query(url, urlencode([*parse_qsl(parts.query), ("password", password)]))
    netloc = f":{quote(password, safe='')}@{parts.netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def masked(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: the only form that is printed or logged."""
    parts = urlsplit(url)
    if parts.password is not None:
        user, host = parts.netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}:{MASK}@{host}"
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if any(k == "password" for k, _ in pairs):
        url = _with_query(url, urlencode([(k, MASK if k == "password" else v) for k, v in pairs], safe="*"))
    return url


def _with_query(url: str, query: str) -> str:
    """``url`` with its query replaced (by hand: ``urlunsplit`` turns ``unix:///path`` into ``unix:/path``)."""
    base, _, rest = url.partition("?")
    fragment = rest.partition("#")[2] if "#" in rest else base.partition("#")[2]
    return f"{base.partition('#')[0]}?{query}" + (f"#{fragment}" if fragment else "")


def password_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """``SWARM_REDIS_PASSWORD`` (empty counts as unset) of ``env`` (default the process environment)."""
    return (os.environ if env is None else env).get(PASSWORD_ENV) or None


def redis_url_from_env(url: str, env: Mapping[str, str] | None = None) -> str:
    """``url`` with ``SWARM_REDIS_PASSWORD`` applied when it carries no credentials of its own."""
    return with_password(url, password_from_env(env))


#: Key of the agents' Redis passwords; without it the registry secret is the key.
BUS_SECRET_ENV = "SWARM_BUS_SECRET"


def bus_secret_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """The key of the agents' Redis passwords: ``SWARM_BUS_SECRET``, else ``SWARM_REGISTRY_SECRET``
    (empty values count as unset). ``bus apply``, the reconciler and the registry all read it here."""
    env = os.environ if env is None else env
    return env.get(BUS_SECRET_ENV) or env.get("SWARM_REGISTRY_SECRET") or None


def bus_password(secret: str, swarm: str, agent_id: str) -> str:
    """The Redis password of an agent's user: HMAC-SHA256(secret, "swarm-bus:<swarm>:<id>").

    Pure, here rather than in :mod:`swarm.bus.apply` (which re-exports it) so that
    ``swarm secrets env`` derives it without importing a Redis client."""
    return hmac.new(secret.encode(), f"swarm-bus:{swarm}:{agent_id}".encode(), hashlib.sha256).hexdigest()
