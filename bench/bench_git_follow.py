"""Benchmark: push → live when following a remote branch, webhook vs local commit.

Run from the repository root::

    .venv/bin/python -m bench.bench_git_follow [--edits 10]

Starts a redis-server and a registry (with ``SWARM_GIT_WEBHOOK_SECRET``) of its
own and the example spec in a bare "remote" repository. Two daemons run on the
same swarm one after the other:

* **baseline, local ref**: ``swarm reconcile --watch --rev main`` in the clone
  where the commit is made; the watcher on ``.git`` sees the ref move (what issue 5
  measured, no network);
* **webhook**: ``swarm reconcile --watch --rev origin/main --fetch-interval 3600``
  in a clone of its own; a developer's clone commits and pushes, then POSTs a
  GitHub-signed delivery to ``/hooks/git``: the daemon fetches and applies.

Each edit adds an agent; latency runs from just before the commit (the push and
the webhook for the second mode) until GET /catalog lists the agent. Prints
p50/p99 of both and the ratio webhook / local.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import httpx

from swarm.registry.auth import admin_token
from tests.support.services import ProcessServer, RedisServer, free_port, python_cmd

SECRET = "bench-secret"
HOOK = "bench-hook-secret"
REPO = Path(__file__).resolve().parents[1]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=b@e", "-c", "user.name=b", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()


def agent(n: int) -> str:
    return (f"---\napiVersion: swarm/v1\nkind: Agent\nid: bench-{n}\nrole: reviewer\nport: {9100 + n}\n"
            "publishes: [reviews.verdict]\nsubscribes: [results.research]\n")


def wait_until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("not live in time")
        time.sleep(0.002)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--edits", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-git-") as tmp:
        root = Path(tmp)
        rs = RedisServer(root / "redis").start()
        port = free_port()
        env = {**os.environ, "SWARM_REGISTRY_SECRET": SECRET, "SWARM_ADMIN_TOKEN": admin_token(SECRET, "research"),
               "SWARM_GIT_WEBHOOK_SECRET": HOOK}
        registry = ProcessServer(python_cmd("-m", "swarm", "registry", "serve", "--port", str(port), "--redis-url",
                                            rs.url, "--swarm", "research", "--no-probe", "--log-level", "warning"),
                                 port=port, env=env, log=root / "registry.log").start()
        http = httpx.Client(base_url=registry.url, timeout=5,
                            headers={"Authorization": f"Bearer {admin_token(SECRET, 'research')}"})

        def listed(aid: str) -> bool:
            r = http.get("/catalog")
            return r.status_code == 200 and aid in r.json()["catalog"]["agents"]

        origin, dev, deploy = root / "origin.git", root / "dev", root / "deploy"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
        subprocess.run(["git", "clone", "-q", str(origin), str(dev)], check=True, capture_output=True)
        shutil.copytree(REPO / "specs", dev / "specs")
        git(dev, "add", "specs")
        git(dev, "commit", "-qm", "spec")
        git(dev, "push", "-q", "origin", "main")
        subprocess.run(["git", "clone", "-q", str(origin), str(deploy)], check=True, capture_output=True)
        results: dict[str, list[float]] = {"local ref": [], "webhook": []}
        n = 0
        for mode, folder, rev in (("local ref", dev, "main"), ("webhook", deploy, "origin/main")):
            if mode == "webhook":
                git(dev, "push", "-q", "origin", "main")
                git(deploy, "fetch", "-q", "origin")
            with open(root / f"daemon-{rev.replace('/', '-')}.log", "wb") as log:
                daemon = subprocess.Popen(
                    python_cmd("-m", "swarm", "reconcile", str(folder / "specs"), "--watch", "--rev", rev,
                               "--fetch-interval", "3600", "--registry-url", registry.url, "--redis-url", rs.url,
                               "--compiled-dir", ""), env=env, stdout=log, stderr=log)
            try:
                wait_until(lambda: listed(f"bench-{n - 1}") if n else http.get("/catalog").status_code == 200, 60)
                time.sleep(1.0)
                for _ in range(args.edits):
                    aid = f"bench-{n}"
                    with open(dev / "specs" / "agents" / "review.yaml", "a") as fh:
                        fh.write(agent(n))
                    t0 = time.perf_counter()
                    git(dev, "commit", "-qam", aid)
                    if mode == "webhook":
                        git(dev, "push", "-q", "origin", "main")
                        body = json.dumps({"ref": "refs/heads/main"}).encode()
                        sig = "sha256=" + hmac.new(HOOK.encode(), body, hashlib.sha256).hexdigest()
                        assert httpx.post(registry.url + "/hooks/git", content=body,
                                          headers={"X-Hub-Signature-256": sig}).status_code == 202
                    wait_until(lambda: listed(aid))
                    results[mode].append((time.perf_counter() - t0) * 1000)
                    n += 1
                    time.sleep(0.3)
            finally:
                daemon.terminate()
                daemon.wait(10)
        registry.stop()
        rs.stop()
    local, hook = results["local ref"], results["webhook"]
    for mode, values in results.items():
        print(f"{mode:10s} p50 {statistics.median(values):7.1f} ms  p99 {pct(values, 99):7.1f} ms  (n={len(values)})")
    print(f"ratio webhook / local ref: p50 {statistics.median(hook) / statistics.median(local):.2f}x  "
          f"p99 {pct(hook, 99) / pct(local, 99):.2f}x")


if __name__ == "__main__":
    main()
