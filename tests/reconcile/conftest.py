"""Reconcile fixtures: a real registry (uvicorn subprocess) and Redis, and a spec folder of the test's own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from swarm.reconcile.status import ReconcileStatus, parse_status
from swarm.registry.auth import admin_token
from tests.reconcile.specdata import REPO
from tests.registry.conftest import TEST_SECRET, RegistryFactory, RegistryProcess, registry_factory  # noqa: F401
from tests.support.services import ProcessServer, RedisServer, python_cmd


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    """A copy of specs/ the test may edit."""
    target = tmp_path / "specs"
    shutil.copytree(REPO / "specs", target)
    return target


@pytest.fixture
def live(registry_factory: RegistryFactory, redis_server: RedisServer) -> RegistryProcess:
    """A registry for swarm research on its own redis-server, no catalog pushed yet."""
    return registry_factory(redis_server, extra_args=["--no-probe"])



# --------------------------------------------------------------------------- the daemon as a process


STATUS_KEY = "swarm:{research}:status"


def cli_env() -> dict[str, str]:
    return {**os.environ, "SWARM_REGISTRY_SECRET": TEST_SECRET, "SWARM_ADMIN_TOKEN": admin_token(TEST_SECRET, "research")}


def run_cli(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m swarm ARGS`` with the test registry's secret in the environment."""
    return subprocess.run(python_cmd("-m", "swarm", *args), cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout)


class Daemon(ProcessServer):
    """``swarm reconcile --watch`` as a subprocess, and its status in Redis.

    It listens on no port: :meth:`start` does not wait for readiness (tests wait
    on its status instead); ``stop`` is :meth:`ProcessServer.stop`'s.
    """

    def __init__(self, args: list[str], *, cwd: Path, live: RegistryProcess, log: Path) -> None:
        super().__init__(python_cmd("-m", "swarm", *args), port=0, cwd=cwd, ready_path=None, log=log)
        self.live = live
        self.log: Path = log
        self.env: dict[str, str] = {}  # extra environment of the next start()

    def start(self, timeout: float = 0.0) -> "Daemon":
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.args, cwd=self.cwd, env={**cli_env(), **self.env}, stdout=out, stderr=out)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self) -> ReconcileStatus | None:
        client: Any = self.live.redis.client(decode_responses=True, socket_timeout=2)
        try:
            return parse_status(client.get(STATUS_KEY))
        except Exception:  # Redis stopped on purpose by a fault test
            return None
        finally:
            client.close()

    def wait_for(self, predicate: Callable[[ReconcileStatus], bool], timeout: float = 20.0) -> ReconcileStatus:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.status()
            if last is not None and predicate(last):
                return last
            if not self.alive():
                raise AssertionError(f"daemon exited:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.02)
        raise AssertionError(f"status never matched; last: {last}\n{self.log.read_text()[-3000:]}")


@pytest.fixture
def daemon_factory(live: RegistryProcess, tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def make(spec: Path, *extra: str, start: bool = True) -> Daemon:
        args = ["reconcile", str(spec), "--watch", "--resync", "0.5", "--registry-url", live.url,
                "--redis-url", live.redis.url, "--compiled-dir", str(tmp_path / "compiled"), "-o", "json", *extra]
        d = Daemon(args, cwd=tmp_path, live=live, log=tmp_path / f"daemon{len(started)}.log")
        started.append(d)
        return d.start() if start else d

    yield make
    for d in started:
        d.stop()


def catalog_digest_live(live: RegistryProcess) -> str | None:
    import httpx

    r = live.get("/catalog", timeout=5)
    return None if r.status_code == 404 else str(json.loads(r.text)["catalog"]["spec_digest"])
