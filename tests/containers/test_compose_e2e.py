"""The example swarm in real containers: images built by `swarm images build`, secrets by
`swarm secrets env`, run by podman-compose; every agent registers, two agents exchange
messages over the bus, and `down -v` leaves nothing.

Steps and why each is there:

1. Stand-in base images (:mod:`tests.containers.standins`): no image registry is
   reachable here, Debian's archive and PyPI are.
2. Compile the example spec into a temporary directory with the running swarm (the
   compose file and Dockerfiles under test are this checkout's), with the spec beside
   it where the compose file's reconciler mount expects it (``../../specs``).
3. ``swarm images build --engine podman`` with the stand-ins as PYTHON_IMAGE /
   NODE_IMAGE and the host's CA roots mounted into every build (pip and npm inside a
   build must trust what the host trusts).
4. ``swarm secrets env`` writes the .env; podman-compose reads it with ``--env-file``.
5. Up in dependency order from a copy of the compose file without ``depends_on``
   (:mod:`tests.containers.compose` says why), on a free registry port, under a
   project name of its own.
6. GET /agents on the published port until every registering agent is healthy.
7. The architect (TypeScript/NestJS: the example's `runtime: node`) and web-researcher
   (Python) exchange one message each way, each published inside the sender's own
   container with its own Redis user (the architect through the node runtime's
   BusClient), seen in the receiver's log; a second copy of one is not delivered.
8. ``down -v``: no container, network or volume of the project is left.

Marked ``slow`` and ``containers``; skipped (with the reason) only where podman or
root is missing. Durations of the phases are printed (``-s`` shows them), not asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from swarm.registry.auth import read_token
from swarm.secrets_env import parse
from tests.containers import standins
from tests.containers.compose import Compose, without_depends_on
from tests.support.services import free_port
from tests.support.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
SECRET = "containers-e2e-registry-secret"
SWARM = "research"
#: the one-shot setup services: they must have exited 0 before the agents start
SETUP_SERVICES = ("swarm-bus-apply", "swarm-catalog-push")

pytestmark = [pytest.mark.slow, pytest.mark.containers, pytest.mark.timeout(900)]


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (rootful podman, debootstrap)"
    if shutil.which("podman") is None:
        return "podman is not installed (.ci/run installs it: apt-get install -y podman runc debootstrap)"
    return None


def swarm(*args: str, env: dict[str, str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "swarm", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)
    assert proc.returncode == 0, f"swarm {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    return proc


PUBLISH = """
import asyncio, os, sys
from swarm.bus.bus import EventBus

async def main():
    async with EventBus(redis_url=os.environ["REDIS_URL"], swarm=sys.argv[1], agent_id=os.environ["AGENT_ID"]) as bus:
        result = await bus.publish(sys.argv[2], {"from": os.environ["AGENT_ID"]}, message_id=sys.argv[3],
                                   wait=True, timeout=20)
        print(result.entry_id, "duplicate" if result.duplicate else "new")

asyncio.run(main())
"""


#: The same from a node agent's container, through the shared runtime package's BusClient (the code
#: the agent's handlers publish with); it answers "accepted" (the router's verdict is asynchronous).
PUBLISH_NODE = """
import { BusClient, configFromEnv } from "@swarm-gitops/agent-runtime";
import { COMPILED } from "/app/dist/config.js";
const [topic, messageId] = process.argv.slice(1);
const bus = new BusClient(configFromEnv(COMPILED));
await bus.connect();
const result = await bus.publish(topic, { from: process.env.AGENT_ID }, { messageId });
console.log(result.outboxId, result.status);
process.exit(0);
"""


def is_node(compiled: Path, agent: str) -> bool:
    return (compiled / "agents" / agent / "package.json").is_file()


def publish_from(compose: Compose, compiled: Path, agent: str, topic: str, message_id: str) -> str:
    """Publish inside ``agent``'s container, as that agent (its REDIS_URL carries its own Redis user)."""
    if is_node(compiled, agent):
        return compose.exec(agent, "node", "--input-type=module", "-e", PUBLISH_NODE, topic, message_id).strip()
    return compose.exec(agent, "python", "-c", PUBLISH, SWARM, topic, message_id).strip()


