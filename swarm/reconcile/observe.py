"""The real ports: the registry over HTTP (httpx) and the bus objects in Redis (redis-py).

Built by :func:`make_ports_factory` for the reconcile loop (``swarm plan``, ``reconcile``,
``status``, ``up``). Each adapter is synchronous — the loop runs a whole pass in
a worker thread — and turns every library error into a :mod:`swarm.errors` type
through :mod:`swarm.foreign` (one policy: connection trouble, 5xx/429 and Redis'
passing states are transient and retried, every other refusal is permanent).

Creation on the bus uses the rules of :mod:`swarm.bus.apply` (``user_rules``,
``bus_password``, the key layout) limited to the objects the plan names, in one
MULTI; deletions name one object per action, so a prune does exactly what the
plan printed. Every write is fenced by the reconcile lease
(:mod:`swarm.reconcile.lease`) when the loop holds one.

Observation is pipelined: one SCAN each for the swarm's topic streams, outboxes
and inboxes, one pipeline for their consumer groups, the ACL/bus documents, the
Redis users, the open breakers and the protection flag — a pass costs a few
round trips however many agents the swarm has.

Redis users are those named ``swarm.<N>.<agent id>`` (``.`` is in no swarm name
or agent id, so another swarm's users never match, and are never rewritten or
deleted). A user read back in full (the resync timer; see ``assumed_users``) is
compared whole, field for field of ACL GETUSER (password hash, flags, commands,
keys, channels, selectors), with what ``user_rules`` writes for the desired
topics, or for those of the bus settings applied before (then the spec changed
it, and the plan says how). Whatever differs — a rule removed by hand, a changed
password, rules of an older swarm version — lands in
:attr:`UserRights.differs` and the plan re-applies the user. The expected
GETUSER reply is not guessed in Python (Redis 7.0 lists commands in its hash
order, random per process): Redis computes it on a scratch user
(``swarm.<N>.:expected``, a name no agent id can spell) created, read and
deleted inside one MULTI, so no client can ever see or log in as it. Redis
computes one reply per set of topics, for the scratch id's own rules (a
template): an agent's expected reply is the template's with its id put back in
the key patterns and the SHA-256 of its password (what GETUSER lists), used
only when doing the same to the template's rules gives exactly the agent's
rules (else the agent's own rules are asked). Replies are cached for the
port's lifetime; a user that differs from its cached reply is checked against
a fresh one before it is called changed.

Most users are never read one by one: ``ACL GETUSER`` costs Redis ~0.4 ms a
user on 7.0 (it describes every command of each selector, each time), which
made it the floor of a no-op plan at 1,000 users. ``ACL LIST`` gives every
user's rules as one canonical line, and Redis keeps each user's line until
the user changes, so listing 1,000 unchanged users costs a few ms. One MULTI
gives the scratch user(s) the template rules, lists all users and deletes the
scratch users (so expected and live lines come from the same Redis process, at
the same moment); a user whose line equals its expected line (the template's,
with the agent's id and password hash put back) is judged by it. Only a user
whose line differs is read back with ``ACL GETUSER`` (in pipelines of
:data:`USER_BATCH`) and compared field by field, as above, which names what
differs.
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Mapping

import httpx
from redis.exceptions import WatchError

from swarm.desired import AclDocument, AgentsDocumentText, BusPlan, DesiredState, RegistryCatalog
from swarm.errors import AuthError, PermanentError
from swarm.foreign import REDIS_ERRORS, http_status_error, http_transport_error, redis_error
from swarm.keys import ROUTER_GROUP, SwarmKeys, as_text
from swarm.reconcile.lease import Fence, LeaseLost
from swarm.reconcile.state import BusChanges, BusObservation, LiveAgent, UserRights
from swarm.redis_auth import masked
from swarm.redis_conn import mirror_users_sync, sync_client
from swarm.spec.names import NAME_MAX, NAME_PATTERN


# --------------------------------------------------------------------------- registry


class HttpRegistryPort:
    """:class:`~swarm.reconcile.state.RegistryPort` over the registry's HTTP API."""

    def __init__(self, url: str, admin_token: str | None, *, timeout: float = 5.0) -> None:
        headers = {"authorization": f"Bearer {admin_token}"} if admin_token else {}
        self._admin_token = admin_token
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=httpx.Timeout(timeout, connect=2.0),
                                  verify=_tls_for(self.url))

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        what = f"registry at {self.url}: {method} {path}"
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise http_transport_error(exc, what) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise http_status_error(response, what)
        if response.status_code in (401, 403):
            raise AuthError(f"{http_status_error(response, what)}; is SWARM_ADMIN_TOKEN set to the registry's admin token?")
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

    def agent_counts(self) -> dict[str, int]:
        """Registrations by status (``healthy``, ``critical``, ``expiring``) from GET /status: the
        registry counts them, so no list of agents crosses the wire (cheap at 10,000 agents)."""
        response = self._call("GET", "/status")
        _expect(response, 200, "GET /status")
        try:
            agents = response.json()["agents"] or {}
            return {str(k): int(v) for k, v in agents.items() if k not in ("declared", "live")}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PermanentError(f"registry at {self.url}: GET /status: unexpected body: {exc}") from exc

    def push_catalog(self, catalog: RegistryCatalog, revision: str) -> None:
        # `swarm registry push`'s own code, on this port's kept-alive client: a fresh
        # httpx client per push costs ~60 ms of TLS context set-up alone, a third of
        # the save-to-live budget.
        from swarm.registry.catalog_push import push_catalog

        push_catalog(self.url, catalog, revision, self._admin_token, client=self._http)

    def patch_catalog(self, delta: Any, base_digest: str, digest: str, revision: str) -> None:
        """PATCH /catalog (incremental passes); ConflictError (BaseDigestMismatch) when the stored one is another."""
        from swarm.registry.catalog_push import patch_catalog

        patch_catalog(self.url, delta, base_digest, digest, revision, self._admin_token, client=self._http)

    def evict(self, agent_id: str) -> None:
        response = self._call("DELETE", f"/agents/{agent_id}")
        _expect(response, (200, 204, 404), f"DELETE /agents/{agent_id}")


