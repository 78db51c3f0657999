"""Fixtures of the Redis Cluster tests: a real 3-master, 3-replica cluster of the test's own
(:mod:`tests.support.cluster`), the real registry, router and reconcile CLI against it."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.reconcile.conftest import spec_dir  # noqa: F401  (fixture: a copy of specs/)
from tests.registry.conftest import registry_factory  # noqa: F401  (fixture: real registries)
from tests.support.cluster import RedisCluster
from tests.support.router import router_factory  # noqa: F401  (fixture: real `swarm bus route` processes)


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path / "cluster").start()
    try:
        yield cluster
    finally:
        cluster.stop()


class NodeUrl:
    """What registry_factory needs of a Redis: its URL (here one node of the cluster)."""

    def __init__(self, url: str) -> None:
        self.url = url
