"""Re-create a swarm's missing Redis users from what Redis itself still holds (async, for the registry).

Redis keeps ACL users in memory only: after a restart, even with the append-only
file, every agent's login fails until someone writes the users again. The
reconcile daemon does that within about a second (it watches Redis' run_id);
the registry, which notices a restart through the same run_id, can call
:func:`restore_missing_users` so the users come back even where no reconcile
daemon runs::

    from swarm.reconcile.heal import restore_missing_users
    created = await restore_missing_users(redis, swarm_name, bus_secret)

It reads the bus settings the reconciler last applied (``swarm:{N}:bus``, kept
by the append-only file), and for each agent there whose user
``swarm.<N>.<id>`` does not exist writes ``swarm.bus.apply.user_rules`` with
its ``bus_password`` — the very rules ``swarm reconcile`` and ``swarm bus
apply`` write. It only creates: an existing user is left as it is (telling a
hand edit from a spec change is the reconciler's job), and no user outside this
swarm's ``swarm.<N>.`` names is touched. Without a bus secret or applied bus
settings it does nothing and returns ``[]``. In a Redis Cluster the swarm's users
are then copied from the slot owner to every other node
(:func:`swarm.redis_conn.mirror_users`).
"""

from __future__ import annotations

from typing import Any

from swarm.bus.apply import bus_password, user_rules
from swarm.desired import BusPlan
from swarm.foreign import REDIS_ERRORS, redis_error
from swarm.keys import SwarmKeys, as_text
from swarm.redis_conn import mirror_users


async def restore_missing_users(client: Any, swarm: str, secret: str | None) -> list[str]:
    """Create the Redis users of ``swarm``'s applied agents that do not exist; their names, sorted.

    ``client``: a ``redis.asyncio.Redis`` with admin rights. Errors: swarm errors
    (:func:`swarm.foreign.redis_error`)."""
    if not secret:
        return []
    keys = SwarmKeys(swarm)
    try:
        raw = await client.get(keys.bus)
        if raw is None:
            return []
        try:
            bus = BusPlan.model_validate_json(as_text(raw))
        except ValueError:
            return []
        if bus.swarm != swarm:
            return []
        existing = {as_text(u) for u in await client.acl_users()}
        created: list[str] = []
        for agent_id, rights in sorted(bus.agents.items()):
            user = keys.redis_user(agent_id)
            if user in existing:
                continue
            rules = user_rules(keys, agent_id, sorted(rights.publish), sorted(rights.subscribe),
                               bus_password(secret, swarm, agent_id))
            await client.execute_command("ACL", "SETUSER", user, *rules)
            created.append(user)
        await mirror_users(client, swarm)  # a Redis Cluster: every other node, masters and replicas
        return created
    except REDIS_ERRORS as exc:
        raise redis_error(exc, f"restore the Redis users of swarm {swarm}") from exc