_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")


def _tls_for(url: str) -> ssl.SSLContext | bool:
    """The TLS settings of the registry client: httpx's default verification for an https URL.

    For a plain-http URL (no proxy configured) no TLS is ever spoken, yet httpx builds its
    default SSL context (loading the CA bundle: ~30-50 ms, a tenth of a no-op ``swarm plan``)
    when the client is made. That URL gets a context with verification on and no CA at all
    instead: free to build, and any TLS through it (a redirect is never followed) fails closed.
    """
    if not url.lower().startswith("http://") or any(
            os.environ.get(name) or os.environ.get(name.upper()) for name in _PROXY_VARIABLES):
        return True
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED by default


def _expect(response: httpx.Response, ok: int | tuple[int, ...], what: str) -> None:
    codes = ok if isinstance(ok, tuple) else (ok,)
    if response.status_code not in codes:
        raise http_status_error(response, f"registry: {what}")


# --------------------------------------------------------------------------- redis


@contextmanager
def redis_errors(url: str, what: str) -> Iterator[None]:
    """redis-py errors as swarm errors, with the policy of :func:`swarm.foreign.redis_error`."""
    try:
        yield
    except REDIS_ERRORS as exc:
        raise redis_error(exc, f"redis at {masked(url)}: {what}") from exc


#: The agent id part of the scratch user: ':' is outside the agent id charset.
SCRATCH_ID = ":expected"

#: Redis users read back per pipeline (one round trip each).
USER_BATCH = 500


def _filled(reply: Any, agent_id: str) -> Any:
    """A scratch user's GETUSER reply with the scratch id replaced by ``agent_id`` (every string)."""
    if isinstance(reply, str):
        return reply.replace(SCRATCH_ID, agent_id)
    if isinstance(reply, list):
        return [_filled(v, agent_id) for v in reply]
    if isinstance(reply, dict):
        return {k: _filled(v, agent_id) for k, v in reply.items()}
    return reply


def is_agent_id(text: str) -> bool:
    return len(text) <= NAME_MAX and re.fullmatch(NAME_PATTERN, text) is not None


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


Topics = tuple[frozenset[str], frozenset[str]]

_KEY_PATTERN = re.compile(r"%?[RW]*~(\S+)")


