"""The ``.env`` a compiled swarm's compose file needs: which variables, their values, the file's text.

Pure (no I/O; the CLI, :mod:`swarm.cli.secrets_cmds`, reads the environment and
writes the file). The compose file references:

* ``SWARM_REGISTRY_SECRET``: the key every agent token derives from (given by the
  user, never generated here: a lost or changed key invalidates every token);
* ``SWARM_REDIS_PASSWORD``: the password of Redis' ``default`` user (the registry's,
  the setup services'); any URL-safe string, so it may be generated;
* ``SWARM_AGENT_TOKEN_<ID>`` per agent that registers: :func:`swarm.registry.auth.agent_token`;
* ``SWARM_BUS_PASSWORD_<ID>`` per agent: :func:`swarm.redis_auth.bus_password` under
  the bus secret (``SWARM_BUS_SECRET``, else the registry secret);
* optionally ``SWARM_BUS_SECRET`` and ``SWARM_ADMIN_TOKEN``, written only when the
  user set them (compose defaults them to empty: the registry secret is used).

``<ID>`` is :func:`env_suffix` of the agent id, the compose renderer's rule (a test
holds the two to the same names). The first line of the file marks it as written by
``swarm secrets env`` (:data:`MARK`), so the command overwrites only its own files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping

from swarm.errors import InvalidRequestError
from swarm.redis_auth import BUS_SECRET_ENV, PASSWORD_ENV, bus_password

SECRET_ENV = "SWARM_REGISTRY_SECRET"
ADMIN_TOKEN_ENV = "SWARM_ADMIN_TOKEN"
TOKEN_PREFIX = "SWARM_AGENT_TOKEN_"
BUS_PASSWORD_PREFIX = "SWARM_BUS_PASSWORD_"
#: The first line of every file this module renders.
MARK = "# Written by `swarm secrets env`"

_BARE = re.compile(r"^[A-Za-z0-9_.,:@+/=%-]*$")
_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


@dataclass(frozen=True)
class AgentEntry:
    """What the compose file asks of one agent: a bus password always, a token when it registers."""

    id: str
    registry: bool


def env_suffix(agent_id: str) -> str:
    """``web-researcher`` -> ``WEB_RESEARCHER``: the per-agent part of a variable name."""
    return agent_id.upper().replace("-", "_")


def token_var(agent_id: str) -> str:
    return TOKEN_PREFIX + env_suffix(agent_id)


def bus_password_var(agent_id: str) -> str:
    return BUS_PASSWORD_PREFIX + env_suffix(agent_id)


def compose_env(
    swarm: str,
    agents: Iterable[AgentEntry],
    *,
    registry_secret: str,
    redis_password: str,
    bus_secret: str | None = None,
    admin_token: str | None = None,
) -> dict[str, str]:
    """Every variable of the compose file, in the order they are written (fixed first, then by agent id)."""
    from swarm.registry.auth import agent_token  # here: the compose target names these variables too, without httpx

    if not registry_secret:
        raise InvalidRequestError(f"{SECRET_ENV} is empty")
    if not redis_password:
        raise InvalidRequestError(f"{PASSWORD_ENV} is empty")
    values = {SECRET_ENV: registry_secret, PASSWORD_ENV: redis_password}
    if bus_secret:
        values[BUS_SECRET_ENV] = bus_secret
    if admin_token:
        values[ADMIN_TOKEN_ENV] = admin_token
    key = bus_secret or registry_secret
    seen: dict[str, str] = {}
    for agent in sorted(agents, key=lambda a: a.id):
        suffix = env_suffix(agent.id)
        if suffix in seen and seen[suffix] != agent.id:
            raise InvalidRequestError(f"agents {seen[suffix]!r} and {agent.id!r} map to the same variable "
                                      f"suffix {suffix!r}")
        seen[suffix] = agent.id
        if agent.registry:
            values[token_var(agent.id)] = agent_token(registry_secret, swarm, agent.id)
        values[bus_password_var(agent.id)] = bus_password(key, swarm, agent.id)
    return values


def _quoted(name: str, value: str) -> str:
    """A value as the .env readers of docker compose and podman-compose (python-dotenv) read it back
    literally: bare when it has no special character, else single-quoted (no interpolation)."""
    if _BARE.fullmatch(value):
        return value
    if "'" in value or "\\" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidRequestError(f"{name} holds a quote, a backslash or a control character, which a .env "
                                  "file cannot carry the same way to every compose implementation")
    return f"'{value}'"


def render(swarm: str, values: Mapping[str, str]) -> str:
    """The file's text: the mark, a warning, then ``NAME=value`` lines."""
    lines = [
        f"{MARK} for swarm {swarm}. Secrets: keep it private (mode 0600), never commit it.",
        "# Regenerate with `swarm secrets env`; pass it to compose with --env-file.",
    ]
    lines += [f"{name}={_quoted(name, value)}" for name, value in values.items()]
    return "\n".join(lines) + "\n"


def parse(text: str) -> dict[str, str]:
    """The variables of a file :func:`render` wrote (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            continue
        name, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        values[name] = value
    return values


def written_by_us(text: str) -> bool:
    return text.startswith(MARK)
