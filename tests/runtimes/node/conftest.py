"""Fixtures of the node runtime's tests: one ``npm ci`` of the fixed dependency set per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.compiler.conftest import make_spec  # noqa: F401  (fixture)

from .support import installed_modules


@pytest.fixture(scope="session")
def node_modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``node_modules`` installed by ``npm ci`` from the shipped lock (once per test session)."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (the node runtime's tests need node 20 and npm)")
    return installed_modules(tmp_path_factory.mktemp("npm"))
