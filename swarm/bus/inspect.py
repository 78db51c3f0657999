"""Read the bus as Redis holds it: per topic its log length, dead letters, publishers and
subscribers; per subscriber's inbox its backlog; the last entries of a topic's log.

Shared by ``swarm topics`` (``swarm/cli/view_cmds.py``) and the registry dashboard's read
endpoints (``swarm/registry/ui.py``): both pass a ``redis.asyncio`` client (with or without
``decode_responses``) and the :class:`~swarm.desired.BusPlan` (the CLI's from the spec, the
registry's from ``swarm:{N}:bus`` in Redis). Read only; sizes are bounded by the caller's
``count`` and :data:`PAYLOAD_CUT`.
"""

from __future__ import annotations

from typing import Any

from swarm.desired import BusPlan
from swarm.keys import as_text

#: Characters of a payload shown in a message view (the rest is cut, ``truncated`` says so).
PAYLOAD_CUT = 500
#: The most entries one message view returns.
MAX_MESSAGES = 100


async def gather_topics(client: Any, bus: BusPlan) -> dict[str, Any]:
    """``{"swarm", "topics": [...], "inboxes": [...]}`` (the JSON of ``swarm topics -o json``).

    Raises the client's Redis errors (callers map them).
    """
    topics: list[dict[str, Any]] = []
    inboxes: list[dict[str, Any]] = []
    plans = [bus.topics[name] for name in sorted(bus.topics)]
    pipe = client.pipeline(transaction=False)
    for topic in plans:
        pipe.xlen(topic.stream)
        pipe.xlen(topic.dead_letter_stream)
    counts = await pipe.execute()
    for n, topic in enumerate(plans):
        topics.append({"topic": topic.name, "length": int(counts[2 * n]), "dead_letters": int(counts[2 * n + 1]),
                       "publishers": list(topic.publishers), "subscribers": list(topic.subscribers)})
    subscribers = {s for t in plans for s in t.subscribers}
    for agent_id, rights in sorted(bus.agents.items()):
        if agent_id not in subscribers:
            continue
        groups = {as_text(g["name"]): g for g in await _groups(client, rights.inbox)}
        group = groups.get(agent_id, {})
        lag = group.get("lag")
        inboxes.append({"agent": agent_id, "waiting": int(await client.xlen(rights.inbox)),
                        "pending": int(group.get("pending", 0)), "lag": None if lag is None else int(lag),
                        "dead_letters": int(await client.xlen(rights.dead_letter_stream))})
    return {"swarm": bus.swarm, "topics": topics, "inboxes": inboxes}


async def topic_messages(client: Any, bus: BusPlan, topic: str, count: int,
                         cut: int = PAYLOAD_CUT) -> list[dict[str, Any]]:
    """The newest ``count`` (at most :data:`MAX_MESSAGES`) entries of ``topic``'s log, newest
    first, each payload cut to ``cut`` characters. ``topic`` must be in ``bus`` (KeyError)."""
    plan = bus.topics[topic]
    entries = await client.xrevrange(plan.stream, count=max(1, min(count, MAX_MESSAGES)))
    out: list[dict[str, Any]] = []
    for entry_id, fields in entries:
        text = {as_text(k): as_text(v) for k, v in fields.items()}
        payload = text.get("payload", "")
        out.append({"id": as_text(entry_id), "message_id": text.get("message_id", ""),
                    "sender": text.get("sender", ""), "content_type": text.get("content_type", ""),
                    "size": len(payload), "payload": payload[:cut], "truncated": len(payload) > cut})
    return out


async def _groups(client: Any, stream: str) -> list[dict[str, Any]]:
    from redis.exceptions import ResponseError

    try:
        return list(await client.xinfo_groups(stream))
    except ResponseError:  # no such key: the bus is not applied (yet)
        return []
