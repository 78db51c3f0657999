"""Install the desired bus in Redis: streams, consumer groups, ACL table, settings, users.

Called by ``swarm bus apply compiled/<swarm>`` and by the reconciler (the same
function, so both say the same thing about what changed). Idempotent: a second run
reports no change. Decisions:

* Streams of the mediated bus: every topic's canonical log (no consumer groups: the
  router appends, ``swarm bus read`` looks), every agent's outbox with the router's
  group :data:`~swarm.keys.ROUTER_GROUP` and every agent's inbox with the agent's own
  group ``<id>``. Groups start at id ``0``, so an entry written before its group was
  created is still routed/delivered (at-least-once across that race).
* ``acl.json`` and ``bus.json`` are written with one SET each inside one MULTI, so a
  reader never sees a new table with old settings.
* One Redis ACL user per agent, ``swarm.<swarm>.<agent id>``, password
  :func:`bus_password` (HMAC-SHA256 of swarm and agent id under the bus secret,
  ``SWARM_BUS_SECRET`` or else ``SWARM_REGISTRY_SECRET``, read by the CLI). Without a
  secret no users are written and the report says so. The rights are exactly what
  the mediated design gives an agent (:func:`user_rules`): XADD to its own outbox and
  dead letters, its own inbox's consumer-group commands, reads of its receipts and
  breaker, GET of the swarm's acl/bus documents. No scripts, no topic stream, no
  dedup mark, no other agent's key, no stream administration. Redis 7 selectors bind
  each command to its keys; ``%R~``/``%W~`` split read from write where a key may only
  be read or only be written.
* A user of the same name whose key patterns are not all inside this swarm's prefix
  belongs to someone else: apply refuses (BusError) instead of overwriting it, and
  prune never deletes it.
* ``prune`` deletes topic streams (and their dead letters), the streams of agents no
  longer declared, leftover consumer groups on topic streams and users of the swarm
  that the plan no longer declares. A prune that would remove more than half of the
  existing topic streams or agent users is refused before anything changes unless
  ``force_prune``: a spec that suddenly declares nothing is a mistake until proven
  otherwise (Argo CD's allowEmpty exists because an empty render once pruned whole
  applications).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from swarm.redis_conn import mirror_users
from swarm.desired import AclDocument, BusPlan
from swarm.errors import BusError
from swarm.foreign import REDIS_ERRORS, redis_error
from swarm.keys import ROUTER_GROUP, SwarmKeys, as_text
from swarm.redis_auth import bus_password as bus_password  # pure; re-exported where callers find it

#: Commands an agent may run outside key-bound selectors (no key, no script).
_BASE_COMMANDS = ["+ping", "+multi", "+exec", "+discard"]


@dataclass
class ApplyReport:
    """What ``apply_bus`` changed; empty lists and False flags mean nothing did."""

    created_streams: list[str] = field(default_factory=list)
    created_groups: list[str] = field(default_factory=list)  # "stream/group"
    acl_updated: bool = False
    settings_updated: bool = False
    created_users: list[str] = field(default_factory=list)
    updated_users: list[str] = field(default_factory=list)
    users_skipped: bool = False
    pruned_streams: list[str] = field(default_factory=list)
    pruned_groups: list[str] = field(default_factory=list)
    pruned_users: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(
            self.created_streams or self.created_groups or self.acl_updated or self.settings_updated
            or self.created_users or self.updated_users
            or self.pruned_streams or self.pruned_groups or self.pruned_users
        )

    def lines(self) -> list[str]:
        out = [f"created stream {s}" for s in self.created_streams]
        out += [f"created consumer group {g}" for g in self.created_groups]
        if self.acl_updated:
            out.append("updated ACL table")
        if self.settings_updated:
            out.append("updated bus settings")
        out += [f"created Redis user {u}" for u in self.created_users]
        out += [f"updated Redis user {u}" for u in self.updated_users]
        out += [f"pruned stream {s}" for s in self.pruned_streams]
        out += [f"pruned consumer group {g}" for g in self.pruned_groups]
        out += [f"pruned Redis user {u}" for u in self.pruned_users]
        if self.users_skipped:
            out.append("skipped Redis users: no bus secret (set SWARM_BUS_SECRET)")
        return out


def agent_redis_url(redis_url: str, swarm: str, agent_id: str, secret: str) -> str:
    """``redis_url`` with the agent's user and password in it."""
    parts = urlsplit(redis_url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(SwarmKeys(swarm).redis_user(agent_id))}:{bus_password(secret, swarm, agent_id)}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def user_rules(keys: SwarmKeys, agent_id: str, publish: list[str], subscribe: list[str], password: str) -> list[str]:
    """The ACL SETUSER rules of one agent (pure).

    ``publish``/``subscribe`` are part of the signature the reconciler and registry
    call; the rights no longer depend on them: an agent publishes through its outbox
    and receives through its inbox whatever its topics are, and the router enforces
    the topics. Each selector binds commands to keys, so no command reaches a key
    outside its own selector."""
    del publish, subscribe
    return [
        "reset", "on", f">{password}", *_BASE_COMMANDS,
        f"(+xadd %W~{keys.outbox(agent_id)} %W~{keys.agent_dead_letter(agent_id)})",
        # XREADGROUP and XAUTOCLAIM move the group's cursor and pending list: read-write.
        # XDEL: an ack deletes the entry (the router never trims an inbox, so the agent
        # removes what it finished); it can only delete its own deliveries.
        f"(+xreadgroup +xack +xdel +xautoclaim +xpending ~{keys.inbox(agent_id)})",
        f"(+xread +xrange +xrevrange %R~{keys.receipts(agent_id)})",
        f"(+hget +hmget +hgetall %R~{keys.breaker(agent_id)})",
        f"(+get +mget +getrange %R~{keys.acl} %R~{keys.bus})",
    ]


