"""The desired state of a spec, cached across processes by content (issue 12: ``swarm plan``).

Why: a no-op ``swarm plan`` of a 1,000-agent swarm spent about half its time
turning the spec into its desired state (YAML events, pydantic validation, the
semantic checks, :func:`swarm.desired.desired_from_spec`), the same work on the
same bytes at every call. Reading the spec files and hashing them costs
milliseconds; reading back a :class:`~swarm.desired.DesiredState` from its own
JSON (``model_validate_json``) costs a few tens. So the desired state of the last
full loads is kept under a key made of

* the digest of the files read (:func:`swarm.spec.files.compute_digest`: every
  file's canonical path and bytes) and the environment overlay selected (``--env``),
* the swarm version and a hash of the source of the spec package and of the
  modules that build the desired state (:func:`swarm.spec.index.code_fingerprint`),
  and the versions of pydantic and PyYAML (a loader or validator that reads the
  same bytes differently must not trust an old answer).

What is stored is only what the spec files themselves say, in the form every
reader of ``compiled/<swarm>/*.json`` already trusts: no secret is in it (passwords
and tokens are derived from the environment at use), and the files are the
user's own (mode 0600 in the user's cache directory, the same trust as the spec
files). A spec is stored only after it loaded and passed every check, so a hit
is a valid spec; an invalid spec is never stored and a load of it reports its
errors as before. A missing, unreadable, foreign (another owner, writable by
others, not a regular file), corrupt (the body's SHA-256 is in the header) or
mismatching file is ignored and rewritten: the cache can cost speed, never
correctness. Only the desired state is kept, not the parsed
:class:`~swarm.spec.loader.LoadedSpec` (positions, models): commands that need
no more than the desired state and its digest use it (``swarm plan``).

Files: ``$SWARM_CACHE_DIR/desired`` (else ``$XDG_CACHE_HOME/swarm/desired``, else
``~/.cache/swarm/desired``), one per spec version, the newest :data:`MAX_ENTRIES`
kept; each is a one-line JSON header, a newline and the desired state's JSON.
``SWARM_CACHE_DIR=""`` disables the cache.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import stat
from pathlib import Path
from typing import Mapping

from swarm.desired import DesiredState
from swarm.spec.files import compute_digest
from swarm.spec.index import cache_subdir, code_fingerprint, write_entry

__all__ = ["MAX_ENTRIES", "cache_path", "lookup", "store"]

#: Cache files kept (one per spec version and environment); a 1,000-agent desired state is ~1 MB.
MAX_ENTRIES = 8

#: Larger files are not read (a desired state of 10,000 agents is ~10 MB).
MAX_BYTES = 64 * 1024 * 1024

FORMAT = 1

#: The modules outside swarm/spec whose code decides the desired state of given bytes.
_BUILDERS = ("desired.py", "acl.py", "keys.py", "errors.py")


@functools.lru_cache(maxsize=1)
def _fingerprint() -> str:
    import pydantic

    digest = hashlib.sha256(code_fingerprint(*_BUILDERS).encode() + b"\0" + pydantic.VERSION.encode() + b"\0")
    found = importlib.util.find_spec("yaml")  # its version is in its __init__.py; not imported here
    if found is not None and found.origin:
        try:
            digest.update(Path(found.origin).read_bytes())
        except OSError:
            pass
    return digest.hexdigest()


def _key(files_digest: str, environment: str | None) -> str:
    env = "" if environment is None else f"env:{environment}"
    return hashlib.sha256(f"{FORMAT}\0{files_digest}\0{env}\0{_fingerprint()}".encode()).hexdigest()


def _location(files: Mapping[str, bytes], environment: str | None) -> tuple[Path, str] | None:
    directory = cache_subdir("desired")
    if directory is None:
        return None
    key = _key(compute_digest(files), environment)
    return directory / f"{key[:40]}.json", key


def cache_path(files: Mapping[str, bytes], environment: str | None = None) -> Path | None:
    """The cache file of these spec files and environment (None: the cache is disabled)."""
    where = _location(files, environment)
    return None if where is None else where[0]


def _read_own_file(path: Path) -> bytes | None:
    """The file's bytes if it is a regular file of ours that nobody else may write; else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (not stat.S_ISREG(st.st_mode) or st.st_size > MAX_BYTES
                or st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
            return None
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def lookup(files: Mapping[str, bytes], environment: str | None = None) -> DesiredState | None:
    """The desired state a full load of ``files`` (with ``environment``) gave before, or None.

    Its digest (that of :class:`~swarm.spec.loader.LoadedSpec`) is ``registry.spec_digest``."""
    where = _location(files, environment)
    raw = None if where is None else _read_own_file(where[0])
    if where is None or raw is None:
        return None
    head, sep, body = raw.partition(b"\n")
    try:
        header = json.loads(head)
        if (not sep or not isinstance(header, dict) or header.get("format") != FORMAT or header.get("key") != where[1]
                or header.get("sha256") != hashlib.sha256(body).hexdigest()):
            return None
        desired = DesiredState.model_validate_json(body)
    except ValueError:  # not JSON, or not a desired state (pydantic's ValidationError is a ValueError)
        return None
    digest = header.get("digest")
    if not (desired.registry.spec_digest == desired.bus.spec_digest == desired.acl.spec_digest == digest
            and desired.registry.swarm == desired.bus.swarm == desired.acl.swarm):
        return None
    return desired


def store(files: Mapping[str, bytes], environment: str | None, desired: DesiredState) -> None:
    """Keep the desired state that ``files`` (with ``environment``) loaded to. Call it only with
    the desired state of a spec that loaded without error from exactly these bytes."""
    where = _location(files, environment)
    if where is None:
        return
    body = desired.model_dump_json().encode("utf-8")
    header = json.dumps({
        "format": FORMAT,
        "key": where[1],
        "digest": desired.registry.spec_digest,
        "sha256": hashlib.sha256(body).hexdigest(),
    })
    write_entry(where[0], header.encode("utf-8") + b"\n" + body, MAX_ENTRIES)
