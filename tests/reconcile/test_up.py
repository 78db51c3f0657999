"""``swarm up`` as a process: its own redis-server and registry, the watch loop, clean Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.services import python_cmd


def test_up_starts_everything_and_ctrl_c_stops_it(spec_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "SWARM_REGISTRY_SECRET": "", "SWARM_ADMIN_TOKEN": ""}
    out = tmp_path / "up.out"
    with open(out, "wb") as fh:
        proc = subprocess.Popen(python_cmd("-m", "swarm", "up", str(spec_dir)), cwd=tmp_path, env=env, stdout=fh, stderr=fh)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "push the registry catalog" not in out.read_text():
            assert proc.poll() is None, out.read_text()
            time.sleep(0.1)
        text = out.read_text()
        registry = re.search(r"registry\s+(http://\S+)", text)
        redis_url = re.search(r"redis\s+(redis://\S+)", text)
        assert registry and redis_url, text
        catalog = httpx.get(registry.group(1) + "/catalog", timeout=10).json()
        assert len(catalog["catalog"]["agents"]) == 6, text
        assert (tmp_path / ".swarm" / "redis").is_dir() and (tmp_path / "compiled" / "research").is_dir()
        assert oct((tmp_path / ".swarm" / "secret").stat().st_mode & 0o777) == "0o600"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    port = int(redis_url.group(1).rsplit(":", 1)[1].split("/")[0])
    import socket

    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "redis-server was stopped"


def test_up_without_redis_server_says_what_to_do(spec_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path / "empty-bin")}
    result = subprocess.run([sys.executable, "-m", "swarm", "up", str(spec_dir)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "no redis-server found" in result.stderr and "--redis-url" in result.stderr
