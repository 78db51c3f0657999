"""The one place that makes Redis clients: a plain Redis, or the master of the swarm's slot in a Redis Cluster.

Every key of a swarm lives in one hash slot (``swarm:{<name>}:…``, :mod:`swarm.keys`),
so a swarm never needs a cluster client: it needs a plain client connected to the
one master that owns that slot. That is what :func:`async_client` and
:func:`sync_client` return, whatever node of the cluster the ``redis://`` URL names:

* **Detection.** The first connection of a client asks the URL's node ``CLUSTER
  NODES``. "cluster support disabled" means a plain Redis: the URL is used as it is
  and nothing is asked again. Otherwise the reply names every node and the master
  owning the slot of the swarm's hash tag (``CLUSTER KEYSLOT``, computed here);
  connections go there, with the URL's user and password (ACL users exist on every
  node: :func:`mirror_users`).
* **Failover.** A command that reaches a node that no longer owns the slot (a master
  demoted by ``CLUSTER FAILOVER``, a blocked ``XREADGROUP`` on it) is answered
  ``MOVED <slot> <host:port>``: the connection learns the new owner, every
  connection of the client reconnects there when next handed out, and ``MOVED`` is
  one of the errors redis-py's own retry (:func:`swarm.foreign.redis_retry`, waits
  from :mod:`swarm.backoff`) retries, so the command is sent again to the new owner.
  A refused connection forgets the owner and asks the other known nodes again. What
  is still failing after that is ``MOVED`` / ``CLUSTERDOWN`` / unreachable, all
  transient for :func:`swarm.foreign.redis_error`: the caller's loop backs off.
* **No CLUSTER rights** (an agent's own user may run only its bus commands): the
  client connects to the URL's node and follows ``MOVED`` alone; after the first
  redirect it talks to the owner directly.

Because the client is a plain one, MULTI/EXEC, WATCH (the reconcile lease), Lua
scripts (EVALSHA; NOSCRIPT after a failover is handled where scripts are loaded),
pipelines and blocking XREADGROUP work unchanged. redis-py's ``RedisCluster`` was
not chosen: its async client has no WATCH/MULTI transactions, and swarm never
needs more than one slot.

Scale: one swarm is one slot, so one shard: its load is bounded by one master.
Many swarms spread over the shards by their names' slots.

ACL users are per node: :func:`mirror_users` copies a swarm's users from the slot
owner (the truth) to every other node, masters and replicas, so a promoted replica
lets the agents in. ``swarm bus apply``, the reconcile pass and the registry's
restore after a new Redis run call it.
"""

from __future__ import annotations

import functools
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MovedError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = [
    "NodeResolver",
    "acl_rules",
    "async_client",
    "async_node_clients",
    "mirror_users",
    "mirror_users_sync",
    "swarm_slot",
    "sync_client",
    "sync_node_clients",
]

Address = tuple[str, int]
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def swarm_slot(swarm: str) -> int:
    """The hash slot of every key of ``swarm`` (what ``CLUSTER KEYSLOT swarm:{<swarm>}:x`` says)."""
    from swarm.keys import SwarmKeys

    return int(key_slot(SwarmKeys(swarm).prefix.encode()))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_cluster_nodes(text: str, probed: Address, slot: int | None) -> tuple[list[Address], Address | None]:
    """Every usable node (masters and replicas) of a ``CLUSTER NODES`` reply, and the master of ``slot``."""
    nodes: list[Address] = []
    owner: Address | None = None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        flags = set(parts[2].split(","))
        addr = parts[1].split("@", 1)[0].split(",", 1)[0]
        host, _, port = addr.rpartition(":")
        if not port.isdigit() or "noaddr" in flags or "handshake" in flags:
            continue
        address = (host or probed[0], int(port))
        if "myself" in flags and not host:
            address = probed
        if "fail" not in flags:
            nodes.append(address)
        if slot is not None and "master" in flags and "fail" not in flags:
            for rng in parts[8:]:
                if rng.startswith("["):
                    continue  # a slot being migrated: the owner is still the node listing it as a range
                lo, _, hi = rng.partition("-")
                if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                    owner = address
    return nodes, owner


