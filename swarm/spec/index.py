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

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from swarm.spec.files import compute_digest, read_spec_files
from swarm.spec.names import is_name

__all__ = ["MAX_ENTRIES", "SpecIndex", "index_dir", "spec_index"]

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


@functools.lru_cache(maxsize=1)
def _code_fingerprint() -> str:
    from swarm import __version__

    digest = hashlib.sha256(__version__.encode() + b"\0")
    package = Path(__file__).resolve().parent
    for path in sorted(package.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def index_dir() -> Path | None:
    """Where the cache files live (None: the cache is disabled)."""
    configured = os.environ.get("SWARM_CACHE_DIR")
    if configured is not None:
        return Path(configured) / "spec-index" if configured else None
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "swarm" / "spec-index"


def _key(digest: str) -> str:
    return hashlib.sha256(f"{digest}\0{_code_fingerprint()}".encode()).hexdigest()


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


def _write(directory: Path, path: Path, key: str, index: SpecIndex) -> None:
    body = json.dumps({"key": key, "digest": index.digest, "swarm": index.swarm, "agents": list(index.agents)})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmp.write_text(body, encoding="utf-8")
        os.replace(tmp, path)
        entries = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for old in entries[: max(0, len(entries) - MAX_ENTRIES)]:
            old.unlink(missing_ok=True)
    except OSError:  # a read-only or full cache directory: the answer is still right
        tmp.unlink(missing_ok=True)


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
    if directory is not None and path is not None:
        _write(directory, path, key, index)
    return index