def key_patterns(info: dict[str, Any]) -> list[str]:
    """Every key pattern of an ``ACL GETUSER`` reply (root and selectors), without its ``%R~`` prefix."""
    raw: list[str] = []
    keys = info.get("keys") or []
    raw += keys.split() if isinstance(keys, str) else [as_text(k) for k in keys]
    for selector in info.get("selectors") or []:
        pairs = dict(zip(selector[::2], selector[1::2])) if isinstance(selector, list) else dict(selector)
        raw += as_text(pairs.get("keys", "")).split()
    return [p.split("~", 1)[1] if "~" in p else p for p in raw]


def belongs_to(info: dict[str, Any], keys: SwarmKeys) -> bool:
    """Whether an existing user is one of this swarm's: it has key patterns and all are inside the swarm."""
    patterns = key_patterns(info)
    return bool(patterns) and all(p.startswith(keys.prefix) for p in patterns)


async def _groups(redis: aioredis.Redis, stream: str) -> set[str]:
    try:
        infos = await redis.xinfo_groups(stream)
    except ResponseError:
        return set()
    return {as_text(i["name"]) for i in infos}


async def apply_bus(
    redis: aioredis.Redis,
    bus_plan: BusPlan,
    acl: AclDocument,
    *,
    prune: bool = False,
    force_prune: bool = False,
    secret: str | None = None,
) -> ApplyReport:
    """Make Redis hold ``bus_plan`` and ``acl``; return what changed.

    Raises :class:`BusError` (nothing changed) when a prune would remove more than
    half of the swarm's topic streams or agent users and ``force_prune`` is false,
    or when a user of an agent's name belongs to another swarm."""
    try:
        if secret:
            await _check_owners(redis, bus_plan)
        if prune and not force_prune:
            refused = await _mass_prune(redis, bus_plan, secret)
            if refused is not None:
                raise BusError(refused)
        report = await _apply(redis, bus_plan, acl, prune=prune, secret=secret)
        if secret:  # a Redis Cluster: every node gets the users (a promoted replica must let agents in)
            await mirror_users(redis, bus_plan.swarm)
        return report
    except REDIS_ERRORS as exc:
        raise redis_error(exc, "bus apply") from exc


async def _check_owners(redis: aioredis.Redis, plan: BusPlan) -> None:
    """Refuse before any change when an agent's user name is taken by a user that is not this swarm's."""
    keys = SwarmKeys(plan.swarm)
    for agent_id in sorted(plan.agents):
        user = keys.redis_user(agent_id)
        info = await redis.acl_getuser(user)
        if info is not None and not belongs_to(info, keys):
            raise BusError(
                f"Redis user {user!r} exists and is not one of swarm {plan.swarm!r}'s (its key patterns "
                f"{key_patterns(info)[:4]} are not all under {keys.prefix}); refusing to overwrite it: "
                "delete or rename it, or pick another swarm name"
            )


async def _prunable_users(redis: aioredis.Redis, plan: BusPlan) -> tuple[list[str], list[str]]:
    """(users of this swarm, those the plan no longer declares)."""
    keys = SwarmKeys(plan.swarm)
    prefix = keys.redis_user_prefix
    wanted = {keys.redis_user(a) for a in plan.agents}
    ours, gone = [], []
    for user in sorted(as_text(u) for u in await redis.acl_users()):
        if not user.startswith(prefix):
            continue
        info = await redis.acl_getuser(user)
        if info is None or not belongs_to(info, keys):
            continue  # a look-alike made by someone else: never ours to prune
        if user not in wanted:
            gone.append(user)
        ours.append(user)
    return ours, gone