def test_the_example_swarm_runs_in_containers(tmp_path: Path) -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    env = standins.engine_env(conf_dir=tmp_path / "conf")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["SWARM_REGISTRY_SECRET"] = SECRET
    for name in ("SWARM_REDIS_PASSWORD", "SWARM_BUS_SECRET", "SWARM_ADMIN_TOKEN"):
        env.pop(name, None)

    # 2. compile (before the stand-ins: the Redis stand-in takes the compose file's image name)
    shutil.copytree(REPO / "specs", tmp_path / "specs")
    swarm("compile", str(tmp_path / "specs"), "--out", str(tmp_path / "compiled"), env=env, cwd=tmp_path)
    compiled = tmp_path / "compiled" / SWARM
    port = free_port()
    compose_file = compiled / "podman-compose.yml"
    document = without_depends_on(compiled / "docker-compose.yml", compose_file, port)
    services = document["services"]

    # 1. stand-ins
    bases = standins.ensure(services["redis"]["image"], env)
    timings["stand-ins"] = time.monotonic() - t0

    # 3. images
    t = time.monotonic()
    build_args = [f"--build-arg={k}={v}" for k, v in bases.build_args().items()]
    built = swarm("images", "build", str(compiled), "--engine", "podman", "--quiet", *build_args,
                  "--", "-v", f"{standins.HOST_CERTS}:{standins.HOST_CERTS}:ro", env=env, cwd=tmp_path)
    tags = built.stdout.split()
    wanted = {s["image"] for s in services.values() if "build" in s}
    assert sorted(tags) == sorted(wanted)  # one image per tag the compose file names, each built
    for tag in tags:
        assert subprocess.run(["podman", "image", "exists", tag], env=env).returncode == 0, tag
    timings["images build"] = time.monotonic() - t

    # 4. secrets
    env_file = tmp_path / "research.env"
    swarm("secrets", "env", str(compiled), "--out", str(env_file), env=env, cwd=tmp_path)
    secrets = parse(env_file.read_text())

    compose = Compose(f"swarm-e2e-{uuid.uuid4().hex[:8]}", compose_file, env_file, env, tmp_path / "compose.log")
    registry = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {read_token(SECRET, SWARM)}"}
    registering = sorted(n for n, s in services.items() if "SWARM_AGENT_TOKEN" in s.get("environment", {}))
    agents = sorted(n for n, s in services.items() if "AGENT_ID" in s.get("environment", {}))
    others = sorted(set(services) - {"redis", "registry", *SETUP_SERVICES})
    try:
        # 5. up in dependency order
        t = time.monotonic()
        compose.up("redis", "registry")
        wait_until(lambda: _live(registry), 120, what="the registry answering /health/live (what its compose healthcheck asks)", every=1.0)
        compose.up(*SETUP_SERVICES)
        compose.wait_exited_ok(SETUP_SERVICES, 120)
        compose.up(*others)

        # 6. every registering agent is there and healthy
        def all_healthy() -> dict[str, str] | None:
            try:
                body = httpx.get(f"{registry}/agents", headers=headers, timeout=5).json()
            except (httpx.HTTPError, ValueError):
                return None
            status = {a["agent_id"]: a["status"] for a in body["agents"]}
            return status if sorted(status) == registering and set(status.values()) == {"healthy"} else None

        status = wait_until(all_healthy, 180, what=f"agents {registering} registered and healthy", every=2)
        timings["compose up until all healthy"] = time.monotonic() - t
        assert sorted(status) == registering and len(registering) >= 2
        running = {s: c["State"] for s, c in compose.containers().items()}
        assert all(running[a] == "running" for a in agents), running

        # 7. a message each way between the architect and a Python agent
        t = time.monotonic()
        to_worker = f"e2e-task-{uuid.uuid4().hex[:6]}"
        to_architect = f"e2e-result-{uuid.uuid4().hex[:6]}"
        runtime = json.loads((compiled / "registry.json").read_text())["agents"]["architect"]["runtime"]
        assert is_node(compiled, "architect") == (runtime == "node")  # the example's architect is TypeScript
        first = publish_from(compose, compiled, "architect", "tasks.research", to_worker)
        again = publish_from(compose, compiled, "architect", "tasks.research", to_worker)
        if is_node(compiled, "architect"):  # the TypeScript architect, once its runtime is node
            assert first.endswith(" accepted") and again.endswith(" accepted")
        else:
            assert first.endswith(" new") and again.endswith(" duplicate")
        assert publish_from(compose, compiled, "web-researcher", "results.research", to_architect).endswith(" new")
        wait_until(lambda: to_worker in compose.logs("web-researcher"), 60, what="web-researcher handling the task", every=1.0)
        wait_until(lambda: to_architect in compose.logs("architect"), 60, what="architect handling the result", every=1.0)
        # a later message from the same outbox: the router takes an outbox in order, so once this one
        # is handled the duplicate before it has been decided
        marker = f"e2e-after-{uuid.uuid4().hex[:6]}"
        publish_from(compose, compiled, "architect", "tasks.research", marker)
        wait_until(lambda: marker in compose.logs("web-researcher"), 60, what="web-researcher handling the later task", every=1.0)
        assert compose.logs("web-researcher").count(repr(to_worker)) == 1  # the duplicate was not delivered
        timings["message exchange"] = time.monotonic() - t
        assert secrets["SWARM_REGISTRY_SECRET"] == SECRET
    except BaseException:
        print(compose.logs(*(s for s in services if s in compose.containers())), file=sys.stderr)
        raise
    finally:
        # 8. down leaves nothing
        t = time.monotonic()
        compose.compose("down", "-v", "--timeout", "10", check=False)
        timings["compose down"] = time.monotonic() - t
        print(json.dumps({k: round(v, 1) for k, v in timings.items()}), file=sys.stderr)
        # the swarm's images go too (each run rebuilds them: the wheel server's port is a build
        # argument); the stand-ins stay, they are the cache of the next run
        subprocess.run(["podman", "rmi", "--force", *tags], capture_output=True, env=env, timeout=120)
    assert compose.leftovers() == {"containers": [], "networks": [], "volumes": []}
    assert compose.project not in subprocess.run(["podman", "network", "ls", "--format", "{{.Name}}"],
                                                 capture_output=True, text=True, env=env).stdout


def _live(registry: str) -> bool:
    try:
        return httpx.get(f"{registry}/health/live", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False