def _only_keys_of(info: object, keys: SwarmKeys) -> bool:
    """Whether a user's every key pattern (top level and selectors) lies inside this swarm's keys.

    How a ``swarm-<N>-<id>`` user of the old naming is told from one of swarm
    ``<N>-<x>`` (``swarm-research-x-w`` is both): its keys say whose it is. A user
    with no key pattern at all, or one outside, is not ours and is left alone.
    """
    if not isinstance(info, dict):
        return False
    texts: list[str] = []
    for value in (info.get("keys"),):
        texts += value.split() if isinstance(value, str) else [str(v) for v in value or ()]
    for selector in info.get("selectors") or []:
        fields = dict(zip(selector[::2], selector[1::2])) if isinstance(selector, list) else dict(selector)
        texts += str(fields.get("keys", "")).split()
    patterns = [m.group(1) for t in texts if (m := _KEY_PATTERN.fullmatch(t))]
    return bool(patterns) and len(patterns) == len(texts) and all(p.startswith(keys.prefix) for p in patterns)


def _topics(rights: Any) -> Topics:
    return frozenset(rights.publish), frozenset(rights.subscribe)


class RedisBusPort:
    """:class:`~swarm.reconcile.state.BusPort` and the status store, on one Redis.

    With a :class:`~swarm.reconcile.lease.Fence` set (:meth:`set_fence`), every
    write is one ``WATCH lease / GET / MULTI … EXEC`` that writes nothing unless
    the lease still holds the fence's token (:class:`~swarm.reconcile.lease.LeaseLost`).
    """

    def __init__(self, url: str, swarm: str, *, bus_secret: str | None) -> None:
        self.url = masked(url)  # for messages (they reach the status in Redis): never the password
        self.keys = SwarmKeys(swarm)
        self.bus_secret = bus_secret
        self.fence: Fence | None = None
        #: held during each fenced write; the loop's keeper renews the lease under it, so its
        #: PEXPIRE never breaks the WATCH of a write in flight (a 10,000-agent MULTI takes seconds)
        self.write_lock = threading.RLock()
        self._redis = sync_client(url, swarm=swarm, decode_responses=True, socket_timeout=5, socket_connect_timeout=2)
        self._nodes: dict[tuple[str, int], Any] = {}  # Redis Cluster: the other nodes, for their users
        # rules tuple -> ACL GETUSER reply of a user given exactly those rules (this Redis computed it)
        self._canonical: dict[tuple[str, ...], dict[str, Any]] = {}
        # (agent id, publish, subscribe) -> its rules: user_rules + HMAC cost ~40 us, per user per resync
        self._rules_memo: dict[tuple[str, frozenset[str], frozenset[str]], tuple[str, ...]] = {}
        self._passwords: dict[str, str] = {}  # agent id -> its bus password (an HMAC each)
        self._bus_text, self._acl_text = AgentsDocumentText(), AgentsDocumentText()  # bus.json, acl.json

    def close(self) -> None:
        for node in self._nodes.values():
            node.close()
        self._nodes.clear()
        self._redis.close()

    def set_fence(self, fence: Fence | None) -> None:
        self.fence = fence

    @property
    def client(self) -> Any:
        return self._redis

    # -- fenced writes ----------------------------------------------------------

    def _write(self, what: str, build: Callable[[Any], None]) -> list[Any]:
        """Run the commands ``build`` queues in one MULTI, fenced by the lease when one is set."""
        fence = self.fence
        with redis_errors(self.url, what), self.write_lock:
            for attempt in range(3):
                with self._redis.pipeline(transaction=True) as tx:
                    if fence is not None:
                        tx.watch(fence.key)  # type: ignore[no-untyped-call]
                        if not fence.holds(tx.get(fence.key)):
                            raise LeaseLost(f"{what}: the reconcile lease is no longer ours (token {fence.token}); "
                                            "nothing written")
                        tx.multi()
                    build(tx)
                    try:
                        return list(tx.execute(raise_on_error=False))
                    except WatchError as exc:
                        # our own keeper renewing the lease touches its key too: only a token
                        # that is no longer ours is a lost lease (checked again at the top)
                        if attempt == 2:
                            raise LeaseLost(f"{what}: the reconcile lease moved meanwhile; nothing written") from exc
            raise AssertionError("unreachable")

    def check_fence(self) -> None:
        """Raise LeaseLost unless the lease still holds our token (before a write elsewhere)."""
        fence = self.fence
        if fence is None:
            return
        with redis_errors(self.url, "check the reconcile lease"):
            raw = self._redis.get(fence.key)
        if not fence.holds(raw):
            raise LeaseLost(f"the reconcile lease is no longer ours (token {fence.token}); not writing")

    # -- observe ----------------------------------------------------------------

    def observe(self, bus: BusPlan, assumed_users: Mapping[str, UserRights] | None = None) -> BusObservation:
        keys = self.keys
        assumed = assumed_users or {}
        prefix = keys.redis_user_prefix

        def scan(pattern: str) -> list[str]:
            return sorted(map(as_text, self._redis.scan_iter(match=pattern, _type="stream", count=1000)))

        with redis_errors(self.url, "observe"):
            if self.bus_secret:  # a Redis Cluster: nodes that lack the owner's users get them (redis_conn)
                mirror_users_sync(self._redis, keys.swarm, self._nodes)
            streams = scan(keys.topic_pattern)
            outboxes = scan(keys.outbox_pattern)
            inboxes = scan(keys.inbox_pattern)
            breakers = sorted(map(as_text, self._redis.scan_iter(match=keys.breaker_pattern, count=1000)))
            all_users = list(map(as_text, self._redis.acl_users())) if self.bus_secret else []
            # "swarm.<N>." starts only this swarm's users ('.' is in no name); the rest must be an agent id
            users = sorted(u[len(prefix):] for u in all_users if u.startswith(prefix) and is_agent_id(u[len(prefix):]))
            old_prefix = f"swarm-{keys.swarm}-"
            maybe_legacy = sorted(u for u in all_users if u.startswith(old_prefix))
            unread = [a for a in users if a in assumed]
            read = [a for a in users if a not in assumed]
            pipe = self._redis.pipeline(transaction=False)
            for s in [*streams, *outboxes, *inboxes]:
                pipe.xinfo_groups(s)
            pipe.get(keys.acl)
            pipe.get(keys.bus)
            pipe.get(keys.protection)
            for b in breakers:
                pipe.hget(b, "state")
            for u in maybe_legacy:
                pipe.acl_getuser(u)
            replies = pipe.execute(raise_on_error=False)
        it = iter(replies)

        def groups_of(names: list[str], strip: str) -> dict[str, frozenset[str]]:
            out: dict[str, frozenset[str]] = {}
            for name in names:
                reply = next(it)
                out[name[len(strip):]] = (
                    frozenset() if isinstance(reply, Exception) else frozenset(str(g["name"]) for g in reply)
                )
            return out

        groups = groups_of(streams, keys.topic(""))
        outbox_groups = groups_of(outboxes, keys.outbox(""))
        inbox_groups = groups_of(inboxes, keys.inbox(""))
        acl_raw, bus_raw, protection = next(it), next(it), next(it)
        open_breakers = []
        for b in breakers:
            state = next(it)
            if state in ("open", "half_open"):  # publishing blocked (half-open: one probe only)
                open_breakers.append(b[len(keys.breaker("")):])
        applied = _parse(BusPlan, bus_raw)
        rights: dict[str, UserRights] = {a: self._assumed(a, assumed[a], bus) for a in unread}
        legacy = tuple(u for u in maybe_legacy if _only_keys_of(next(it), keys))
        if read:
            rights.update(self._read_users(read, bus, applied))
        return BusObservation(
            streams=frozenset(groups),
            groups={k: v for k, v in groups.items() if v},
            outboxes=outbox_groups,
            inboxes=inbox_groups,
            users=rights,
            users_managed=bool(self.bus_secret),
            acl=_parse(AclDocument, acl_raw),
            settings=applied,
            breakers_open=tuple(open_breakers),
            protection=protection is not None,  # the registry keeps the time protection began
            legacy_users=legacy,
        )

    def live_signals(self) -> tuple[tuple[str, ...], bool]:
        """(agents whose breaker is open or half-open, protection on): what :meth:`observe`
        reports of them, without the streams, groups and users (one SCAN and one pipeline)."""
        keys = self.keys
        with redis_errors(self.url, "read breakers and protection"):
            breakers = sorted(map(as_text, self._redis.scan_iter(match=keys.breaker_pattern, count=1000)))
            pipe = self._redis.pipeline(transaction=False)
            pipe.get(keys.protection)
            for b in breakers:
                pipe.hget(b, "state")
            protection, *states = pipe.execute(raise_on_error=False)
        opened = tuple(b[len(keys.breaker("")):] for b, s in zip(breakers, states) if s in ("open", "half_open"))
        return opened, protection is not None and not isinstance(protection, Exception)

    def _read_users(self, read: list[str], bus: BusPlan, applied: BusPlan | None) -> dict[str, UserRights]:
        """The users ``read`` (agent ids) compared whole with what ``user_rules`` writes.

        First all at once: one MULTI gives each candidate rule set to a scratch user,
        lists every user (``ACL LIST``: each user's rules in Redis' canonical
        spelling, one line, described by the same process and cached by Redis until
        the user changes), and deletes the scratch users. A user whose line equals
        the line its desired (or previously applied) rules give is judged by that
        alone. Only the others (changed by hand, or spelled differently) are read
        back with ``ACL GETUSER`` (~0.4 ms of Redis each) and compared field by
        field (:meth:`_compare_users`), which names what differs.
        """
        keys = self.keys
        candidates = self._candidates(read, bus, applied)
        shapes = sorted({shape[0] for opts in candidates.values() for _, shape in opts})
        scratch = {rules: keys.redis_user(f"{SCRATCH_ID}:{i}") for i, rules in enumerate(shapes)}
        with redis_errors(self.url, "list the Redis users"):
            with self._redis.pipeline(transaction=True) as tx:
                for rules, name in scratch.items():
                    assert rules[0] == "reset", rules
                    tx.execute_command("ACL", "SETUSER", name, *rules)  # type: ignore[no-untyped-call]
                tx.execute_command("ACL", "LIST")  # type: ignore[no-untyped-call]
                if scratch:
                    tx.acl_deluser(*scratch.values())
                listed = tx.execute()[len(scratch)]
        lines: dict[str, str] = {}
        for raw in listed or ():  # "user <name> <rules>"
            parts = as_text(raw).split(" ", 2)
            if len(parts) == 3 and parts[0] == "user":
                lines[parts[1]] = parts[2]
        scratch_hash = hashlib.sha256(self._password(SCRATCH_ID).encode()).hexdigest()

        def expected_line(aid: str, shape: tuple[tuple[str, ...], bool]) -> str | None:
            line = lines.get(scratch[shape[0]])
            if line is None or not shape[1]:
                return line
            if line.count(f"#{scratch_hash}") != 1:  # the template does not fit: read this user back
                return None
            mine = hashlib.sha256(self._password(aid).encode()).hexdigest()
            return line.replace(f"#{scratch_hash}", f"#{mine}").replace(SCRATCH_ID, aid)

        out: dict[str, UserRights] = {}
        unmatched: list[str] = []
        for aid in read:
            line = lines.get(keys.redis_user(aid))
            if line is None:  # deleted since ACL USERS: missing, as GETUSER would say
                continue
            state, _, body = line.partition(" ")
            verdict = None
            for topics, shape in candidates[aid]:
                want = expected_line(aid, shape)
                if want is not None and state in ("on", "off") and want == f"on {body}":
                    verdict = UserRights(*topics, enabled=state == "on")
                    break
            if verdict is None:
                unmatched.append(aid)
            else:
                out[aid] = verdict
        # The rest one by one, in pipelines of USER_BATCH (a bounded reply buffer).
        user_replies: list[Any] = []
        with redis_errors(self.url, "read the Redis users"):
            for start in range(0, len(unmatched), USER_BATCH):
                batch = self._redis.pipeline(transaction=False)
                for a in unmatched[start:start + USER_BATCH]:
                    batch.acl_getuser(keys.redis_user(a))
                user_replies += batch.execute(raise_on_error=False)
            infos = {a: info for a, info in zip(unmatched, user_replies) if isinstance(info, dict)}
            if infos:
                out.update(self._compare_users(infos, bus, applied))
        return out

    def _password(self, agent_id: str) -> str:
        from swarm.bus.apply import bus_password

        if agent_id not in self._passwords:
            if len(self._passwords) > 4 * 4096:
                self._passwords.clear()
            assert self.bus_secret is not None
            self._passwords[agent_id] = bus_password(self.bus_secret, self.keys.swarm, agent_id)
        return self._passwords[agent_id]

    def _rules(self, agent_id: str, publish: frozenset[str], subscribe: frozenset[str]) -> tuple[str, ...]:
        """The ACL SETUSER rules of an agent with these topics (topics sorted: one spelling per set)."""
        from swarm.bus.apply import user_rules

        key = (agent_id, publish, subscribe)
        if key not in self._rules_memo:
            if len(self._rules_memo) > 4096:  # bounded: a long-running daemon sees many specs
                self._rules_memo.clear()
            self._rules_memo[key] = tuple(user_rules(self.keys, agent_id, sorted(publish), sorted(subscribe),
                                                     self._password(agent_id)))
        return self._rules_memo[key]

    def _candidates(self, agents: Iterable[str], bus: BusPlan, applied: BusPlan | None
                    ) -> dict[str, list[tuple[Topics, tuple[tuple[str, ...], bool]]]]:
        """Per agent the topic sets its user may rightly have (the desired ones, then those of
        the bus settings applied before when they differ), each with its :meth:`_shape`."""
        candidates: dict[str, list[tuple[Topics, tuple[tuple[str, ...], bool]]]] = {}
        for aid in agents:
            options: list[Topics] = []
            if aid in bus.agents:
                options.append(_topics(bus.agents[aid]))
            if applied is not None and aid in applied.agents and _topics(applied.agents[aid]) not in options:
                options.append(_topics(applied.agents[aid]))
            candidates[aid] = [(t, self._shape(aid, t)) for t in options]
        return candidates

    def _shape(self, agent_id: str, topics: Topics) -> tuple[tuple[str, ...], bool]:
        """The rules whose scratch-user reply gives this agent's expected reply, and whether it is a template.

        The template is the scratch id's own rules: every agent's user differs from
        it only by its id in the key patterns and by its password, so Redis computes
        ONE reply per set of topics, not one per user (~0.4 ms of Redis each).
        Used only when putting the agent id and password back into the template
        gives exactly the agent's rules; otherwise the agent's own rules are asked.
        """
        rules = self._rules(agent_id, *topics)
        template = self._rules(SCRATCH_ID, *topics)
        mine, theirs = f">{self._password(SCRATCH_ID)}", f">{self._password(agent_id)}"
        back = tuple(theirs if r == mine else r.replace(SCRATCH_ID, agent_id) for r in template)
        return (template, True) if back == rules and mine in template else (rules, False)

    def _expected(self, agent_id: str, shape: tuple[tuple[str, ...], bool]) -> dict[str, Any] | None:
        """The GETUSER reply a user given this agent's rules has (None: the template does not fit)."""
        rules, is_template = shape
        reply = self._canonical[rules]
        if not is_template:
            return reply
        scratch_hash = hashlib.sha256(self._password(SCRATCH_ID).encode()).hexdigest()
        if list(reply.get("passwords") or ()) != [scratch_hash]:
            return None
        out: dict[str, Any] = _filled(reply, agent_id)
        out["passwords"] = [hashlib.sha256(self._password(agent_id).encode()).hexdigest()]
        return out

    def _assumed(self, agent_id: str, wrote: UserRights, bus: BusPlan) -> UserRights:
        """A user this process wrote (not read back): its topics, or the desired ones when the rules are the same."""
        want = bus.agents.get(agent_id)
        if want is not None and self._rules(agent_id, *_topics(want)) == self._rules(agent_id, *_topics(wrote)):
            return UserRights(*_topics(want))
        return wrote

    def _compare_users(
        self, infos: Mapping[str, dict[str, Any]], bus: BusPlan, applied: BusPlan | None
    ) -> dict[str, UserRights]:
        """Each user read back, compared whole with what ``user_rules`` writes.

        A user equal to the rules of the desired topics reports them; one equal to
        the rules of the bus settings applied before reports those (the spec
        changed: the plan says which topics); any other is reported with the
        desired topics and :attr:`UserRights.differs` (changed by hand).
        """
        candidates = self._candidates(infos, bus, applied)
        wanted = {shape[0] for opts in candidates.values() for _, shape in opts}
        fresh = self._canonical_replies(sorted(wanted - set(self._canonical)))
        self._canonical = {r: fresh.get(r) or self._canonical[r] for r in wanted}

        def differences(aid: str, info: dict[str, Any], shape: tuple[tuple[str, ...], bool]) -> frozenset[str]:
            expected = self._expected(aid, shape)
            if expected is None:  # the template's reply is not what it should be: ask for this user's own
                own = self._rules(aid, *next(t for t, s in candidates[aid] if s == shape))
                if own not in self._canonical:
                    self._canonical.update(self._canonical_replies([own]))
                expected = self._canonical[own]
            return user_differences(info, expected)

        def judge(aid: str, info: dict[str, Any]) -> UserRights | None:
            enabled = bool(info.get("enabled", True))
            for topics, shape in candidates[aid]:
                if not differences(aid, info, shape):
                    return UserRights(*topics, enabled=enabled)
            return None

        out: dict[str, UserRights] = {}
        stale: set[tuple[str, ...]] = set()
        for aid, info in infos.items():
            verdict = judge(aid, info)
            if verdict is None:
                # a cached reply may be of an older Redis process (7.0 orders commands per process): ask again
                stale |= {shape[0] for _, shape in candidates[aid] if shape[0] not in fresh}
            else:
                out[aid] = verdict
        if stale:
            self._canonical.update(self._canonical_replies(sorted(stale)))
        for aid, info in infos.items():
            if aid in out:
                continue
            verdict = judge(aid, info) if stale else None
            if verdict is not None:
                out[aid] = verdict
            elif candidates[aid]:
                topics, shape = candidates[aid][0]
                differs = differences(aid, info, shape) or frozenset({"rules"})
                out[aid] = UserRights(*topics, enabled=bool(info.get("enabled", True)), differs=differs)
            else:  # neither declared nor in the applied settings: it exists, that is all the plan needs
                out[aid] = UserRights(enabled=bool(info.get("enabled", True)))
        return out

    def _canonical_replies(self, rule_sets: list[tuple[str, ...]]) -> dict[tuple[str, ...], dict[str, Any]]:
        """ACL GETUSER of a user given exactly each rules tuple, computed by Redis on a scratch user.

        One MULTI: set, read back, …, delete. Every rules tuple starts with
        ``reset``, so the scratch user holds nothing of the previous one, and no
        other client runs between the commands (no one can log in as it, and a
        connection lost half-way leaves nothing behind). Not fenced: it leaves
        nothing behind.
        """
        if not rule_sets:
            return {}
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

    # -- apply ------------------------------------------------------------------

    def apply(self, bus: BusPlan, acl: AclDocument, changes: BusChanges) -> None:
        """Create / rewrite exactly ``changes``, with the rules of :mod:`swarm.bus.apply`, in one fenced MULTI.

        Not ``apply_bus`` itself: it reads every Redis user back twice (ACL GETUSER
        costs Redis ~0.4 ms per user), which for 100 agents is most of a pass; the
        plan already names the objects that differ. Same semantics: topic streams
        are made empty (a throw-away group created and dropped: XGROUP CREATE
        MKSTREAM is the only way to make an empty stream), outbox and inbox groups
        start at id 0, the ACL table and bus settings are replaced together, users
        get ``user_rules``.
        """
        keys = self.keys

        def build(tx: Any) -> None:
            for name in changes.streams:
                stream = bus.topics[name].stream
                tx.xgroup_create(stream, "swarm-apply", id="$", mkstream=True)
                tx.xgroup_destroy(stream, "swarm-apply")
            for agent_id, box in changes.mailboxes:
                rights = bus.agents[agent_id]
                stream, group = (rights.outbox, ROUTER_GROUP) if box == "outbox" else (rights.inbox, agent_id)
                tx.xgroup_create(stream, group, id="0", mkstream=True)
            if changes.users and self.bus_secret:
                for agent_id in changes.users:
                    want = acl.agents.get(agent_id)
                    # the very rules observe compares users with (one spelling: topics sorted)
                    rules = self._rules(agent_id, frozenset(want.publish if want else ()),
                                        frozenset(want.subscribe if want else ()))
                    tx.execute_command("ACL", "SETUSER", keys.redis_user(agent_id), *rules)
            if changes.documents:
                tx.set(keys.acl, self._acl_text.text(acl))
                tx.set(keys.bus, self._bus_text.text(bus))

        for reply in self._write("bus apply", build):
            if isinstance(reply, Exception) and "BUSYGROUP" not in str(reply):
                raise redis_error(reply, f"redis at {self.url}: bus apply") from reply
        if changes.users and self.bus_secret:
            with redis_errors(self.url, "copy the users to every node"):
                mirror_users_sync(self._redis, keys.swarm, self._nodes)

    def delete_group(self, bus: BusPlan, topic: str, group: str) -> None:
        for reply in self._write(f"delete consumer group {group} of {topic}",
                                 lambda tx: tx.xgroup_destroy(self.keys.topic(topic), group)):
            if isinstance(reply, Exception) and "no such key" not in str(reply).lower():
                raise redis_error(reply, f"redis at {self.url}: delete consumer group {group} of {topic}") from reply

    def delete_stream(self, bus: BusPlan, topic: str) -> None:
        self._write(f"delete stream of {topic}", lambda tx: tx.delete(self.keys.topic(topic), self.keys.dead_letter(topic)))

    def delete_mailbox(self, bus: BusPlan, agent_id: str) -> None:
        k = self.keys
        self._write(f"delete the mailboxes of {agent_id}",
                    lambda tx: tx.delete(k.outbox(agent_id), k.inbox(agent_id), k.receipts(agent_id)))

    def delete_legacy_user(self, bus: BusPlan, user: str) -> None:
        self._write(f"delete legacy Redis user {user}", lambda tx: tx.acl_deluser(user))

    def delete_user(self, bus: BusPlan, agent_id: str) -> None:
        self._write(f"delete Redis user of {agent_id}", lambda tx: tx.acl_deluser(self.keys.redis_user(agent_id)))

    # -- status store (StatusSink) ---------------------------------------------

    def read_status(self) -> str | None:
        with redis_errors(self.url, "read status"):
            value = self._redis.get(self.keys.status)
        return None if value is None else str(value)

    def write_status(self, text: str) -> None:
        self._write("write status", lambda tx: tx.set(self.keys.status, text))

    def read_applied_spec(self) -> str | None:
        with redis_errors(self.url, "read the applied spec"):
            value = self._redis.get(self.keys.applied_spec)
        return None if value is None else str(value)

    def write_applied_spec(self, text: str) -> None:
        self._write("store the applied spec", lambda tx: tx.set(self.keys.applied_spec, text))

    # -- history, rollback pin, git webhook (swarm.reconcile.history) -------------

    def append_history(self, fields: dict[str, str]) -> None:
        from swarm.reconcile.history import HISTORY_MAX_LEN

        self._write("record the applied revision",
                    lambda tx: tx.xadd(self.keys.history, fields, maxlen=HISTORY_MAX_LEN, approximate=True))

    def read_history(self, count: int) -> list[tuple[str, dict[str, str]]]:
        """The newest ``count`` entries, newest first."""
        with redis_errors(self.url, "read the history"):
            entries: Any = self._redis.xrevrange(self.keys.history, count=count)
        return [(str(entry_id), {str(k): str(v) for k, v in (fields or {}).items()}) for entry_id, fields in entries or []]

    def read_pin(self) -> str | None:
        with redis_errors(self.url, "read the rollback pin"):
            value = self._redis.get(self.keys.pin)
        return None if value is None else str(value)

    def write_pin(self, text: str | None) -> None:
        """Set the rollback pin (None clears it). Not fenced: ``swarm rollback`` asks the
        lease holder to act; it writes nothing else."""
        with redis_errors(self.url, "write the rollback pin"):
            if text is None:
                self._redis.delete(self.keys.pin)
            else:
                self._redis.set(self.keys.pin, text)

    def read_hook(self) -> str | None:
        """The git webhook delivery counter the registry increments."""
        with redis_errors(self.url, "read the git webhook counter"):
            value = self._redis.get(self.keys.git_hook)
        return None if value is None else str(value)




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
        bus = RedisBusPort(config.bus_redis_url(desired.bus.settings.redis_url), desired.bus.swarm, bus_secret=bus_secret)

        def close() -> None:
            registry.close()
            bus.close()

        return Ports(registry=registry, bus=bus, status=bus, close=close, set_fence=bus.set_fence,
                     check_fence=bus.check_fence, lease_client=bus.client)

    return factory
