"""The desired-state cache (swarm.desired_cache) behind ``swarm plan``: it may only cost speed.

A hit is exactly what a fresh load gives; any changed byte or another environment
misses; a corrupt, tampered or foreign file is ignored (and rewritten); an invalid
spec is never cached and still reports its errors.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from swarm import desired_cache
from swarm.desired import DesiredState, desired_from_spec
from swarm.errors import SpecError
from swarm.reconcile.loop import ReconcileConfig, Reconciler
from swarm.spec.index import cache_subdir
from swarm.spec.loader import load_spec_full, read_spec_files


@pytest.fixture
def spec_dir(tmp_path: Path, repo_root: Path) -> Path:
    target = tmp_path / "specs"
    shutil.copytree(repo_root / "specs", target)
    return target


def _fresh(spec_dir: Path, environment: str | None = None) -> DesiredState:
    loaded = load_spec_full(spec_dir, environment)
    return desired_from_spec(loaded.spec, loaded.digest)


def _reconciler(spec_dir: Path, environment: str | None = None) -> Reconciler:
    def no_ports(*_: object) -> object:
        raise AssertionError("loading the desired state needs no ports")

    return Reconciler(ReconcileConfig(spec_paths=[spec_dir], environment=environment), no_ports)  # type: ignore[arg-type]


def _loads_in_full(rec: Reconciler) -> list[int]:
    """Count the full loads of ``rec`` (a hit makes none)."""
    calls: list[int] = []
    full = rec.load

    def counted() -> object:
        calls.append(1)
        return full()

    rec.load = counted  # type: ignore[method-assign]
    return calls


def _entries() -> list[Path]:
    directory = cache_subdir("desired")
    assert directory is not None
    return sorted(directory.glob("*.json")) if directory.is_dir() else []


@pytest.mark.parametrize("environment", [None, "staging"])
def test_a_hit_is_exactly_what_a_fresh_load_gives(spec_dir: Path, environment: str | None) -> None:
    fresh = _fresh(spec_dir, environment)
    first = _reconciler(spec_dir, environment)
    full = _loads_in_full(first)
    assert first.load_desired() == (fresh, fresh.registry.spec_digest)
    assert full == [1] and len(_entries()) == 1

    second = _reconciler(spec_dir, environment)  # a new process would start like this
    full = _loads_in_full(second)
    desired, digest = second.load_desired()
    assert full == [], "the second load came from the cache"
    assert desired == fresh and digest == fresh.registry.spec_digest
    assert desired.model_dump_json() == fresh.model_dump_json()


def test_environments_are_cached_apart(spec_dir: Path) -> None:
    base, staging = _reconciler(spec_dir).load_desired(), _reconciler(spec_dir, "staging").load_desired()
    assert base != staging and len(_entries()) == 2
    assert _reconciler(spec_dir).load_desired() == base
    assert _reconciler(spec_dir, "staging").load_desired() == staging


def test_a_changed_byte_misses(spec_dir: Path) -> None:
    before, _ = _reconciler(spec_dir).load_desired()
    swarm = spec_dir / "swarm.yaml"
    swarm.write_text(swarm.read_text() + "# a comment is a change too\n")
    assert desired_cache.lookup(read_spec_files(spec_dir)) is None
    commented, digest = _reconciler(spec_dir).load_desired()
    assert digest != before.registry.spec_digest and commented.registry.agents == before.registry.agents

    swarm.write_text(swarm.read_text().replace("ttl_seconds: 30", "ttl_seconds: 40"))
    edited, _ = _reconciler(spec_dir).load_desired()
    assert edited.registry.settings.ttl_seconds == 40 and edited == _fresh(spec_dir)


def _tamper(entry: Path, edit: object) -> None:
    head, _, body = entry.read_bytes().partition(b"\n")
    header = json.loads(head)
    body = edit(body) if callable(edit) else body
    header["sha256"] = hashlib.sha256(body).hexdigest()  # a consistent file, of another content
    entry.write_bytes(json.dumps(header).encode() + b"\n" + body)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "body-edited", "foreign-digest", "no-header",
                                    "group-writable", "symlink"])
def test_a_corrupt_or_foreign_file_is_ignored_and_rewritten(spec_dir: Path, tmp_path: Path, damage: str) -> None:
    right, _ = _reconciler(spec_dir).load_desired()
    (entry,) = _entries()
    good = entry.read_bytes()
    if damage == "garbage":
        entry.write_bytes(b"\xff\xfe{not json")
    elif damage == "truncated":
        entry.write_bytes(good[: len(good) // 2])
    elif damage == "body-edited":  # the header's hash no longer fits
        entry.write_bytes(good.replace(b'"ttl_seconds":30', b'"ttl_seconds":99', 1))
    elif damage == "foreign-digest":  # a well-formed desired state of other bytes
        _tamper(entry, lambda body: body.replace(right.registry.spec_digest.encode(), b"sha256:" + b"0" * 64))
    elif damage == "no-header":
        entry.write_bytes(right.model_dump_json().encode())
    elif damage == "group-writable":
        _tamper(entry, lambda body: body.replace(b'"ttl_seconds":30', b'"ttl_seconds":99', 1))
        os.chmod(entry, 0o664)
    else:  # a link planted in the cache folder is not followed
        planted = tmp_path / "planted.json"
        shutil.copyfile(entry, planted)
        os.chmod(planted, 0o600)
        entry.unlink()
        entry.symlink_to(planted)
    assert desired_cache.lookup(read_spec_files(spec_dir)) is None
    rec = _reconciler(spec_dir)
    full = _loads_in_full(rec)
    assert rec.load_desired() == (right, right.registry.spec_digest)
    assert full == [1]
    assert not entry.is_symlink() and entry.read_bytes() == good, "rewritten"
    assert desired_cache.lookup(read_spec_files(spec_dir)) == right


def test_the_check_sees_a_consistent_file_it_wrote(spec_dir: Path) -> None:
    """The tampering above is refused for what it changed, not because any rewrite fails."""
    right, _ = _reconciler(spec_dir).load_desired()
    (entry,) = _entries()
    _tamper(entry, lambda body: body.replace(b'"ttl_seconds":30', b'"ttl_seconds":99', 1))
    hit = desired_cache.lookup(read_spec_files(spec_dir))
    assert hit is not None and hit.registry.settings.ttl_seconds == 99  # the user's own file: trusted as written
    assert hit.registry.agents == right.registry.agents


def test_an_invalid_spec_reports_its_errors_and_is_not_cached(spec_dir: Path) -> None:
    review = spec_dir / "agents" / "review.yaml"
    review.write_text(review.read_text().replace("port: 8005", "port: not-a-port"))
    for _ in range(2):  # the second load parses again: a failure is not remembered across processes
        with pytest.raises(SpecError, match="port") as caught:
            _reconciler(spec_dir).load_desired()
        assert any(i.position is not None and i.position.file.endswith("review.yaml") for i in caught.value.issues)
        assert _entries() == []


def test_the_cache_can_be_disabled(spec_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_CACHE_DIR", "")
    assert desired_cache.cache_path(read_spec_files(spec_dir)) is None
    rec = _reconciler(spec_dir)
    assert rec.load_desired()[0] == _fresh(spec_dir)
    assert desired_cache.lookup(read_spec_files(spec_dir)) is None


def test_an_unwritable_cache_folder_costs_nothing_but_speed(spec_dir: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("SWARM_CACHE_DIR", str(blocker))  # mkdir of blocker/desired fails
    assert _reconciler(spec_dir).load_desired()[0] == _fresh(spec_dir)
    assert desired_cache.lookup(read_spec_files(spec_dir)) is None
