"""``swarm compile`` and ``swarm.compile_spec`` end to end: golden output, exit codes,
determinism across file order and working directory, removed agents, path traversal."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

import swarm
from tests.support.terminal import drain
from swarm.cli import main
from swarm.errors import CompileError, SpecError

from .conftest import REPO, agent_doc, swarm_doc, write_spec


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def example_file_count() -> int:
    """Files of the committed example output (36 with the compose and kubernetes targets)."""
    return len(tree(REPO / "compiled" / "research"))


def test_committed_compiled_output_is_fresh(capsys: pytest.CaptureFixture[str]) -> None:
    """Golden test: compiled/ in the repo equals a fresh compile of specs/."""
    code = main(["compile", str(REPO / "specs"), "--out", str(REPO / "compiled"), "--check"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "up to date" in out


def test_compile_writes_then_noop_then_check(tmp_path: Path, example_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "compiled"
    assert main(["compile", str(example_copy), "--out", str(out), "-o", "json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert len(first["written"]) == example_file_count() >= 36 and first["removed"] == [] and first["spec_digest"].startswith("sha256:")
    assert tree(out / "research") == tree(REPO / "compiled" / "research")

    assert main(["compile", str(example_copy), "--out", str(out), "-o", "json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["written"] == [] and second["removed"] == [] and len(second["unchanged"]) == example_file_count()

    assert main(["compile", str(example_copy), "--out", str(out), "--check"]) == 0
    capsys.readouterr()


def test_check_reports_stale_files_and_writes_nothing(
    tmp_path: Path, example_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "compiled"
    shutil.copytree(REPO / "compiled", out)
    (out / "research" / "acl.md").write_text("hand edit\n")
    (out / "research" / "agents" / "auditor" / "server.py").unlink()
    before = tree(out)
    assert main(["compile", str(example_copy), "--out", str(out), "--check"]) == 1
    err = capsys.readouterr().err
    assert "changed: research/acl.md" in err and "missing: research/agents/auditor/server.py" in err
    assert tree(out) == before
    assert main(["compile", str(example_copy), "--out", str(out), "--check", "-o", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["up_to_date"] is False and len(report["differing"]) == 2


def test_invalid_spec_exits_2_with_positions_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path / "spec", swarm_doc(), [agent_doc("a", 9001, role="nosuchrole")])
    out = tmp_path / "compiled"
    assert main(["compile", str(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "agent0.yaml:" in err and "nosuchrole" in err
    assert not out.exists()


def test_path_traversal_id_is_refused_before_any_write(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec", swarm_doc(), [agent_doc("../../evil", 9001)])
    with pytest.raises(SpecError) as info:
        swarm.compile_spec(spec, tmp_path / "compiled")
    assert any("id" in issue.path for issue in info.value.issues)
    assert not (tmp_path / "compiled").exists()
    assert not (tmp_path / "evil").exists()


def test_removed_agent_files_are_deleted(tmp_path: Path, example_copy: Path) -> None:
    out = tmp_path / "compiled"
    swarm.compile_spec(example_copy, out)
    text = (example_copy / "agents" / "review.yaml").read_text()
    (example_copy / "agents" / "review.yaml").write_text(text.split("\n---\n")[0] + "\n")  # drop the auditor
    report = swarm.compile_spec(example_copy, out)
    assert report.removed == [
        "research/agents/auditor/Dockerfile",
        "research/agents/auditor/requirements.txt",
        "research/agents/auditor/server.py",
        "research/kubernetes/agents/auditor.yaml",
    ]
    assert not (out / "research" / "agents" / "auditor").exists()
    assert "research/docker-compose.yml" in report.written and "research/manifest.json" in report.written
    assert "auditor" not in (out / "research" / "docker-compose.yml").read_text()
    assert "agents/auditor.yaml" not in (out / "research" / "kubernetes" / "kustomization.yaml").read_text()


def _compile_in_subprocess(spec: Path, out: Path, cwd: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "swarm", "compile", str(spec), "--out", str(out)],
        cwd=cwd,
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONHASHSEED": str(random.randrange(1, 2**31))},
    )


def test_output_is_identical_for_shuffled_file_order_and_other_cwd(tmp_path: Path) -> None:
    """Two spec directories with the same files created in different orders (so directory
    listing order differs), compiled from different working directories and hash seeds."""
    sources = {p.relative_to(REPO / "specs"): p.read_bytes() for p in (REPO / "specs").rglob("*.yaml")}
    outputs = []
    for run, order in enumerate((sorted(sources), sorted(sources, reverse=True))):
        spec = tmp_path / f"run{run}" / "specs"
        for rel in order:
            (spec / rel).parent.mkdir(parents=True, exist_ok=True)
            (spec / rel).write_bytes(sources[rel])
        out = tmp_path / f"run{run}" / "compiled"
        cwd = tmp_path / f"run{run}" if run == 0 else tmp_path
        _compile_in_subprocess(spec.relative_to(cwd) if run == 0 else spec, out, cwd)
        outputs.append(tree(out))
    assert outputs[0] == outputs[1]
    assert outputs[0] == tree(REPO / "compiled")


def test_progress_is_not_drawn_when_stderr_is_not_a_terminal(
    tmp_path: Path, example_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compile", str(example_copy), "--out", str(tmp_path / "c")]) == 0
    captured = capsys.readouterr()
    assert "rendering agents" not in captured.err and "\r" not in captured.err
    assert f"{example_file_count()} written, 0 unchanged, 0 removed" in captured.out


def test_progress_is_drawn_on_a_terminal(tmp_path: Path, example_copy: Path) -> None:
    import pty

    master, slave = pty.openpty()
    try:
        subprocess.run(
            [sys.executable, "-m", "swarm", "compile", str(example_copy), "--out", str(tmp_path / "c")],
            stdout=subprocess.DEVNULL,
            stderr=slave,
            check=True,
            env={**os.environ, "SWARM_CACHE_DIR": ""},
        )
        os.close(slave)
        slave = -1
        drawn = drain(master)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert b"rendering agents 6/6" in drawn
    assert drawn.endswith(b"\r\x1b[K")  # the line is cleared again


def test_a_one_agent_change_rewrites_only_what_depends_on_it(tmp_path: Path, example_copy: Path) -> None:
    """Generated files carry no spec digest, so review diffs stay small."""
    out = tmp_path / "compiled"
    swarm.compile_spec(example_copy, out)
    workers = example_copy / "agents" / "workers.yaml"
    workers.write_text(workers.read_text().replace("version: 0.9.0", "version: 0.9.1"))
    report = swarm.compile_spec(example_copy, out)
    assert report.written == [
        "research/acl.json",  # these three carry spec_digest by contract
        "research/agents/summarizer/Dockerfile",
        "research/agents/summarizer/server.py",
        "research/bus.json",
        "research/docker-compose.yml",  # names the image tag research-summarizer:<version>
        "research/kubernetes/agents/summarizer.yaml",  # the image tag and the version label
        "research/kubernetes/desired.yaml",  # the ConfigMap of the three desired-state files
        "research/manifest.json",
        "research/registry.json",
    ]


@pytest.mark.parametrize(
    "out_of",
    [
        lambda spec: spec,  # swarm compile in1 --out in1 → in1/research inside the spec
        lambda spec: spec / "agents",  # deeper inside the spec
        lambda spec: spec.parent,  # ... --out <parent> with a spec at <parent>/research
    ],
    ids=["out-is-spec-dir", "out-inside-spec", "spec-is-the-swarm-dir"],
)
def test_output_overlapping_the_spec_is_refused_and_nothing_written(
    tmp_path: Path, example_copy: Path, capsys: pytest.CaptureFixture[str], out_of: Callable[[Path], Path]
) -> None:
    spec = example_copy
    if out_of(spec) == spec.parent:  # make the spec directory itself be <out>/<swarm>
        spec = example_copy.rename(example_copy.parent / "research")
    before = tree(spec)
    out = out_of(spec)
    assert main(["compile", str(spec), "--out", str(out)]) == 2
    assert "overlaps the spec path" in capsys.readouterr().err
    assert tree(spec) == before
    with pytest.raises(CompileError, match="overlaps the spec path"):
        swarm.compile_spec([spec / "swarm.yaml", spec], out)
    assert tree(spec) == before
    assert main(["compile", str(spec), "--out", str(tmp_path / "elsewhere")]) == 0  # the spec still loads


def test_output_beside_the_spec_is_fine(tmp_path: Path, example_copy: Path) -> None:
    swarm.compile_spec(example_copy, tmp_path / "specs-compiled")
    swarm.compile_spec(example_copy, tmp_path)  # tmp/research next to tmp/specs: no overlap
    assert (tmp_path / "research" / "manifest.json").is_file()
