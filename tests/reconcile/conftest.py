"""Reconcile fixtures: a real registry (uvicorn subprocess) and Redis, and a spec folder of the test's own."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.registry.conftest import TEST_SECRET, RegistryFactory, RegistryProcess, registry_factory  # noqa: F401
from tests.reconcile.specdata import REPO
from tests.support.services import RedisServer


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    """A copy of specs/ the test may edit."""
    target = tmp_path / "specs"
    shutil.copytree(REPO / "specs", target)
    return target


@pytest.fixture
def live(registry_factory: RegistryFactory, redis_server: RedisServer) -> RegistryProcess:
    """A registry for swarm research on its own redis-server, no catalog pushed yet."""
    return registry_factory(redis_server, extra_args=["--no-probe"])


__all__ = ["TEST_SECRET"]
