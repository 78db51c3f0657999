"""The spec index (swarm.spec.index): `swarm token`'s cache of a spec's swarm name and agent ids.

The cache may only cost speed: after an edit the answer is the edited spec's, a
corrupt or forged-looking file is ignored, an invalid spec is never cached.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from swarm.errors import SpecError
from swarm.spec.index import index_dir, spec_index
from swarm.spec.loader import load_spec

EXTRA_AGENT = """---
apiVersion: swarm/v1
kind: Agent
id: late-comer
name: Late Comer
version: 1.0.0
role: worker
port: 8099
capabilities: [research]
"""


@pytest.fixture
def spec_dir(tmp_path: Path, repo_root: Path) -> Path:
    target = tmp_path / "specs"
    shutil.copytree(repo_root / "specs", target)
    return target


def _entries() -> list[Path]:
    directory = index_dir()
    assert directory is not None
    return sorted(directory.glob("*.json")) if directory.is_dir() else []


def test_the_index_answers_what_a_full_load_does(spec_dir: Path) -> None:
    spec = load_spec(spec_dir)
    first = spec_index(spec_dir)
    assert (first.swarm, first.agents) == (spec.name, tuple(sorted(a.id for a in spec.agents)))
    assert len(_entries()) == 1
    assert spec_index(spec_dir) == first  # the cached answer, same as the computed one


def test_an_edit_after_caching_gives_the_edited_spec(spec_dir: Path) -> None:
    before = spec_index(spec_dir)
    assert not before.declares("late-comer") and before.declares("auditor")
    review = spec_dir / "agents" / "review.yaml"
    text = review.read_text()
    auditor = text.index("---\napiVersion: swarm/v1\nkind: Agent\nid: auditor")
    review.write_text(text[:auditor] + EXTRA_AGENT)  # auditor out, late-comer in
    after = spec_index(spec_dir)
    assert after.declares("late-comer") and not after.declares("auditor")
    assert after.digest != before.digest
    swarm = spec_dir / "swarm.yaml"
    swarm.write_text(swarm.read_text().replace("name: research", "name: research-two", 1))
    assert spec_index(spec_dir).swarm == "research-two"


@pytest.mark.parametrize("garbage", [b"", b"{not json", b"[]", b'{"key": 1}', b"\xff\xfe"])
def test_a_corrupt_cache_file_is_ignored_and_rewritten(spec_dir: Path, garbage: bytes) -> None:
    right = spec_index(spec_dir)
    (entry,) = _entries()
    entry.write_bytes(garbage)
    assert spec_index(spec_dir) == right
    assert json.loads(entry.read_bytes())["agents"] == list(right.agents)


def test_a_cache_file_of_another_spec_is_not_trusted(spec_dir: Path) -> None:
    right = spec_index(spec_dir)
    (entry,) = _entries()
    data = json.loads(entry.read_bytes())
    entry.write_text(json.dumps({**data, "digest": "sha256:" + "0" * 64, "agents": ["intruder"]}))
    assert spec_index(spec_dir) == right
    data = json.loads(entry.read_bytes())
    entry.write_text(json.dumps({**data, "agents": ["Not A Name"]}))
    assert spec_index(spec_dir) == right


def test_an_invalid_spec_raises_and_is_not_cached(spec_dir: Path) -> None:
    review = spec_dir / "agents" / "review.yaml"
    review.write_text(review.read_text().replace("port: 8005", "port: not-a-port"))
    with pytest.raises(SpecError, match="port"):
        spec_index(spec_dir)
    assert _entries() == []
    with pytest.raises(SpecError, match="port"):  # the second call loads again, it does not remember a failure
        spec_index(spec_dir)


def test_the_cache_can_be_disabled(spec_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_CACHE_DIR", "")
    assert index_dir() is None
    assert spec_index(spec_dir).declares("auditor")


def test_swarm_token_after_an_edit_refuses_the_removed_agent(spec_dir: Path, repo_root: Path) -> None:
    env = {**os.environ, "SWARM_REGISTRY_SECRET": "s3cret"}

    def token(agent: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "swarm", "token", agent, "--spec", str(spec_dir)],
                              capture_output=True, text=True, cwd=repo_root, timeout=60, env=env)

    assert token("auditor").returncode == 0  # now cached
    review = spec_dir / "agents" / "review.yaml"
    text = review.read_text()
    review.write_text(text[:text.index("---\napiVersion: swarm/v1\nkind: Agent\nid: auditor")])
    refused = token("auditor")
    assert refused.returncode == 2
    assert "agent 'auditor' is not declared" in refused.stderr
    assert token("reviewer").returncode == 0
