"""Install the desired bus in Redis: streams, consumer groups, ACL table, settings, users.

Called by ``swarm bus apply compiled/<swarm>`` and by the reconciler (the same
function, so both say the same thing about what changed). Idempotent: a second run
reports no change. Decisions:

* Consumer groups start at id ``0``: an agent whose group is created after messages
  were published still gets what the stream retains (at-least-once across the race
  between a publish and the group's creation); ``max_len`` bounds that replay.
* ``acl.json`` and ``bus.json`` are written with one SET each inside one MULTI, so a
  reader (:meth:`EventBus.connect`) never sees a new table with old settings.
* One Redis ACL user per agent, ``swarm-<swarm>-<agent id>``, password
  :func:`bus_password` (HMAC-SHA256 of swarm and agent id under the bus secret,
  ``SWARM_BUS_SECRET`` or else ``SWARM_REGISTRY_SECRET``, read by the CLI). Without a
  secret no users are written and the report says so. Rights use Redis 7 selectors
  so the command and the keys must match together: XADD only on streams of topics
  the role may publish, XREADGROUP/XACK/XAUTOCLAIM only on those it may subscribe
  to, the publish script (EVALSHA with its declared keys: own breaker, published
  streams, their dedup marks) and GET/GETRANGE of the swarm's acl/bus keys. Redis itself then
  refuses an agent's raw XADD to a stream its role may not publish (NOPERM).
* ``prune`` deletes topic streams (and their dead letters), consumer groups and
  users of the swarm that the plan no longer declares. A prune that would remove
  more than half of the existing topic streams or agent users is refused before
  anything changes unless ``force_prune`` (the reconciler's rule, DESIGN §7: a spec
  that suddenly declares nothing is a mistake until proven otherwise).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from swarm.desired import AclDocument, BusPlan
from swarm.errors import BusError, RedisUnavailableError
from swarm.keys import SwarmKeys, as_text

#: Commands an agent may run outside key-bound selectors.
_BASE_COMMANDS = ["+ping", "+echo", "+time", "+multi", "+exec", "+discard", "+script|load", "+script|exists"]


@dataclass
class ApplyReport:
    """What ``apply_bus`` changed; empty lists and False flags mean nothing did."""

    created_streams: list[str] = field(default_factory=list)
    created_groups: list[str] = field(default_factory=list)  # "topic/group"
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


def bus_password(secret: str, swarm: str, agent_id: str) -> str:
    """The Redis password of an agent's user: HMAC-SHA256(secret, "swarm-bus:<swarm>:<id>")."""
    return hmac.new(secret.encode(), f"swarm-bus:{swarm}:{agent_id}".encode(), hashlib.sha256).hexdigest()


def agent_redis_url(redis_url: str, swarm: str, agent_id: str, secret: str) -> str:
    """``redis_url`` with the agent's user and password in it."""
    parts = urlsplit(redis_url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(SwarmKeys(swarm).redis_user(agent_id))}:{bus_password(secret, swarm, agent_id)}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def user_rules(keys: SwarmKeys, agent_id: str, publish: list[str], subscribe: list[str], password: str) -> list[str]:
    """The ACL SETUSER rules of one agent (pure)."""
    pub_streams = [keys.topic(t) for t in publish]
    pub_marks = [keys.dedup(t, "*") for t in publish]
    rules = ["reset", "on", f">{password}", *_BASE_COMMANDS, "+evalsha", "+eval", "+hget", "+hmget"]
    # EVALSHA of the publish script checks its declared keys read-write, in one selector.
    rules += [f"~{k}" for k in [keys.breaker(agent_id), *pub_streams, *pub_marks]]
    rules.append(f"(+get +mget +getrange %R~{keys.acl} %R~{keys.bus})")  # getrange: EventBus._refresh
    if publish:
        rules.append("(+set +get " + " ".join(f"~{k}" for k in pub_marks) + ")")
        rules.append("(+xadd " + " ".join(f"%W~{k}" for k in pub_streams) + ")")
    if subscribe:
        sub_streams = " ".join(f"~{keys.topic(t)}" for t in subscribe)
        rules.append(f"(+xreadgroup +xack +xautoclaim +xpending +xinfo|groups +xinfo|stream {sub_streams})")
        rules.append("(+xadd " + " ".join(f"%W~{keys.dead_letter(t)}" for t in subscribe) + ")")
    return rules


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
    half of the swarm's topic streams or agent users and ``force_prune`` is false."""
    try:
        if prune and not force_prune:
            refused = await _mass_prune(redis, bus_plan, secret)
            if refused is not None:
                raise BusError(refused)
        return await _apply(redis, bus_plan, acl, prune=prune, secret=secret)
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise RedisUnavailableError(f"bus apply: Redis unreachable: {exc}") from exc
    except RedisError as exc:
        raise BusError(f"bus apply: Redis refused: {exc}") from exc


async def _prunable_users(redis: aioredis.Redis, plan: BusPlan) -> tuple[list[str], list[str]]:
    """(users of this swarm, those the plan no longer declares)."""
    keys = SwarmKeys(plan.swarm)
    prefix = keys.redis_user("")
    wanted = {keys.redis_user(a) for a in plan.agents}
    ours, gone = [], []
    for user in sorted(as_text(u) for u in await redis.acl_users()):
        if not user.startswith(prefix):
            continue
        if user not in wanted:
            # "swarm-research-x-a" may belong to swarm "research-x": only users whose key
            # patterns are inside this swarm's prefix are ours.
            if keys.prefix not in repr(await redis.acl_getuser(user)):
                continue
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


async def _apply(
    redis: aioredis.Redis, plan: BusPlan, acl: AclDocument, *, prune: bool, secret: str | None
) -> ApplyReport:
    if plan.swarm != acl.swarm:
        raise BusError(f"bus.json is for swarm {plan.swarm!r} but acl.json for {acl.swarm!r}")
    keys = SwarmKeys(plan.swarm)
    report = ApplyReport()

    for name, tp in plan.topics.items():
        existed = bool(await redis.exists(tp.stream))
        have = await _groups(redis, tp.stream) if existed else set()
        for cg in tp.consumer_groups:
            if cg.group in have:
                continue
            try:
                await redis.xgroup_create(tp.stream, cg.group, id="0", mkstream=True)
                report.created_groups.append(f"{name}/{cg.group}")
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        if not existed:
            if not tp.consumer_groups:  # an empty stream needs a group to exist: make one and drop it
                await redis.xgroup_create(tp.stream, "swarm-apply", id="$", mkstream=True)
                await redis.xgroup_destroy(tp.stream, "swarm-apply")
            report.created_streams.append(tp.stream)
        if prune and existed:
            wanted = {cg.group for cg in tp.consumer_groups}
            for group in sorted(have - wanted):
                await redis.xgroup_destroy(tp.stream, group)
                report.pruned_groups.append(f"{name}/{group}")

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
            rights = acl.agents.get(agent_id)
            publish = rights.publish if rights else []
            subscribe = rights.subscribe if rights else []
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
        for pattern, wanted in ((keys.topic_pattern, declared), (keys.dead_letter("*"), dead)):
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
