"""Notification fixtures: the reconcile fixtures (a real registry on its own redis-server, a spec copy)."""

from __future__ import annotations

from tests.reconcile.conftest import daemon_factory, live, spec_dir  # noqa: F401
from tests.registry.conftest import registry_factory  # noqa: F401