class NodeResolver:
    """Where the connections of one client go: shared by the connections of its pool.

    ``cluster``: None until asked, False for a plain Redis, True for a cluster.
    ``generation`` grows when the owner changes; a connection made for an older one
    reconnects when it is next handed out."""

    def __init__(self, seed: Address, slot: int | None) -> None:
        self.seed = seed
        self.slot = slot
        self.cluster: bool | None = None
        self.owner: Address | None = None
        self.nodes: list[Address] = []
        self.generation = 0
        self.stale = True  # ask the topology before the next connection

    def target(self) -> Address:
        return self.owner or self.seed

    def probe_order(self) -> list[Address]:
        order = [a for a in (self.owner, self.seed) if a is not None]
        return order + [a for a in self.nodes if a not in order]

    def learn(self, text: str, probed: Address) -> None:
        nodes, owner = parse_cluster_nodes(text, probed, self.slot)
        self.cluster, self.stale = True, False
        if nodes:
            self.nodes = nodes
        if owner is not None and owner != self.owner:
            self.owner = owner
            self.generation += 1

    def moved(self, host: str, port: int, current: Address) -> None:
        self.cluster = True
        new = (host or current[0], int(port))
        if new != self.owner:
            self.owner = new
            self.generation += 1

    def failed(self, address: Address) -> None:
        """A connection to ``address`` failed: ask the topology again before the next one."""
        if self.cluster is False:
            return
        self.stale = True
        if address == self.owner:
            self.owner = None
            self.generation += 1


def _probe_kwargs(kwargs: dict[str, Any], address: Address) -> dict[str, Any]:
    out = {k: v for k, v in kwargs.items() if k not in ("retry", "resolver", "redis_connect_func")}
    out.update(host=address[0], port=address[1], socket_timeout=2.0,
               socket_connect_timeout=min(2.0, kwargs.get("socket_connect_timeout") or 2.0))
    return out


def _retry_moved(conn: Any) -> None:
    """Make redis-py's retry of one command resend it after MOVED (to the owner it names).

    With no retry of its own (redis-py 8: none), the connection gets one that retries
    only MOVED, twice, with waits from :mod:`swarm.backoff`."""
    if conn.retry.get_retries() > 0:
        conn.retry.update_supported_errors([MovedError])
        return
    from swarm.foreign import RedisRetryBackoff

    retry_class = type(conn.retry)
    conn.retry = retry_class(RedisRetryBackoff(base=0.01, cap=0.1), 2, supported_errors=(MovedError,))


class _AsyncClusterAware:
    """Mixed into a redis.asyncio connection class: connect to the resolver's target, learn MOVED."""

    _plain: type[aioredis.Connection]

    def __init__(self, *, resolver: NodeResolver, **kwargs: Any) -> None:
        self._resolver = resolver
        self._kwargs = kwargs
        self._generation = -1
        super().__init__(**kwargs)
        _retry_moved(self)

    async def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        resolver = self._resolver
        if self.is_connected and self._generation != resolver.generation:  # type: ignore[attr-defined]
            await self.disconnect()  # type: ignore[attr-defined]
        if self.is_connected:  # type: ignore[attr-defined]
            return
        if resolver.stale and resolver.cluster is not False:
            await self._probe()
        self.host, self.port = resolver.target()
        self._generation = resolver.generation
        try:
            await super().connect_check_health(check_health, retry_socket_connect)  # type: ignore[misc]
        except _UNREACHABLE:
            resolver.failed((self.host, self.port))
            raise

    async def _probe(self) -> None:
        resolver = self._resolver
        for address in resolver.probe_order():
            conn: Any = self._plain(**_probe_kwargs(self._kwargs, address))
            try:
                await conn.connect()
                await conn.send_command("CLUSTER", "NODES")
                reply = await conn.read_response()
            except ResponseError as exc:
                if "disabled" in str(exc):
                    resolver.cluster, resolver.stale = False, False
                else:  # NOPERM (an agent's user) or the like: follow MOVED alone
                    resolver.stale = False
                return
            except Exception:  # unreachable, refused login: try the next node
                continue
            finally:
                await conn.disconnect()
            resolver.learn(_text(reply), address)
            return

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except MovedError as exc:
            self._resolver.moved(exc.host, exc.port, (self.host, self.port))
            raise


class _SyncClusterAware:
    """The same for redis-py's synchronous connections (the reconciler)."""

    _plain: type[redis.Connection]

    def __init__(self, *, resolver: NodeResolver, **kwargs: Any) -> None:
        self._resolver = resolver
        self._kwargs = kwargs
        self._generation = -1
        super().__init__(**kwargs)
        _retry_moved(self)

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        resolver = self._resolver
        if self._sock is not None and self._generation != resolver.generation:  # type: ignore[attr-defined]
            self.disconnect()  # type: ignore[attr-defined]
        if self._sock is not None:  # type: ignore[attr-defined]
            return
        if resolver.stale and resolver.cluster is not False:
            self._probe()
        self.host, self.port = resolver.target()
        self._generation = resolver.generation
        try:
            super().connect_check_health(check_health, retry_socket_connect)  # type: ignore[misc]
        except _UNREACHABLE:
            resolver.failed((self.host, self.port))
            raise

    def _probe(self) -> None:
        resolver = self._resolver
        for address in resolver.probe_order():
            conn: Any = self._plain(**_probe_kwargs(self._kwargs, address))
            try:
                conn.connect()
                conn.send_command("CLUSTER", "NODES")
                reply = conn.read_response()
            except ResponseError as exc:
                if "disabled" in str(exc):
                    resolver.cluster, resolver.stale = False, False
                else:
                    resolver.stale = False
                return
            except Exception:
                continue
            finally:
                conn.disconnect()
            resolver.learn(_text(reply), address)
            return

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except MovedError as exc:
            self._resolver.moved(exc.host, exc.port, (self.host, self.port))
            raise


