"""The kubernetes target's wiring run for real, without a cluster: the registry, reconciler,
router and agent processes are started with the command lines and environment of their
compiled Deployments (Secrets filled from ``swarm secrets k8s``, ``$(VAR)`` expanded as the
kubelet does, the pod IP as 127.0.0.1; only ports, the listen address and the registry's
Service address are mapped to this machine) against a real password-protected redis-server.
The agent turns ready (registered with its token, on the bus as its own Redis user) and a
message it publishes is routed by the router Deployment's command."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from swarm.compiler import compile_loaded
from swarm.compiler.output import write_output
from swarm.compiler.targets.compose import RECONCILER_METRICS_PORT
from swarm.compiler.targets.kubernetes import object_name
from swarm.keys import SwarmKeys
from swarm.registry.auth import admin_token
from swarm.secrets_k8s import secret_manifests
from swarm.spec.loader import load_spec_full
from tests.support.services import ProcessServer, RedisServer, free_port, python_cmd, stop_process
from tests.support.wait import wait_until

from .conftest import agent_doc, swarm_doc, write_spec

REDIS_PASSWORD = "k8s-wiring-pw"


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' expansion of an env value or argument: ``$$`` is ``$``, ``$(NAME)`` the value
    of a variable defined before (an undefined reference stays as written)."""
    out: list[str] = []
    i = 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if value.startswith("$(", i):
            end = value.find(")", i)
            if end != -1 and value[i + 2:end] in env:
                out.append(env[value[i + 2:end]])
                i = end + 1
                continue
        out.append(value[i])
        i += 1
    return "".join(out)


def container_env(container: dict[str, Any], secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = expand(item["value"], env)
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "status.podIP"
            env[item["name"]] = "127.0.0.1"
            continue
        ref = source["secretKeyRef"]
        value = secrets.get((ref["name"], ref["key"]))
        if value is None:
            assert ref.get("optional"), f"Secret {ref['name']} has no key {ref['key']}"
            continue
        env[item["name"]] = value
    return env


def deployment(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name]
    container: dict[str, Any] = found["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.mark.slow  # a whole swarm's processes (~11 s)
def test_the_compiled_deployments_run_a_swarm(tmp_path: Path, redis_server: RedisServer) -> None:
    redis.Redis.from_url(redis_server.url).config_set("requirepass", REDIS_PASSWORD)
    agent_port, registry_port = free_port(), free_port()
    spec_dir = write_spec(
        tmp_path / "specs",
        swarm_doc(bus={"redis_url": redis_server.url}, compile={"targets": ["kubernetes"]}),
        [agent_doc("worker-1", agent_port, role="worker", subscribes=["tasks.work"], publishes=["results.work"])],
    )
    loaded = load_spec_full(spec_dir)
    spec = loaded.spec
    files = compile_loaded(loaded)
    out = tmp_path / "compiled"
    write_output(files, out, spec.name)
    objects = [d for p, data in sorted(files.items()) if p.startswith(f"{spec.name}/kubernetes/") and not p.endswith("kustomization.yaml")
               for d in yaml.safe_load_all(data) if d]
    printed = secret_manifests(spec, swarm_version="0.1.0", registry_secret="wiring-secret", redis_password=REDIS_PASSWORD)
    secrets = {(s["metadata"]["name"], k): base64.b64decode(v).decode() for s in printed for k, v in s["data"].items()}
    service_url = f"http://{object_name(spec.name, 'registry')}:8700"
    local_url = f"http://127.0.0.1:{registry_port}"

    def local(args: list[str], env: dict[str, str]) -> list[str]:
        return [local_url if a == service_url else expand(a, env) for a in args]

    started: list[ProcessServer] = []
    router: subprocess.Popen[bytes] | None = None
    try:
        registry_container = deployment(objects, object_name(spec.name, "registry"))
        env = container_env(registry_container, secrets)
        args = local(registry_container["command"], env)
        assert args[:3] == ["swarm", "registry", "serve"]
        registry = ProcessServer(python_cmd("-m", "swarm", *args[1:], "--host", "127.0.0.1", "--port", str(registry_port)),
                                 port=registry_port, env=env, log=tmp_path / "registry.log")
        started.append(registry.start())

        reconciler = deployment(objects, object_name(spec.name, "reconciler"))
        env = container_env(reconciler, secrets)
        args = local(reconciler["command"], env)
        assert args[:4] == ["swarm", "reconcile", "/git/current/specs", "--watch"]
        args[2:4] = [str(spec_dir), "--once"]  # the git-sync checkout is this spec; one pass
        at = args.index("--metrics-port")  # served by --watch only; the port is the container's
        assert (args[at + 1], args[at + 2:at + 4]) == (str(RECONCILER_METRICS_PORT), ["--metrics-host", "0.0.0.0"])
        assert reconciler["ports"] == [{"name": "metrics", "containerPort": RECONCILER_METRICS_PORT, "protocol": "TCP"}]
        del args[at:at + 4]
        done = subprocess.run(python_cmd("-m", "swarm", *args[1:]), env={**os.environ, **env},
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr

        router_container = deployment(objects, object_name(spec.name, "router"))
        env = container_env(router_container, secrets)
        with open(tmp_path / "router.log", "ab") as log:
            router = subprocess.Popen(python_cmd("-m", "swarm", *local(router_container["command"], env)[1:]),
                                      env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)

        agent_container = deployment(objects, object_name(spec.name, "worker-1"))
        env = container_env(agent_container, secrets)
        assert env["REGISTRY_URL"] == service_url
        env["REGISTRY_URL"] = local_url  # the Service's address on this machine
        assert env["REDIS_URL"].startswith(f"redis://swarm.{spec.name}.worker-1:") and REDIS_PASSWORD not in env["REDIS_URL"]
        agent = ProcessServer([sys.executable, "-m", "uvicorn", "server:app", "--host", "127.0.0.1", "--port", str(agent_port)],
                              port=agent_port, env=env, cwd=out / spec.name / "agents" / "worker-1", ready_path="/health/ready",
                              log=tmp_path / "agent.log")
        started.append(agent.start(timeout=30))

        # registered with the token from its Secret, at the health URL on its pod IP
        key = secrets[(object_name(spec.name, "swarm"), "SWARM_REGISTRY_SECRET")]
        listing = httpx.get(f"{local_url}/agents/worker-1", headers={"Authorization": f"Bearer {admin_token(key, spec.name)}"})
        assert listing.status_code == 200, listing.text
        assert listing.json()["health_url"] == f"http://127.0.0.1:{agent_port}/health/live"

        # the agent's own Redis user may write its outbox; the router moves the entry to the topic log
        agent_redis = redis.Redis.from_url(env["REDIS_URL"])
        keys = SwarmKeys(spec.name)
        agent_redis.xadd(keys.outbox("worker-1"), {"topic": "results.work", "payload": json.dumps({"n": 1})})
        admin_redis = redis.Redis.from_url(redis_server.url, password=REDIS_PASSWORD)
        wait_until(lambda: admin_redis.exists(keys.topic("results.work")) == 1 and admin_redis.xlen(keys.topic("results.work")) == 1, every=0.1)
    finally:
        stop_process(router)
        for server in reversed(started):
            server.stop()
