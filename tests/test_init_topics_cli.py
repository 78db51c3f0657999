"""``swarm init`` (a spec that validates and compiles, never overwriting) and ``swarm topics``
(the bus as a real Redis holds it, after a real `swarm bus apply` and a routed message)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.support.router import RouterFactory, router_factory  # noqa: F401  (fixture)
from tests.support.services import RedisServer, python_cmd

REPO = Path(__file__).resolve().parents[1]


def _swarm(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(python_cmd("-m", "swarm", *args), cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_init_scaffolds_a_spec_that_compiles_and_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "my-swarm"
    done = _swarm("init", str(target), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (target / "specs" / "swarm.yaml").is_file() and (target / "specs" / "agents" / "my-swarm-worker.yaml").is_file()
    assert (target / "schemas" / "swarm.schema.json").is_file() and ".swarm/" in (target / ".gitignore").read_text()
    assert _swarm("validate", str(target / "specs"), cwd=tmp_path).returncode == 0
    built = _swarm("compile", str(target / "specs"), "--out", str(target / "compiled"), cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    assert (target / "compiled" / "my-swarm" / "agents" / "my-swarm-worker" / "server.py").is_file()
    before = (target / "specs" / "swarm.yaml").read_text()
    again = _swarm("init", str(target), cwd=tmp_path)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr
    assert (target / "specs" / "swarm.yaml").read_text() == before
    bad = _swarm("init", str(tmp_path / "x"), "--name", "Not_Valid", cwd=tmp_path)
    assert bad.returncode == 2 and "not a valid swarm name" in bad.stderr and not (tmp_path / "x").exists()


def test_topics_reads_the_bus_from_redis(tmp_path: Path, redis_server: RedisServer,
                                          router_factory: RouterFactory) -> None:
    env = {"SWARM_REGISTRY_SECRET": "topics-secret", "SWARM_BUS_SECRET": ""}
    applied = _swarm("bus", "apply", str(REPO / "compiled" / "research"), "--redis-url", redis_server.url,
                     cwd=REPO, env=env)
    assert applied.returncode == 0, applied.stderr
    router_factory(redis_url=redis_server.url, swarm="research")
    sent = _swarm("bus", "publish", "tasks.research", '{"q": 1}', "--as", "architect", "--spec", "specs",
                  "--redis-url", redis_server.url, cwd=REPO, env=env)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    done = _swarm("topics", "specs", "--redis-url", redis_server.url, "-o", "json", cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    topics = {t["topic"]: t for t in doc["topics"]}
    assert topics["tasks.research"]["length"] == 1 and topics["results.research"]["length"] == 0
    assert topics["tasks.research"]["publishers"] == ["architect"]
    assert set(topics["tasks.research"]["subscribers"]) == {"auditor", "paper-researcher", "web-researcher"}
    inboxes = {i["agent"]: i for i in doc["inboxes"]}
    assert inboxes["web-researcher"]["waiting"] == 1 and inboxes["web-researcher"]["pending"] == 0
    assert inboxes["architect"]["waiting"] == 0
    text = _swarm("topics", "specs", "--redis-url", redis_server.url, cwd=REPO, env=env).stdout
    assert text.splitlines()[0].split() == ["TOPIC", "LENGTH", "DEAD", "PUBLISHERS", "SUBSCRIBERS"]
    assert "INBOX" in text
