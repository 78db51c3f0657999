"""A local stamp that lets a recompile with nothing changed skip parsing and rendering.

Called by :func:`swarm.compiler.compile_to` only (``swarm compile``,
``swarm.compile_spec``); ``--check`` and the reconciler always render. Why: a
no-op recompile of a 1,000-agent spec spent most of its time re-rendering bytes
it then found identical on disk. Rendering is a pure function of

* the spec's bytes (its digest, computed from the raw files without parsing),
* the code that renders it (a fingerprint of the compiler, spec, ACL, key and
  desired-state modules, the templates, and the PyYAML/Jinja2/pydantic versions),

so when both match the last successful compile into the same directory, and the
files on disk still hash to what that compile wrote (no file edited, missing or
added), the output is known to be up to date without rendering.

The stamp lives outside the repository (``$SWARM_CACHE_DIR``, else
``$XDG_CACHE_HOME/swarm/compile``, else ``~/.cache/swarm/compile``), one small
JSON file per output directory, never committed: any doubt — a missing, corrupt
or mismatching stamp, an edited file — means a full compile, so the cache can
only cost speed, never correctness. ``SWARM_CACHE_DIR=""`` disables it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from swarm.compiler.output import _existing_files, _swarm_root
from swarm.errors import CompileError

#: Modules whose source decides the compiled bytes (relative to the swarm package).
_FINGERPRINTED = (
    "__init__.py",
    "acl.py",
    "desired.py",
    "errors.py",
    "keys.py",
    "spec",
    "compiler",
    "runtimes",
)


#: Stamps kept in the cache directory; older ones (temp output dirs of tests...) are deleted.
MAX_STAMPS = 64


@functools.lru_cache(maxsize=1)
def compiler_fingerprint() -> str:
    """sha256 over the rendering code and the libraries whose output we embed."""
    return fingerprint_of(Path(__file__).resolve().parent.parent)


def fingerprint_of(package: Path) -> str:
    """The fingerprint of the swarm package at ``package`` (see :data:`_FINGERPRINTED`)."""
    import jinja2
    import pydantic
    import yaml

    digest = hashlib.sha256()
    for entry in _FINGERPRINTED:
        base = package / entry
        paths = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        for path in paths:
            digest.update(path.relative_to(package).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    for lib in (f"yaml={yaml.__version__}", f"jinja2={jinja2.__version__}", f"pydantic={pydantic.VERSION}"):
        digest.update(lib.encode() + b"\0")
    digest.update(str(bool(getattr(yaml, "__with_libyaml__", False))).encode())
    return digest.hexdigest()


def cache_dir() -> Path | None:
    configured = os.environ.get("SWARM_CACHE_DIR")
    if configured is not None:
        return Path(configured) if configured else None
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "swarm" / "compile"


@dataclass(frozen=True)
class Stamp:
    """What the last successful compile into ``out_dir`` produced."""

    key: str
    swarm: str
    spec_digest: str
    files: dict[str, str]  # relative path -> sha256 hex


def stamp_key(spec_digest: str, swarm_version: str) -> str:
    return hashlib.sha256(f"{spec_digest}\0{swarm_version}\0{compiler_fingerprint()}".encode()).hexdigest()


def _stamp_path(out_dir: Path) -> Path | None:
    directory = cache_dir()
    if directory is None:
        return None
    name = hashlib.sha256(str(Path(out_dir).resolve()).encode()).hexdigest()[:32]
    return directory / f"{name}.json"


def load_stamp(out_dir: Path, key: str) -> Stamp | None:
    """The stamp for ``out_dir`` if it was written under ``key``; None on any doubt."""
    path = _stamp_path(out_dir)
    if path is None:
        return None
    try:
        data = json.loads(path.read_bytes())
        stamp = Stamp(
            key=str(data["key"]),
            swarm=str(data["swarm"]),
            spec_digest=str(data["spec_digest"]),
            files={str(k): str(v) for k, v in dict(data["files"]).items()},
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return stamp if stamp.key == key else None


def outputs_match(stamp: Stamp, out_dir: Path) -> bool:
    """True when ``out_dir/<swarm>`` holds exactly the stamped files with the stamped bytes."""
    try:
        root = _swarm_root(Path(out_dir).absolute(), stamp.swarm)
        prefix = stamp.swarm + "/"
        expected = {}
        for rel, sha in stamp.files.items():
            if not rel.startswith(prefix) or ".." in rel.split("/"):
                return False
            expected[root / rel[len(prefix):]] = sha
        present = _existing_files(root)
        if len(present) != len(expected) or set(present) != set(expected):
            return False
        for path, sha in expected.items():
            if path.is_symlink() or hashlib.sha256(path.read_bytes()).hexdigest() != sha:
                return False
    except (OSError, ValueError, CompileError):  # CompileError: a stamped swarm name that is no name
        return False
    return True


def save_stamp(out_dir: Path, key: str, swarm: str, spec_digest: str, files: Mapping[str, bytes]) -> None:
    """Record a successful compile; failures to write the stamp are ignored (it is only a cache)."""
    path = _stamp_path(out_dir)
    if path is None:
        return
    data = {
        "key": key,
        "swarm": swarm,
        "spec_digest": spec_digest,
        "out_dir": str(Path(out_dir).resolve()),
        "files": {rel: hashlib.sha256(blob).hexdigest() for rel, blob in sorted(files.items())},
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, sort_keys=True), "utf-8")
        os.replace(tmp, path)
        _prune(path.parent, keep=path)
    except OSError:
        pass


def _prune(directory: Path, keep: Path) -> None:
    """Keep the newest :data:`MAX_STAMPS` stamps (one per output directory ever compiled)."""
    stamps = [p for p in directory.glob("*.json") if p != keep]
    if len(stamps) < MAX_STAMPS:
        return
    stamps.sort(key=lambda p: p.stat().st_mtime_ns)
    for old in stamps[: len(stamps) - MAX_STAMPS + 1]:
        old.unlink(missing_ok=True)


def forget(out_dir: Path) -> None:
    path = _stamp_path(out_dir)
    if path is not None:
        try:
            path.unlink()
        except OSError:
            pass
