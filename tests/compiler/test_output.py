"""The output adapter: containment, atomic writes, no-op recompiles, pruning, diffs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from swarm.compiler.output import diff_output, write_output
from swarm.errors import CompileError

FILES = {
    "demo/a.txt": b"alpha\n",
    "demo/agents/x/server.py": b"print('x')\n",
    "demo/agents/y/server.py": b"print('y')\n",
}


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_first_write_creates_every_file_with_normal_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    report = write_output(FILES, tmp_path / "out", "demo")
    assert report.written == sorted(FILES) and report.unchanged == [] and report.removed == []
    for rel, data in FILES.items():
        path = tmp_path / "out" / rel
        assert path.read_bytes() == data
        assert stat.S_IMODE(path.stat().st_mode) == 0o644 & ~umask
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_noop_rewrite_writes_nothing_and_keeps_mtimes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_output(FILES, out, "demo")
    old = 1_000_000_000_000_000_000
    for path in out.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(old, old))
    before = snapshot(out)
    report = write_output(FILES, out, "demo")
    assert report.written == [] and report.removed == [] and report.unchanged == sorted(FILES)
    assert not report.changed
    assert snapshot(out) == before


def test_changed_file_is_replaced_and_others_untouched(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_output(FILES, out, "demo")
    before = snapshot(out)
    report = write_output({**FILES, "demo/a.txt": b"beta\n"}, out, "demo")
    assert report.written == ["demo/a.txt"]
    after = snapshot(out)
    assert after["demo/a.txt"][0] == b"beta\n"
    assert after["demo/agents/x/server.py"] == before["demo/agents/x/server.py"]


def test_removed_agent_files_are_deleted_and_empty_dirs_pruned(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_output(FILES, out, "demo")
    (out / "demo" / "agents" / "y" / ".server.py.abc.tmp").write_bytes(b"leftover of a crash")
    kept = {k: v for k, v in FILES.items() if "/y/" not in k}
    report = write_output(kept, out, "demo")
    assert report.removed == ["demo/agents/y/.server.py.abc.tmp", "demo/agents/y/server.py"]
    assert not (out / "demo" / "agents" / "y").exists()
    assert (out / "demo" / "agents" / "x" / "server.py").exists()


def test_other_swarms_and_siblings_are_never_touched(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "other").mkdir(parents=True)
    (out / "other" / "keep.txt").write_text("mine")
    (out / "README.md").write_text("mine too")
    write_output(FILES, out, "demo")
    write_output({"demo/a.txt": b"only\n"}, out, "demo")
    assert (out / "other" / "keep.txt").read_text() == "mine"
    assert (out / "README.md").read_text() == "mine too"


@pytest.mark.parametrize(
    "bad",
    [
        "demo/../escape.txt",
        "../escape.txt",
        "/etc/passwd",
        "other/file.txt",
        "demo",
        "demo//x",
        "demo/./x",
        "demo\\..\\x",
        "demofile.txt",
    ],
)
def test_paths_outside_the_swarm_dir_are_refused_before_any_write(tmp_path: Path, bad: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(CompileError, match="refusing"):
        write_output({"demo/good.txt": b"x", bad: b"evil"}, out, "demo")
    assert not out.exists()
    assert not (tmp_path / "escape.txt").exists()


@pytest.mark.parametrize("swarm", ["..", "a/b", "", "UPPER", "../demo"])
def test_invalid_swarm_names_are_refused(tmp_path: Path, swarm: str) -> None:
    with pytest.raises(CompileError):
        write_output({f"{swarm}/x": b"x"}, tmp_path / "out", swarm)
    assert not (tmp_path / "out").exists()


def test_symlink_leading_outside_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    (out / "demo" / "agents").mkdir(parents=True)
    (out / "demo" / "agents" / "x").symlink_to(outside, target_is_directory=True)
    with pytest.raises(CompileError, match="outside"):
        write_output(FILES, out, "demo")
    assert list(outside.iterdir()) == []


def test_diff_output_reports_changed_missing_and_extra(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert diff_output(FILES, out, "demo") == [f"missing: {p}" for p in sorted(FILES)]
    write_output(FILES, out, "demo")
    assert diff_output(FILES, out, "demo") == []
    (out / "demo" / "a.txt").write_bytes(b"edited by hand\n")
    (out / "demo" / "agents" / "x" / "server.py").unlink()
    (out / "demo" / "stray.txt").write_bytes(b"?")
    assert diff_output(FILES, out, "demo") == [
        "changed: demo/a.txt",
        "missing: demo/agents/x/server.py",
        "extra: demo/stray.txt",
    ]
    assert (out / "demo" / "stray.txt").exists()  # diff writes nothing


def test_a_directory_in_the_way_of_a_file_is_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "demo" / "a.txt" / "nested").mkdir(parents=True)
    report = write_output(FILES, out, "demo")
    assert (out / "demo" / "a.txt").read_bytes() == b"alpha\n"
    assert "demo/a.txt" in report.written


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of permissions")
def test_unreadable_output_is_a_compile_error(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_output(FILES, out, "demo")
    (out / "demo" / "a.txt").chmod(0)
    with pytest.raises(CompileError, match="failed"):
        diff_output({**FILES, "demo/a.txt": b"other\n"}, out, "demo")


def test_unwritable_output_is_a_compile_error(tmp_path: Path) -> None:
    blocker = tmp_path / "out" / "demo" / "agents"
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"a file where a directory must go")
    with pytest.raises(CompileError, match="failed") as info:
        write_output(FILES, tmp_path / "out", "demo")
    assert isinstance(info.value.__cause__, OSError)


def test_a_symlinked_swarm_dir_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_bytes(b"keep me\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "demo").symlink_to(victim, target_is_directory=True)
    for call in (write_output, diff_output):
        with pytest.raises(CompileError, match="is a symlink"):
            call(FILES, out, "demo")
    assert sorted(p.name for p in victim.iterdir()) == ["precious.txt"]
    assert (victim / "precious.txt").read_bytes() == b"keep me\n"


def test_a_symlinked_directory_inside_the_swarm_dir_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "demo" / "real").mkdir(parents=True)
    (out / "demo" / "real" / "keep.txt").write_bytes(b"k")
    (out / "demo" / "agents").symlink_to(out / "demo" / "real", target_is_directory=True)  # inside, still refused
    with pytest.raises(CompileError, match="is a symlink"):
        write_output(FILES, out, "demo")
    assert sorted(p.name for p in (out / "demo" / "real").iterdir()) == ["keep.txt"]
    assert not (out / "demo" / "a.txt").exists()  # refused before the first write


def test_a_swarm_name_with_a_trailing_newline_never_becomes_a_directory(tmp_path: Path) -> None:
    from swarm.compiler.output import _swarm_root

    with pytest.raises(CompileError):
        _swarm_root(tmp_path, "research\n")
    assert list(tmp_path.iterdir()) == []
