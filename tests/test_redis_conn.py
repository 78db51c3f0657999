"""swarm.redis_conn without a cluster: parsing of CLUSTER NODES and ACL LIST, one spelling of
a user's rules, MOVED as a transient error, and a plain Redis detected as such (the cluster
itself: tests/cluster, marked slow)."""

from __future__ import annotations

from redis.exceptions import MovedError

from swarm.errors import RedisUnavailableError
from swarm.foreign import is_transient_redis, redis_error
from swarm.redis_conn import _canonical, _same, acl_rules, async_client, parse_cluster_nodes, swarm_slot, sync_client
from tests.support.services import RedisServer

NODES = """\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002 master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@40003 master - 0 1426238318243 3 connected 10923-16383 [12000->-67ed]
6ec2 127.0.0.1:30005@40005 slave,fail 67ed 1426238316232 1426238316232 5 connected
824f :30006@40006 myself,slave 292f 0 0 6 connected
e7d1 127.0.0.1:30001@40001 master - 0 0 1 connected 0-5460
"""


def test_cluster_nodes_names_every_live_node_and_the_owner_of_a_slot() -> None:
    nodes, owner = parse_cluster_nodes(NODES, ("10.0.0.9", 30006), 12000)
    assert owner == ("127.0.0.1", 30003)  # the slot being migrated still belongs to the node listing its range
    assert ("127.0.0.1", 30005) not in nodes  # failed
    assert ("10.0.0.9", 30006) in nodes  # myself without an address: the address we asked
    assert len(nodes) == 5
    assert parse_cluster_nodes(NODES, ("h", 1), 0)[1] == ("127.0.0.1", 30001)
    assert parse_cluster_nodes(NODES, ("h", 1), None)[1] is None


def test_acl_list_lines_keep_selectors_whole_and_rules_have_one_spelling() -> None:
    name, rules = acl_rules("user swarm.s.a on #ab resetchannels -@all +ping -watch (%R~k1 resetchannels -@all +get +mget)")
    assert name == "swarm.s.a"
    assert rules == ["on", "#ab", "resetchannels", "-@all", "+ping", "-watch", "(%R~k1 resetchannels -@all +get +mget)"]
    assert _canonical(rules) == _canonical(["on", "#ab", "resetchannels", "-@all", "-watch", "+ping",
                                            "(%R~k1 resetchannels -@all +mget +get)"])
    assert not _same("on #ab +@all -get", "on #ab -get +@all")  # a category's place matters
    assert not _same("on #ab ~a +get", "on #ab ~b +get")
    assert _same(None, None) and not _same(None, "on")


def test_moved_is_transient() -> None:
    exc = MovedError("3999 127.0.0.1:6381")
    assert is_transient_redis(exc)
    assert isinstance(redis_error(exc, "publish"), RedisUnavailableError)


async def test_a_plain_redis_is_used_as_it_is(redis_server: RedisServer) -> None:
    client = async_client(redis_server.url, swarm="lab", decode_responses=True)
    try:
        await client.set("swarm:{lab}:x", "1")
        resolver = client.connection_pool.connection_kwargs["resolver"]
        assert resolver.cluster is False and resolver.owner is None
    finally:
        await client.aclose()
    sync = sync_client(redis_server.url, swarm="lab", decode_responses=True)
    try:
        assert sync.get("swarm:{lab}:x") == "1"
        assert sync.connection_pool.connection_kwargs["resolver"].cluster is False
        assert 0 <= swarm_slot("lab") < 16384
    finally:
        sync.close()
