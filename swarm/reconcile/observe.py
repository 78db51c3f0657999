"""The real ports: the registry over HTTP (httpx) and the bus objects in Redis (redis-py).

Built by :func:`make_ports_factory` for the reconcile loop (``swarm plan``, ``reconcile``,
``status``, ``up``). Each adapter is synchronous — the loop runs a whole pass in
a worker thread — and turns every library error into a :mod:`swarm.errors` type:
connection problems and 5xx become :class:`~swarm.errors.TransientError`
subclasses (the loop retries them), everything else a
:class:`~swarm.errors.PermanentError`.

Creation on the bus uses the rules of :mod:`swarm.bus.apply` (``user_rules``,
``bus_password``, the key layout) limited to the objects the plan names, in one
pipeline; deletions are single Redis commands, one object per action, so a
prune does exactly what the plan printed.

Observation is pipelined: one SCAN for the swarm's streams, one pipeline for
their consumer groups, the ACL/bus documents, the Redis users, the open
breakers and the protection flag — a pass costs a few round trips however many
agents the swarm has.

A Redis user read back in full (the resync timer; see ``assumed_users``) is
compared whole, not only by its topics: :func:`parse_user_rights` reads the
topics it may XADD / XREADGROUP, and the user must then equal, field for field
of ACL GETUSER (password hash, flags, commands, keys, channels, selectors),
what ``user_rules`` writes for exactly those topics. Whatever differs — a rule
removed by hand, a changed password, rules of an older swarm version — lands in
:attr:`UserRights.differs` and the plan re-applies the user. The expected
GETUSER reply is not guessed in Python (Redis 7.0 lists commands in its hash
order, random per process): Redis computes it on a scratch user
(``swarm-<N>-:expected``, a name no agent id can spell) created, read and
deleted inside one MULTI, so no client can ever see or log in as it. Replies
are cached per rules tuple for the port's lifetime, so a steady resync costs
no extra round trip; a user that differs from its cached reply is checked
against a fresh one before it is called changed.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Callable, Iterator, Mapping

import httpx
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from swarm.desired import AclDocument, BusPlan, DesiredState, RegistryCatalog
from swarm.errors import (
    AuthError,
    BusError,
    PermanentError,
    RedisUnavailableError,
    RegistryUnavailableError,
)
from swarm.keys import SwarmKeys, as_text
from swarm.reconcile.state import BusChanges, BusObservation, LiveAgent, UserRights


# --------------------------------------------------------------------------- registry


class HttpRegistryPort:
    """:class:`~swarm.reconcile.state.RegistryPort` over the registry's HTTP API."""

    def __init__(self, url: str, admin_token: str | None, *, timeout: float = 5.0) -> None:
        headers = {"authorization": f"Bearer {admin_token}"} if admin_token else {}
        self._admin_token = admin_token
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=httpx.Timeout(timeout, connect=2.0))

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise RegistryUnavailableError(f"registry at {self.url}: {exc or type(exc).__name__}") from exc
        if response.status_code >= 500:
            raise RegistryUnavailableError(
                f"registry at {self.url}: {method} {path} answered {response.status_code}: {response.text[:200]}",
                delay=float(response.headers.get("retry-after", "1") or 1),
            )
        if response.status_code in (401, 403):
            raise AuthError(
                f"registry at {self.url}: {method} {path} refused ({response.status_code}): {response.text[:200]}; "
                "is SWARM_ADMIN_TOKEN set to the registry's admin token?"
            )
        return response

    def get_catalog(self) -> RegistryCatalog | None:
        response = self._call("GET", "/catalog")
        if response.status_code == 404:
            return None
        _expect(response, 200, "GET /catalog")
        try:
            return RegistryCatalog.model_validate(response.json()["catalog"])
        except (ValueError, KeyError, TypeError) as exc:
            raise PermanentError(f"registry at {self.url}: GET /catalog: unexpected body: {exc}") from exc

    def list_agents(self) -> dict[str, LiveAgent]:
        response = self._call("GET", "/agents")
        _expect(response, 200, "GET /agents")
        try:
            return {
                a["agent_id"]: LiveAgent(
                    agent_id=a["agent_id"], status=str(a.get("status", "healthy")), version=a.get("version"), role=a.get("role")
                )
                for a in response.json()["agents"]
            }
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PermanentError(f"registry at {self.url}: GET /agents: unexpected body: {exc}") from exc

    def push_catalog(self, catalog: RegistryCatalog, revision: str) -> None:
        # `swarm registry push`'s own code, on this port's kept-alive client: a fresh
        # httpx client per push costs ~60 ms of TLS context set-up alone, a third of
        # the save-to-live budget.
        from swarm.registry.catalog_push import push_catalog

        push_catalog(self.url, catalog, revision, self._admin_token, client=self._http)

    def evict(self, agent_id: str) -> None:
        response = self._call("DELETE", f"/agents/{agent_id}")
        _expect(response, (200, 204, 404), f"DELETE /agents/{agent_id}")