async def _mass_prune(redis: aioredis.Redis, plan: BusPlan, secret: str | None) -> str | None:
    """Why a prune would remove too much (more than half of the streams or users), else None."""
    keys = SwarmKeys(plan.swarm)
    declared = {tp.stream for tp in plan.topics.values()}
    streams = [as_text(k) async for k in redis.scan_iter(match=keys.topic_pattern, _type="stream", count=500)]
    checks = [("topic streams", sum(s not in declared for s in streams), len(streams))]
    if secret:
        ours, gone = await _prunable_users(redis, plan)
        checks.append(("agents' Redis users", len(gone), len(ours)))
    for what, count, total in checks:
        if count and count * 2 > total:
            return (f"the prune would remove {count} of {total} {what} of swarm {plan.swarm!r} (more than half); "
                    "check the spec, then pass --force-prune to confirm")
    return None


async def _ensure_stream(redis: aioredis.Redis, report: ApplyReport, stream: str, group: str | None) -> set[str]:
    """Create ``stream`` (and ``group`` at id 0 on it) if missing; returns the groups it had."""
    existed = bool(await redis.exists(stream))
    have = await _groups(redis, stream) if existed else set()
    if group is not None and group not in have:
        try:
            await redis.xgroup_create(stream, group, id="0", mkstream=True)
            report.created_groups.append(f"{stream}/{group}")
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
    if not existed:
        if group is None:  # an empty stream needs a group to exist: make one and drop it
            await redis.xgroup_create(stream, "swarm-apply", id="$", mkstream=True)
            await redis.xgroup_destroy(stream, "swarm-apply")
        report.created_streams.append(stream)
    return have


async def _apply(
    redis: aioredis.Redis, plan: BusPlan, acl: AclDocument, *, prune: bool, secret: str | None
) -> ApplyReport:
    if plan.swarm != acl.swarm:
        raise BusError(f"bus.json is for swarm {plan.swarm!r} but acl.json for {acl.swarm!r}")
    keys = SwarmKeys(plan.swarm)
    report = ApplyReport()

    for tp in plan.topics.values():
        have = await _ensure_stream(redis, report, tp.stream, None)
        if prune:  # the mediated bus has no groups on topic logs (older layouts had one per subscriber)
            for group in sorted(have):
                await redis.xgroup_destroy(tp.stream, group)
                report.pruned_groups.append(f"{tp.stream}/{group}")
    for agent_id, rights in sorted(plan.agents.items()):
        await _ensure_stream(redis, report, rights.outbox, ROUTER_GROUP)
        await _ensure_stream(redis, report, rights.inbox, agent_id)

    acl_json, bus_json = acl.model_dump_json(), plan.model_dump_json()
    old_acl, old_bus = await redis.mget([keys.acl, keys.bus])
    old_acl, old_bus = (as_text(v) if v is not None else None for v in (old_acl, old_bus))
    if old_acl != acl_json or old_bus != bus_json:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.acl, acl_json)
            pipe.set(keys.bus, bus_json)
            await pipe.execute()
        report.acl_updated = old_acl != acl_json
        report.settings_updated = old_bus != bus_json

    if secret:
        for agent_id in sorted(plan.agents):
            rights_acl = acl.agents.get(agent_id)
            publish = rights_acl.publish if rights_acl else []
            subscribe = rights_acl.subscribe if rights_acl else []
            user = keys.redis_user(agent_id)
            before = await redis.acl_getuser(user)
            rules = user_rules(keys, agent_id, publish, subscribe, bus_password(secret, plan.swarm, agent_id))
            await redis.execute_command("ACL", "SETUSER", user, *rules)  # type: ignore[no-untyped-call]
            if before is None:
                report.created_users.append(user)
            elif before != await redis.acl_getuser(user):
                report.updated_users.append(user)
    else:
        report.users_skipped = True

    if prune:
        declared = {tp.stream for tp in plan.topics.values()}
        dead = {tp.dead_letter_stream for tp in plan.topics.values()}
        agents = {k for r in plan.agents.values() for k in (r.outbox, r.inbox, r.receipts, r.dead_letter_stream)}
        patterns = (
            (keys.topic_pattern, declared),
            (keys.dead_letter("*"), dead | agents),
            (keys.outbox_pattern, agents),
            (keys.inbox_pattern, agents),
            (keys.receipts("*"), agents),
        )
        for pattern, wanted in patterns:
            async for key in redis.scan_iter(match=pattern, _type="stream", count=500):
                key = as_text(key)
                if key not in wanted:
                    await redis.delete(key)
                    report.pruned_streams.append(key)
        report.pruned_streams.sort()
        if secret:
            for user in (await _prunable_users(redis, plan))[1]:
                await redis.acl_deluser(user)
                report.pruned_users.append(user)
    return report
