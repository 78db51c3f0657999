from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.support.postgres import PostgresServer, postgres_bin


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    if postgres_bin() is None:
        pytest.skip("PostgreSQL server binaries are not installed (apt-get install postgresql)")
    server = PostgresServer(tmp_path / "pg").start()
    try:
        yield server
    finally:
        server.remove()


from tests.reconcile.conftest import live, spec_dir  # noqa: E402,F401  (a registry on its own Redis; a spec copy)
from tests.registry.conftest import registry_factory  # noqa: E402,F401
