"""``swarm bus route`` as a real subprocess for tests (the trusted side of the mediated bus).

A router has no port, so readiness is its ``ready`` log line (written once the bus plan
is loaded and the ``router`` group exists on every declared outbox; an entry XADDed
before that is still routed: the groups start at id 0).

    router = RouterProcess(redis_url=server.url, swarm="lab", log=tmp_path / "router.log").start()
    ...
    assert router.stop() == 0   # SIGTERM: a clean exit

The ``router_factory`` fixture (import it in a conftest, or use :func:`make_router`)
starts any number and stops them all after the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import pytest

from tests.support.services import stop_process

READY = " ready: swarm "


class RouterProcess:
    """One ``python -m swarm bus route`` process; ``start()``, ``stop()``, ``kill()``, ``log_text()``."""

    def __init__(
        self,
        *,
        redis_url: str,
        swarm: str,
        log: Path,
        consumer: str | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        reclaim_idle_ms: int = 500,
        block_ms: int = 200,
    ) -> None:
        self.consumer = consumer or f"test-router-{uuid.uuid4().hex[:6]}"
        self.args = [
            sys.executable, "-m", "swarm", "bus", "route", "--swarm", swarm, "--redis-url", redis_url,
            "--consumer", self.consumer, "--reclaim-idle-ms", str(reclaim_idle_ms), "--block-ms", str(block_ms),
            *extra_args,
        ]
        self.env = {**os.environ, **(env or {})}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self, timeout: float = 20.0, *, wait_ready: bool = True) -> "RouterProcess":
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=out, stderr=out)
        if not wait_ready:
            return self
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if READY in self.log_text()[offset:]:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.args} exited with {self.proc.returncode}\n{self.log_text()[-4000:]}")
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"router not ready after {timeout}s\n{self.log_text()[-4000:]}")

    def wait(self, timeout: float = 20.0) -> int:
        """Wait for the process to end by itself (a fault hook SIGKILLs it); its return code."""
        assert self.proc is not None
        code = self.proc.wait(timeout=timeout)
        self.proc = None
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        code, self.proc = stop_process(self.proc, sig, timeout), None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


RouterFactory = Callable[..., RouterProcess]


def make_router(tmp_path: Path) -> tuple[RouterFactory, Callable[[], None]]:
    """(start a router, stop all started); ``start(redis_url=..., swarm=..., **kwargs)``."""
    started: list[RouterProcess] = []

    def start(*, redis_url: str, swarm: str, wait_ready: bool = True, **kwargs: object) -> RouterProcess:
        log = tmp_path / f"router{len(started)}.log"
        router = RouterProcess(redis_url=redis_url, swarm=swarm, log=log, **kwargs)  # type: ignore[arg-type]
        started.append(router)
        return router.start(wait_ready=wait_ready)

    def stop_all() -> None:
        for router in started:
            router.stop()

    return start, stop_all


@pytest.fixture
def router_factory(tmp_path: Path) -> Iterator[RouterFactory]:
    """Start ``swarm bus route`` processes (ready when returned); all are stopped after the test."""
    start, stop_all = make_router(tmp_path)
    yield start
    stop_all()