def _expect(response: httpx.Response, ok: int | tuple[int, ...], what: str) -> None:
    codes = ok if isinstance(ok, tuple) else (ok,)
    if response.status_code not in codes:
        raise PermanentError(f"registry: {what} answered {response.status_code}: {response.text[:300]}")


# --------------------------------------------------------------------------- redis


@contextmanager
def redis_errors(url: str, what: str) -> Iterator[None]:
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise RedisUnavailableError(f"redis at {url}: {what}: {exc}") from exc
    except RedisError as exc:
        raise BusError(f"redis at {url}: {what} refused: {exc}") from exc


def parse_user_rights(info: dict[str, Any] | None, keys: SwarmKeys) -> UserRights | None:
    """Topics a Redis user may XADD to / XREADGROUP from, read from ACL GETUSER selectors."""
    if info is None:
        return None
    stream_prefix = keys.topic("")
    publish: set[str] = set()
    subscribe: set[str] = set()
    for selector in info.get("selectors") or []:
        fields = dict(zip(selector[::2], selector[1::2])) if isinstance(selector, list) else dict(selector)
        commands = str(fields.get("commands", "")).split()
        patterns = str(fields.get("keys", "")).split()
        if "+xadd" in commands:
            publish |= {p[len("%W~" + stream_prefix):] for p in patterns if p.startswith("%W~" + stream_prefix)}
        if "+xreadgroup" in commands:
            subscribe |= {p[len("~" + stream_prefix):] for p in patterns if p.startswith("~" + stream_prefix)}
    return UserRights(publish=frozenset(publish), subscribe=frozenset(subscribe), enabled=bool(info.get("enabled", True)))


#: The agent id part of the scratch user: ':' is outside the agent id charset.
SCRATCH_ID = ":expected"


def user_differences(live: Mapping[str, Any], expected: Mapping[str, Any]) -> frozenset[str]:
    """ACL GETUSER fields (redis-py's parsed reply) in which ``live`` differs from ``expected``.

    ``passwords`` is reported as "password"; the on/off flag is left out (it is
    :attr:`UserRights.enabled`), the other flags are compared as a set.
    """
    out: set[str] = set()
    for name in sorted(set(live) | set(expected)):
        if name in ("enabled", "flags"):
            continue
        if live.get(name) != expected.get(name):
            out.add("password" if name == "passwords" else name)
    flags_live = set(live.get("flags") or ()) - {"on", "off"}
    flags_expected = set(expected.get("flags") or ()) - {"on", "off"}
    if flags_live != flags_expected:
        out.add("flags")
    return frozenset(out)