_CLASSES: dict[type[Any], type[Any]] = {}


def _aware(base: type[Any], mixin: type[Any]) -> type[Any]:
    cls = _CLASSES.get(base)
    if cls is None:
        cls = _CLASSES[base] = type(f"ClusterAware{base.__name__}", (mixin, base), {"_plain": base})
    return cls


def _install(pool: Any, swarm: str | None, mixin: type[Any], unix: type[Any]) -> None:
    if issubclass(pool.connection_class, unix):
        return  # a unix socket is never a cluster node of ours
    kwargs = pool.connection_kwargs
    kwargs["resolver"] = NodeResolver((kwargs.get("host", "localhost"), int(kwargs.get("port", 6379))),
                                      swarm_slot(swarm) if swarm else None)
    pool.connection_class = _aware(pool.connection_class, mixin)


def async_client(url: str, *, swarm: str | None = None, blocking_pool: bool = False, **kwargs: Any) -> aioredis.Redis:
    """A ``redis.asyncio.Redis`` for ``url`` (a plain Redis or any node of a cluster: the owner of ``swarm``'s slot).

    ``kwargs``: what ``Redis.from_url`` takes (``socket_timeout``, ``retry``,
    ``decode_responses``, ``connection_class``, ``max_connections`` ...);
    ``blocking_pool``: a :class:`redis.asyncio.BlockingConnectionPool` (``timeout``: its wait)."""
    pool_class = aioredis.BlockingConnectionPool if blocking_pool else aioredis.ConnectionPool
    pool = pool_class.from_url(url, **kwargs)
    _install(pool, swarm, _AsyncClusterAware, aioredis.UnixDomainSocketConnection)
    return aioredis.Redis.from_pool(pool)


def sync_client(url: str, *, swarm: str | None = None, **kwargs: Any) -> redis.Redis:
    """The synchronous :func:`async_client`."""
    pool = redis.ConnectionPool.from_url(url, **kwargs)
    _install(pool, swarm, _SyncClusterAware, redis.UnixDomainSocketConnection)
    return redis.Redis.from_pool(pool)


def _resolver(client: Any) -> NodeResolver | None:
    resolver = client.connection_pool.connection_kwargs.get("resolver")
    return resolver if isinstance(resolver, NodeResolver) else None


def _node_kwargs(client: Any, address: Address) -> dict[str, Any]:
    kwargs = {k: v for k, v in client.connection_pool.connection_kwargs.items() if k != "resolver"}
    kwargs.update(host=address[0], port=address[1])
    return kwargs


async def async_node_clients(client: aioredis.Redis) -> list[aioredis.Redis]:
    """Plain clients (same user, same options) of every other node of the cluster ``client`` talks to; [] unless a cluster.

    The caller closes them."""
    await client.ping()  # connected: the resolver has asked the topology
    resolver = _resolver(client)
    if resolver is None or not resolver.cluster:
        return []
    here = resolver.target()
    plain = getattr(client.connection_pool.connection_class, "_plain")
    return [aioredis.Redis.from_pool(aioredis.ConnectionPool(connection_class=plain, **_node_kwargs(client, a)))
            for a in resolver.nodes if a != here]


def sync_node_clients(client: redis.Redis, cache: dict[Address, redis.Redis] | None = None) -> list[redis.Redis]:
    """The synchronous :func:`async_node_clients`; with ``cache``, clients are kept there and reused
    (the owner of ``cache`` closes them)."""
    client.ping()
    resolver = _resolver(client)
    if resolver is None or not resolver.cluster:
        return []
    here = resolver.target()
    plain = getattr(client.connection_pool.connection_class, "_plain")
    out: list[redis.Redis] = []
    for a in resolver.nodes:
        if a == here:
            continue
        node = cache.get(a) if cache is not None else None
        if node is None:
            node = redis.Redis.from_pool(redis.ConnectionPool(connection_class=plain, **_node_kwargs(client, a)))
            if cache is not None:
                cache[a] = node
        out.append(node)
    return out


# -- ACL users on every node ------------------------------------------------------------


