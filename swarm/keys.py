"""The Redis key layout of a swarm (pure; a contract between registry, bus and reconciler).

Every key of a swarm starts with ``swarm:{<name>}:``. The braces are a Redis Cluster
hash tag: all keys of one swarm live in one slot, so every Lua script and MULTI
block may touch any of them (registry lease + event stream, dedup mark + stream
entry) and the layout works unchanged on Redis Cluster. Several swarms share one
Redis without seeing each other's keys.

=====================================  ======  ==============================================
key                                    type    holds
=====================================  ======  ==============================================
swarm:{N}:catalog                      string  JSON catalog pushed by the reconciler
swarm:{N}:agent:<id>                   hash    one registration (fields of the register body)
swarm:{N}:leases                       zset    agent id -> lease expiry (ms, Redis clock)
swarm:{N}:events                       stream  registry watch events (capped, MAXLEN ~)
swarm:{N}:sweeper                      string  lock: one sweeper acts on each expiry
swarm:{N}:protection                   string  "1" while mass-eviction protection holds
swarm:{N}:status                       string  JSON reconcile status
swarm:{N}:applied-spec                 string  JSON files of the last applied spec (restart recovery)
swarm:{N}:breaker:<id>                 hash    circuit breaker of one agent
swarm:{N}:acl                          string  JSON ACL table applied by ``bus apply``
swarm:{N}:bus                          string  JSON bus settings applied by ``bus apply``
swarm:{N}:topic:<topic>                stream  the topic's messages
swarm:{N}:dlq:<topic>                  stream  entries delivered max_deliveries times
swarm:{N}:dedup:<topic>:<message-id>   string  dedup mark -> original entry id (PX window)
=====================================  ======  ==============================================

Redis ACL users are named ``swarm-<N>-<agent id>`` (ids and names share a charset
without ':' or '{', so no key of one swarm can be spelled inside another's).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SwarmKeys:
    """Key names for one swarm; ``SwarmKeys("research").topic("tasks.a")``."""

    swarm: str

    @property
    def prefix(self) -> str:
        return f"swarm:{{{self.swarm}}}:"

    @property
    def catalog(self) -> str:
        return self.prefix + "catalog"

    def agent(self, agent_id: str) -> str:
        return f"{self.prefix}agent:{agent_id}"

    @property
    def agent_pattern(self) -> str:
        return self.prefix + "agent:*"

    @property
    def leases(self) -> str:
        return self.prefix + "leases"

    @property
    def events(self) -> str:
        return self.prefix + "events"

    @property
    def sweeper(self) -> str:
        return self.prefix + "sweeper"

    @property
    def protection(self) -> str:
        return self.prefix + "protection"

    @property
    def status(self) -> str:
        return self.prefix + "status"

    @property
    def applied_spec(self) -> str:
        return self.prefix + "applied-spec"

    def breaker(self, agent_id: str) -> str:
        return f"{self.prefix}breaker:{agent_id}"

    @property
    def breaker_pattern(self) -> str:
        return self.prefix + "breaker:*"

    @property
    def acl(self) -> str:
        return self.prefix + "acl"

    @property
    def bus(self) -> str:
        return self.prefix + "bus"

    def topic(self, topic: str) -> str:
        return f"{self.prefix}topic:{topic}"

    @property
    def topic_pattern(self) -> str:
        return self.prefix + "topic:*"

    def dead_letter(self, topic: str) -> str:
        return f"{self.prefix}dlq:{topic}"

    def dedup(self, topic: str, message_id: str) -> str:
        return f"{self.prefix}dedup:{topic}:{message_id}"

    def redis_user(self, agent_id: str) -> str:
        return f"swarm-{self.swarm}-{agent_id}"


def as_text(value: object) -> str:
    """A Redis reply value as text: bytes with a client made without
    ``decode_responses``, str with one made with it."""
    return value.decode() if isinstance(value, bytes) else str(value)
