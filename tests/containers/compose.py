"""Driving the compiled compose file with podman-compose, for the container end-to-end test.

Why the test does not just run ``podman-compose up``: podman 4.3 (Debian 12's) with
podman-compose cannot start a service whose ``depends_on`` has a ``condition``
(``service_healthy`` / ``service_completed_successfully``): it fails with "depends on
container ... not found in input list". The compiled file stays standard (docker
compose honours those conditions); the test runs a copy without ``depends_on`` and
does the ordering itself, in the order the conditions say: Redis and the registry
until healthy, then the one-shot setup services until they exit 0, then the rest.

The copy also publishes the registry on a free port instead of the fixed 8700, so a
test run never collides with a swarm someone else runs on the machine, and the
project gets a name of its own (``-p``) for the same reason: every container,
network and volume carries the project label, which is how "down leaves nothing" is
checked.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

PROJECT_LABEL = "io.podman.compose.project"


def podman_compose_cmd() -> list[str]:
    """podman-compose from PATH or from the running interpreter's environment (the `containers` extra)."""
    beside = Path(sys.executable).parent / "podman-compose"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("podman-compose")
    if found:
        return [found]
    raise RuntimeError("podman-compose is not installed (pip install -e '.[containers]')")


def without_depends_on(compose_file: Path, out: Path, registry_port: int) -> dict[str, Any]:
    """Write the copy described above next to ``compose_file`` (same relative paths); return it."""
    document = yaml.safe_load(compose_file.read_text())
    for name, service in document["services"].items():
        service.pop("depends_on", None)
        if name == "registry":
            service["ports"] = [f"127.0.0.1:{registry_port}:8700"]
    out.write_text(yaml.safe_dump(document, sort_keys=True))
    return dict(document)


class Compose:
    """``podman-compose -p PROJECT --env-file ENV -f FILE ...`` and podman queries about that project."""

    def __init__(self, project: str, compose_file: Path, env_file: Path, env: Mapping[str, str], log: Path) -> None:
        self.project = project
        self.base = [*podman_compose_cmd(), "-p", project, "--env-file", str(env_file), "-f", str(compose_file)]
        self.env = dict(env)
        self.log = log

    def _run(self, cmd: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, env=self.env, timeout=timeout)
        with self.log.open("a") as fh:
            fh.write(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}[exit {proc.returncode}]\n")
        return proc

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = self._run([*self.base, *args], timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman-compose {' '.join(args)} exited {proc.returncode}:\n"
                                 + "\n".join((proc.stdout + proc.stderr).splitlines()[-30:]))
        return proc

    def podman(self, *args: str, timeout: float = 60) -> str:
        proc = self._run(["podman", *args], timeout)
        if proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def up(self, *services: str) -> None:
        self.compose("up", "-d", *services)

    def containers(self) -> dict[str, dict[str, Any]]:
        """service name -> podman's view of its container (State, ExitCode, Names ...)."""
        out = self.podman("ps", "-a", "--filter", f"label={PROJECT_LABEL}={self.project}", "--format", "json")
        return {c["Labels"]["com.docker.compose.service"]: c for c in json.loads(out or "[]")}

    def container(self, service: str) -> str:
        return str(self.containers()[service]["Names"][0])

    def wait_exited_ok(self, services: Sequence[str], timeout: float) -> None:
        """Until every one-shot service has exited 0 (``restart: on-failure`` reruns a failed one)."""
        deadline = time.monotonic() + timeout
        pending = set(services)
        while pending and time.monotonic() < deadline:
            for service in list(pending):
                state = self.podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}",
                                    self.container(service)).split()
                if state == ["exited", "0"]:
                    pending.discard(service)
            time.sleep(0.5)
        assert not pending, f"{sorted(pending)} did not exit 0 within {timeout}s; logs: {self.logs(*pending)}"

    def exec(self, service: str, *cmd: str, timeout: float = 60) -> str:
        return self.podman("exec", self.container(service), *cmd, timeout=timeout)

    def logs(self, *services: str) -> str:
        parts = []
        for service in services:
            proc = self._run(["podman", "logs", "--tail", "400", self.container(service)], 30)
            parts.append(f"--- {service}\n{proc.stdout}{proc.stderr}")
        return "\n".join(parts)

    def leftovers(self) -> dict[str, list[str]]:
        """What of the project is still there: containers, networks, volumes (by the project label)."""
        label = f"label={PROJECT_LABEL}={self.project}"
        containers = self.podman("ps", "-a", "-q", "--filter", label).split()
        networks = self.podman("network", "ls", "-q", "--filter", label).split()
        volumes = self.podman("volume", "ls", "-q", "--filter", label).split()
        return {"containers": containers, "networks": networks, "volumes": volumes}