class RedisBusPort:
    """:class:`~swarm.reconcile.state.BusPort` and the status store, on one Redis."""

    def __init__(self, url: str, swarm: str, *, bus_secret: str | None) -> None:
        self.url = url
        self.keys = SwarmKeys(swarm)
        self.bus_secret = bus_secret
        self._redis = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2)
        # rules tuple -> ACL GETUSER reply of a user given exactly those rules (this Redis computed it)
        self._canonical: dict[tuple[str, ...], dict[str, Any]] = {}
        # (agent id, publish, subscribe) -> its rules: user_rules + HMAC cost ~40 us, per user per resync
        self._rules_memo: dict[tuple[str, frozenset[str], frozenset[str]], tuple[str, ...]] = {}

    def close(self) -> None:
        self._redis.close()

    def observe(self, bus: BusPlan, assumed_users: Mapping[str, UserRights] | None = None) -> BusObservation:
        keys = self.keys
        assumed = assumed_users or {}
        with redis_errors(self.url, "observe"):
            streams = sorted(map(as_text, self._redis.scan_iter(match=keys.topic_pattern, _type="stream", count=1000)))
            breakers = sorted(map(as_text, self._redis.scan_iter(match=keys.breaker_pattern, count=1000)))
            user_prefix = keys.redis_user("")
            all_users = map(as_text, self._redis.acl_users()) if self.bus_secret else iter(())
            users = sorted(u for u in all_users if u.startswith(user_prefix))
            unread = [u for u in users if u[len(user_prefix):] in assumed]
            read = [u for u in users if u[len(user_prefix):] not in assumed]
            pipe = self._redis.pipeline(transaction=False)
            for s in streams:
                pipe.xinfo_groups(s)
            pipe.get(keys.acl)
            pipe.get(keys.bus)
            pipe.get(keys.protection)
            for b in breakers:
                pipe.hget(b, "state")
            for u in read:
                pipe.acl_getuser(u)
            replies = pipe.execute(raise_on_error=False)
        it = iter(replies)
        topic_prefix = keys.topic("")
        groups: dict[str, frozenset[str]] = {}
        for s in streams:
            reply = next(it)
            groups[s[len(topic_prefix):]] = (
                frozenset() if isinstance(reply, Exception) else frozenset(str(g["name"]) for g in reply)
            )
        acl_raw, bus_raw, protection = next(it), next(it), next(it)
        open_breakers = []
        for b in breakers:
            state = next(it)
            if state in ("open", "half_open"):  # publishing blocked (half-open: one probe only)
                open_breakers.append(b[len(keys.breaker("")):])
        rights: dict[str, UserRights] = {u[len(user_prefix):]: assumed[u[len(user_prefix):]] for u in unread}
        infos: dict[str, tuple[dict[str, Any], UserRights]] = {}
        for u in read:
            info = next(it)
            parsed = None if isinstance(info, Exception) else parse_user_rights(info, keys)
            # only users whose keys live in this swarm (swarm "research-x" shares the name prefix)
            if parsed is not None and keys.prefix in repr(info):
                infos[u[len(user_prefix):]] = (info, parsed)
        if infos:
            rights.update(self._compare_users(infos))
        return BusObservation(
            streams=frozenset(groups),
            groups=groups,
            users=rights,
            users_managed=bool(self.bus_secret),
            acl=_parse(AclDocument, acl_raw),
            settings=_parse(BusPlan, bus_raw),
            breakers_open=tuple(open_breakers),
            protection=protection is not None,  # the registry keeps the time protection began
        )

    def _rules(self, agent_id: str, publish: frozenset[str], subscribe: frozenset[str]) -> tuple[str, ...]:
        """The ACL SETUSER rules of an agent with these topics (topics sorted: one spelling per set)."""
        from swarm.bus.apply import bus_password, user_rules

        assert self.bus_secret is not None
        password = bus_password(self.bus_secret, self.keys.swarm, agent_id)
        return tuple(user_rules(self.keys, agent_id, sorted(publish), sorted(subscribe), password))

    def _compare_users(self, infos: Mapping[str, tuple[dict[str, Any], UserRights]]) -> dict[str, UserRights]:
        """Each user's rights with :attr:`UserRights.differs` filled from a whole-user comparison.

        The rules compared with are those of the topics the user itself holds: a
        user equal to them differs from the spec only in topics, which the plan
        compares; together that is "the user equals ``user_rules`` of the spec".
        """
        memo, self._rules_memo = self._rules_memo, {}  # keep only this pass's entries: bounded
        rules: dict[str, tuple[str, ...]] = {}
        for aid, (_, parsed) in infos.items():
            key = (aid, parsed.publish, parsed.subscribe)
            rules[aid] = self._rules_memo[key] = memo.get(key) or self._rules(*key)
        cache = self._canonical
        # a reply cached by an earlier pass confirms equality; anything else is asked afresh
        ask = sorted({rules[aid] for aid, (info, _) in infos.items() if cache.get(rules[aid]) != info})
        fresh = self._canonical_replies(ask) if ask else {}
        self._canonical = kept = {r: fresh.get(r) or cache[r] for r in rules.values()}
        out: dict[str, UserRights] = {}
        for aid, (info, parsed) in infos.items():
            differs = user_differences(info, kept[rules[aid]])
            out[aid] = replace(parsed, differs=differs) if differs else parsed
        return out

    def _canonical_replies(self, rule_sets: list[tuple[str, ...]]) -> dict[tuple[str, ...], dict[str, Any]]:
        """ACL GETUSER of a user given exactly each rules tuple, computed by Redis on a scratch user.

        One MULTI: set, read back, …, delete. Every rules tuple starts with
        ``reset``, so the scratch user holds nothing of the previous one, and no
        other client runs between the commands (no one can log in as it, and a
        connection lost half-way leaves nothing behind).
        """
        scratch = self.keys.redis_user(SCRATCH_ID)
        with redis_errors(self.url, "compute the expected Redis users"):
            with self._redis.pipeline(transaction=True) as tx:
                for rules in rule_sets:
                    assert rules[0] == "reset", rules
                    tx.execute_command("ACL", "SETUSER", scratch, *rules)  # type: ignore[no-untyped-call]
                    tx.acl_getuser(scratch)
                tx.acl_deluser(scratch)
                replies = tx.execute()
        return {rules: replies[2 * i + 1] for i, rules in enumerate(rule_sets)}

    def apply(self, bus: BusPlan, acl: AclDocument, changes: BusChanges) -> None:
        """Create / rewrite exactly ``changes``, with the rules of :mod:`swarm.bus.apply`.

        Not ``apply_bus`` itself: it reads every Redis user back twice (ACL GETUSER
        costs Redis ~0.4 ms per user), which for 100 agents is most of a pass; the
        plan already names the objects that differ. Same semantics: groups start at
        id 0, an empty stream is made with a throw-away group, the ACL table and bus
        settings are replaced together in one MULTI, users get ``user_rules``.
        """
        keys = self.keys
        with redis_errors(self.url, "bus apply"):
            pipe = self._redis.pipeline(transaction=False)
            for name in changes.streams:
                tp = bus.topics[name]
                for cg in tp.consumer_groups:
                    pipe.xgroup_create(tp.stream, cg.group, id="0", mkstream=True)
                if not tp.consumer_groups:
                    pipe.xgroup_create(tp.stream, "swarm-apply", id="$", mkstream=True)
                    pipe.xgroup_destroy(tp.stream, "swarm-apply")
            for name, group in changes.groups:
                pipe.xgroup_create(bus.topics[name].stream, group, id="0", mkstream=True)
            if changes.users and self.bus_secret:
                for agent_id in changes.users:
                    rights = acl.agents.get(agent_id)
                    # the very rules observe compares users with (one spelling: topics sorted)
                    rules = self._rules(agent_id, frozenset(rights.publish if rights else ()),
                                        frozenset(rights.subscribe if rights else ()))
                    pipe.execute_command("ACL", "SETUSER", keys.redis_user(agent_id), *rules)  # type: ignore[no-untyped-call]
            replies = pipe.execute(raise_on_error=False) if len(pipe) else []
            for reply in replies:
                if isinstance(reply, Exception) and "BUSYGROUP" not in str(reply):
                    raise reply
            if changes.documents:
                with self._redis.pipeline(transaction=True) as tx:
                    tx.set(keys.acl, acl.model_dump_json())
                    tx.set(keys.bus, bus.model_dump_json())
                    tx.execute()

    def delete_group(self, bus: BusPlan, topic: str, group: str) -> None:
        with redis_errors(self.url, f"delete consumer group {group} of {topic}"):
            try:
                self._redis.xgroup_destroy(self.keys.topic(topic), group)
            except ResponseError as exc:
                if "no such key" not in str(exc).lower():
                    raise

    def delete_stream(self, bus: BusPlan, topic: str) -> None:
        with redis_errors(self.url, f"delete stream of {topic}"):
            self._redis.delete(self.keys.topic(topic), self.keys.dead_letter(topic))

    def delete_user(self, bus: BusPlan, agent_id: str) -> None:
        with redis_errors(self.url, f"delete Redis user of {agent_id}"):
            self._redis.acl_deluser(self.keys.redis_user(agent_id))

    # -- status store (StatusSink) ---------------------------------------------

    def read_status(self) -> str | None:
        with redis_errors(self.url, "read status"):
            value = self._redis.get(self.keys.status)
        return None if value is None else str(value)

    def write_status(self, text: str) -> None:
        with redis_errors(self.url, "write status"):
            self._redis.set(self.keys.status, text)

    def read_applied_spec(self) -> str | None:
        with redis_errors(self.url, "read the applied spec"):
            value = self._redis.get(self.keys.applied_spec)
        return None if value is None else str(value)

    def write_applied_spec(self, text: str) -> None:
        with redis_errors(self.url, "store the applied spec"):
            self._redis.set(self.keys.applied_spec, text)




def _parse(model: Any, raw: object) -> Any:
    if not isinstance(raw, str):
        return None
    try:
        return model.model_validate_json(raw)
    except ValueError:
        return None


def make_ports_factory(admin_token: str | None | Callable[[str], str | None],
                       bus_secret: str | None) -> Callable[..., Any]:
    """A :data:`~swarm.reconcile.loop.PortsFactory` building the real adapters.

    ``admin_token`` may be a function of the swarm name (the derived admin token binds it).
    """
    from swarm.reconcile.loop import Ports, ReconcileConfig

    def factory(desired: DesiredState, config: ReconcileConfig) -> Ports:
        token = admin_token(desired.registry.swarm) if callable(admin_token) else admin_token
        registry = HttpRegistryPort(config.registry_url or desired.registry.settings.url, token)
        bus = RedisBusPort(config.redis_url or desired.bus.settings.redis_url, desired.bus.swarm, bus_secret=bus_secret)

        def close() -> None:
            registry.close()
            bus.close()

        return Ports(registry=registry, bus=bus, status=bus, close=close)

    return factory
