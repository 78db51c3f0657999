"""What ``swarm token`` needs from a spec (its swarm name and agent ids), cached by content.

Why: ``swarm token ID`` is scripted once per agent; importing the pydantic models
and validating the whole spec cost it ~9x a bare ``python -c pass``. Reading the
spec files and hashing them costs a fraction of a millisecond, so the answer of
the last full load is kept under a key made of

* the spec digest (:func:`swarm.spec.files.compute_digest`: every file's
  canonical path and bytes),
* the swarm version and a hash of the spec package's own source (a loader that
  reads the same bytes differently must not trust an old answer),

and a later call with the same key skips parsing. A spec is cached only after it
loaded without error, so a hit is a spec that is valid; any edit changes the
digest and means a full load (which reports the spec's errors as before). A
missing, unreadable, corrupt or mismatching cache file is ignored (and
rewritten): the cache can cost speed, never correctness.

The files live outside the repository, beside the compile stamps
(``$SWARM_CACHE_DIR/spec-index``, else ``$XDG_CACHE_HOME/swarm/spec-index``, else
``~/.cache/swarm/spec-index``), one small JSON file per spec version, the newest
:data:`MAX_ENTRIES` kept. ``SWARM_CACHE_DIR=""`` disables the cache.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from swarm.spec.files import compute_digest, read_spec_files
from swarm.spec.names import is_name

__all__ = ["MAX_ENTRIES", "SpecIndex", "cache_subdir", "code_fingerprint", "index_dir", "spec_index", "write_entry"]

#: Cache files kept (one per spec version read); older ones are deleted.
MAX_ENTRIES = 64


@dataclass(frozen=True)
class SpecIndex:
    """A valid spec's swarm name and sorted agent ids."""

    swarm: str
    agents: tuple[str, ...]
    digest: str

    def declares(self, agent_id: str) -> bool:
        return agent_id in self.agents


@functools.lru_cache(maxsize=8)
def code_fingerprint(*extra: str) -> str:
    """The swarm version and a hash of the spec package's own source, and of the ``extra``
    modules of the swarm package (paths relative to it, e.g. ``"desired.py"``)."""
    from swarm import __version__

    digest = hashlib.sha256(__version__.encode() + b"\0")
    package = Path(__file__).resolve().parent
    for path in [*sorted(package.glob("*.py")), *(package.parent / name for name in extra)]:
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def cache_subdir(name: str) -> Path | None:
    """Folder ``name`` of the cache directory (None: caching is disabled by ``SWARM_CACHE_DIR=""``)."""
    configured = os.environ.get("SWARM_CACHE_DIR")
    if configured is not None:
        return Path(configured) / name if configured else None
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "swarm" / name


def index_dir() -> Path | None:
    """Where the cache files live (None: the cache is disabled)."""
    return cache_subdir("spec-index")


def write_entry(path: Path, body: bytes, keep: int) -> None:
    """Write a cache file atomically (a temporary file of mode 0600 renamed over it), then keep
    only the newest ``keep`` ``*.json`` files of its folder. Never raises for a read-only or
    full cache directory: a cache that cannot be written costs speed, not correctness."""
    directory = path.parent
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
        os.replace(tmp, path)
        entries = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for old in entries[: max(0, len(entries) - keep)]:
            old.unlink(missing_ok=True)
    except OSError:
        with contextlib.suppress(OSError):  # no folder at all: no temporary file either
            tmp.unlink(missing_ok=True)


def _key(digest: str) -> str:
    return hashlib.sha256(f"{digest}\0{code_fingerprint()}".encode()).hexdigest()


def _read(path: Path, key: str, digest: str) -> SpecIndex | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key or data.get("digest") != digest:
        return None
    swarm, agents = data.get("swarm"), data.get("agents")
    if not isinstance(swarm, str) or not is_name(swarm) or not isinstance(agents, list):
        return None
    if not all(isinstance(a, str) and is_name(a) for a in agents) or agents != sorted(set(agents)):
        return None
    return SpecIndex(swarm, tuple(agents), digest)


def _write(path: Path, key: str, index: SpecIndex) -> None:
    body = json.dumps({"key": key, "digest": index.digest, "swarm": index.swarm, "agents": list(index.agents)})
    write_entry(path, body.encode("utf-8"), MAX_ENTRIES)


def spec_index(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] = "specs") -> SpecIndex:
    """The swarm name and agent ids of the spec at ``paths``; raises :class:`~swarm.errors.SpecError`
    exactly as :func:`swarm.spec.loader.load_spec` does for an unreadable or invalid spec."""
    files = read_spec_files(paths)
    digest = compute_digest(files)
    directory = index_dir()
    key = _key(digest)
    path = None if directory is None else directory / f"{key[:40]}.json"
    if path is not None:
        cached = _read(path, key, digest)
        if cached is not None:
            return cached
    from swarm.spec.loader import parse_spec_texts

    spec = parse_spec_texts(files).spec
    index = SpecIndex(spec.name, tuple(sorted({a.id for a in spec.agents})), digest)
    if path is not None:
        _write(path, key, index)
    return index