def acl_rules(line: str) -> tuple[str, list[str]]:
    """The name and the rules of one ``ACL LIST`` line (``user <name> <rules…>``; selectors kept whole)."""
    tokens: list[str] = []
    depth, current = 0, ""
    for word in line.split(" "):
        if depth:
            current += " " + word
        else:
            current = word
        depth += word.count("(") - word.count(")")
        if depth <= 0:
            depth = 0
            if current:
                tokens.append(current)
    if len(tokens) < 2 or tokens[0] != "user":
        raise ValueError(f"not an ACL LIST line: {line!r}")
    return tokens[1], tokens[2:]


def _canonical(rules: list[str]) -> str:
    """One spelling of a user's rules: Redis lists single-command rules (``+xadd -watch``)
    in hash order, which differs between nodes; they touch one command each, so they
    are sorted (categories, key patterns and flags keep their places)."""
    out: list[str] = []
    run: list[str] = []
    for token in rules + [""]:
        if token[:1] in "+-" and "@" not in token:
            run.append(token)
            continue
        out.extend(sorted(run))
        run = []
        if token.startswith("(") and token.endswith(")"):
            token = "(" + _canonical(token[1:-1].split(" ")) + ")"
        if token:
            out.append(token)
    return " ".join(out)


def _users(lines: Any, prefix: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in lines:
        name, rules = acl_rules(_text(raw))
        if name.startswith(prefix):
            out[name] = " ".join(rules)
    return out


@functools.lru_cache(maxsize=4096)
def _spelling(rules: str) -> str:
    return _canonical(acl_rules(f"user x {rules}")[1])


def _same(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b or _spelling(a) == _spelling(b)


def _mirror_plan(owner: dict[str, str], other: dict[str, str]) -> list[list[tuple[str, ...]]]:
    """Per user to fix, the commands that make ``other`` hold it as ``owner`` does (all in one MULTI).

    DELUSER then SETUSER of the listed rules: a user made by SETUSER alone has the
    very defaults the owner's has (``reset`` would add flags such as sanitize-payload)."""
    commands: list[list[tuple[str, ...]]] = []
    for name, rules in sorted(owner.items()):
        if not _same(other.get(name), rules):
            _, tokens = acl_rules(f"user {name} {rules}")
            commands.append([("ACL", "DELUSER", name), ("ACL", "SETUSER", name, *tokens)])
    for name in sorted(set(other) - set(owner)):
        commands.append([("ACL", "DELUSER", name)])
    return commands


async def mirror_users(client: aioredis.Redis, swarm: str) -> int:
    """Make every other node of the cluster hold ``swarm``'s users exactly as the slot owner does.

    Returns the number of users written or deleted on other nodes (0 on a plain Redis). Errors: redis-py's;
    a node that cannot be reached is skipped (it gets the users on the next call)."""
    from swarm.keys import SwarmKeys

    others = await async_node_clients(client)
    if not others:
        return 0
    prefix = SwarmKeys(swarm).redis_user_prefix
    owner = _users(await client.execute_command("ACL", "LIST"), prefix)  # type: ignore[no-untyped-call]
    sent = 0
    for node in others:
        try:
            plan = _mirror_plan(owner, _users(await node.execute_command("ACL", "LIST"), prefix))  # type: ignore[no-untyped-call]
            if plan:
                async with node.pipeline(transaction=True) as tx:  # one MULTI per node: every user at once
                    for commands in plan:
                        for command in commands:
                            tx.execute_command(*command)
                    await tx.execute()
                sent += len(plan)
        except _UNREACHABLE:
            continue
        finally:
            await node.aclose()
    return sent


def mirror_users_sync(client: redis.Redis, swarm: str, cache: dict[Address, redis.Redis] | None = None) -> int:
    """The synchronous :func:`mirror_users`; ``cache``: see :func:`sync_node_clients`."""
    from swarm.keys import SwarmKeys

    others: list[Any] = list(sync_node_clients(client, cache))
    if not others:
        return 0
    prefix = SwarmKeys(swarm).redis_user_prefix
    owner = _users(client.execute_command("ACL", "LIST"), prefix)  # type: ignore[no-untyped-call]
    sent = 0
    for node in others:
        try:
            plan = _mirror_plan(owner, _users(node.execute_command("ACL", "LIST"), prefix))
            if plan:
                with node.pipeline(transaction=True) as tx:
                    for commands in plan:
                        for command in commands:
                            tx.execute_command(*command)
                    tx.execute()
                sent += len(plan)
        except _UNREACHABLE:
            if cache is not None:
                node.close()
                for address, cached in list(cache.items()):
                    if cached is node:
                        del cache[address]
            continue
        finally:
            if cache is None:
                node.close()
    return sent
