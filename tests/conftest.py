"""Shared fixtures: factories for real redis-server processes.

Hypothesis profiles: ``ci`` (fewer examples, no deadline) is loaded when CI=true,
``dev`` otherwise; select another with HYPOTHESIS_PROFILE.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.support.services import RedisServer

settings.register_profile("ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _private_compile_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compile stamps go to a temporary directory, never the developer's ~/.cache/swarm.

    Set in the environment so subprocesses (``swarm compile``, ``swarm up``) inherit it.
    """
    monkeypatch.setenv("SWARM_CACHE_DIR", str(tmp_path_factory.mktemp("swarm-cache")))


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start any number of redis-servers on free ports; all are stopped after the test."""
    started: list[RedisServer] = []

    def make(*, appendonly: bool = True) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(started)}", appendonly=appendonly).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def redis_server(redis_factory: Callable[..., RedisServer]) -> RedisServer:
    """One redis-server of this test's own (append-only on)."""
    return redis_factory()


@pytest.fixture
def repo_root() -> Path:
    return REPO
