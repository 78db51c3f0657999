"""The no-op stamp: a recompile with nothing changed skips rendering, and any doubt
(edited, missing or extra output, changed spec, changed compiler, corrupt stamp)
falls back to a full compile that repairs the output."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from swarm.compiler import cache, compile_loaded, compile_to, write_output
from swarm.spec.loader import load_spec_full

from .conftest import REPO


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def compiled(tmp_path: Path, example_copy: Path) -> Path:
    out = tmp_path / "compiled"
    first = compile_to(example_copy, out)
    assert not first.from_stamp and len(first.report.written) == len(tree(REPO / "compiled" / "research"))
    return out


def test_second_compile_is_proved_current_by_the_stamp(compiled: Path, example_copy: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in compiled.rglob("*") if p.is_file()}
    again = compile_to(example_copy, compiled)
    assert again.from_stamp
    assert again.report.written == [] and again.report.removed == [] and len(again.report.unchanged) == len(tree(REPO / "compiled" / "research"))
    assert again.swarm == "research" and again.spec_digest.startswith("sha256:")
    assert {p: p.stat().st_mtime_ns for p in compiled.rglob("*") if p.is_file()} == before
    assert tree(compiled) == tree(REPO / "compiled")


def test_hand_edited_output_is_repaired(compiled: Path, example_copy: Path) -> None:
    (compiled / "research" / "acl.md").write_text("edited\n")
    result = compile_to(example_copy, compiled)
    assert not result.from_stamp and result.report.written == ["research/acl.md"]
    assert tree(compiled) == tree(REPO / "compiled")


def test_missing_and_extra_files_are_repaired(compiled: Path, example_copy: Path) -> None:
    (compiled / "research" / "bus.json").unlink()
    (compiled / "research" / "agents" / "stray.txt").write_text("?")
    result = compile_to(example_copy, compiled)
    assert not result.from_stamp
    assert result.report.written == ["research/bus.json"]
    assert result.report.removed == ["research/agents/stray.txt"]


def test_spec_change_compiles_fully(compiled: Path, example_copy: Path) -> None:
    swarm_yaml = example_copy / "swarm.yaml"
    swarm_yaml.write_text(swarm_yaml.read_text().replace("ttl_seconds: 30", "ttl_seconds: 45"))
    result = compile_to(example_copy, compiled)
    assert not result.from_stamp
    assert "research/registry.json" in result.report.written


def test_compiler_change_invalidates_the_stamp(
    compiled: Path, example_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache, "compiler_fingerprint", lambda: "a-different-compiler")
    result = compile_to(example_copy, compiled)
    assert not result.from_stamp and result.report.written == []


def test_corrupt_stamp_means_full_compile(compiled: Path, example_copy: Path, private_compile_cache: Path) -> None:
    stamps = list(private_compile_cache.glob("*.json"))
    assert len(stamps) == 1
    stamps[0].write_text("{not json")
    assert not compile_to(example_copy, compiled).from_stamp
    assert compile_to(example_copy, compiled).from_stamp  # rewritten by the full compile


def test_empty_cache_dir_setting_disables_the_stamp(
    compiled: Path, example_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWARM_CACHE_DIR", "")
    assert not compile_to(example_copy, compiled).from_stamp
    assert not compile_to(example_copy, compiled).from_stamp


def test_fingerprint_covers_templates_and_rendering_code(tmp_path: Path) -> None:
    package = Path(cache.__file__).resolve().parent.parent
    copy = tmp_path / "swarm"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    base = cache.fingerprint_of(copy)
    assert base == cache.compiler_fingerprint()
    for rel in ("runtimes/python/templates/server.py.j2", "compiler/targets/compose.py", "desired.py", "spec/models.py"):
        original = (copy / rel).read_bytes()
        (copy / rel).write_bytes(original + b"\n")
        assert cache.fingerprint_of(copy) != base, rel
        (copy / rel).write_bytes(original)
    (copy / "bus").mkdir(exist_ok=True)
    (copy / "bus" / "unrelated.py").write_text("x = 1\n")
    assert cache.fingerprint_of(copy) == base  # code that does not render leaves it alone


def test_old_stamps_are_pruned(tmp_path: Path, example_copy: Path, private_compile_cache: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "MAX_STAMPS", 3)
    outs = [tmp_path / f"out{i}" for i in range(5)]
    for i, out in enumerate(outs):
        compile_to(example_copy, out)
        stamp = cache._stamp_path(out)
        assert stamp is not None
        os.utime(stamp, ns=(10**18 + i * 10**9,) * 2)  # distinct ages, whatever the clock granularity
    assert len(list(private_compile_cache.glob("*.json"))) == 3
    assert compile_to(example_copy, outs[-1]).from_stamp  # the newest survive
    assert not compile_to(example_copy, outs[0]).from_stamp  # the oldest was dropped


def test_output_rewritten_by_another_writer_is_not_trusted(compiled: Path, example_copy: Path, tmp_path: Path) -> None:
    """The reconciler writes compiled/ without the stamp: a stamp of the spec before
    still has the right key, but the files no longer hash as stamped."""
    other = tmp_path / "other-spec"
    shutil.copytree(example_copy, other)
    (other / "agents" / "review.yaml").unlink()
    write_output(compile_loaded(load_spec_full(other)), compiled, "research")
    assert tree(compiled) != tree(REPO / "compiled")
    result = compile_to(example_copy, compiled)
    assert not result.from_stamp and result.report.written
    assert tree(compiled) == tree(REPO / "compiled")


def test_a_stamp_that_lies_about_the_files_is_not_trusted(compiled: Path, example_copy: Path) -> None:
    """A stamp with the right key whose file list or hashes do not match the disk."""
    path = cache._stamp_path(compiled)
    assert path is not None
    good = json.loads(path.read_text())
    lies = [
        {**good, "files": {**good["files"], "research/extra.txt": "0" * 64}},  # a file that is not there
        {**good, "files": {k: v for k, v in good["files"].items() if not k.endswith("acl.md")}},  # one missing
        {**good, "files": {k: "0" * 64 if k.endswith("acl.md") else v for k, v in good["files"].items()}},
        {**good, "files": {"../outside/x": "0" * 64, **good["files"]}},
        {**good, "swarm": "../research"},  # once raised CompileError instead of falling back
    ]
    for lie in lies:
        path.write_text(json.dumps(lie))
        (compiled / "research" / "acl.md").write_text("edited\n")
        result = compile_to(example_copy, compiled)
        assert not result.from_stamp
        assert tree(compiled) == tree(REPO / "compiled")


def test_tests_never_use_the_real_cache(private_compile_cache: Path) -> None:
    assert cache.cache_dir() == private_compile_cache
    assert not private_compile_cache.is_relative_to(Path.home() / ".cache")
