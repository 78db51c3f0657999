"""Real npm and node for the node runtime's tests, and the maintainer's two regeneration steps.

``npm ci`` of the fixed dependency set takes ~10 s from npm's cache, so a test session
installs it once (:func:`installed_modules`, a directory keyed by the lock's sha256
under the session's temporary root) and every generated agent gets a symlink to it.

Regenerating what ships inside swarm (network needed for the lock)::

    PYTHONPATH=$PWD python -m tests.runtimes.node.support lock   # swarm/runtimes/node/package-lock.json
    PYTHONPATH=$PWD python -m tests.runtimes.node.support dist   # constants.ts and agent-runtime/dist/

``lock`` writes an agent of the fixed dependency set (``swarm-agent`` 0.0.0) beside the
shared package (0.0.0), runs ``npm install --package-lock-only`` and drops the registry
URLs from the ``resolved`` fields (``npm ci`` finds each package by name, version and
integrity) and the ``funding`` links. ``dist`` renders constants.ts from the Python definitions and runs ``tsc``
on the shared package's source.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from swarm.runtimes import node
from swarm.spec.models import Agent, Spec

PACKAGE = Path(node.__file__).resolve().parent
SHARED_SOURCE = PACKAGE / "agent-runtime"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def npm_env() -> dict[str, str]:
    env = dict(os.environ)
    if "NODE_EXTRA_CA_CERTS" not in env and Path(CA_BUNDLE).exists():
        env["NODE_EXTRA_CA_CERTS"] = CA_BUNDLE
    env.setdefault("npm_config_update_notifier", "false")
    env.setdefault("npm_config_fund", "false")
    env.setdefault("npm_config_audit", "false")
    return env


def run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=cwd, env=npm_env(), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} in {cwd} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def template_agent() -> Agent:
    return Agent(id=node.LOCK_TEMPLATE_NAME, version=node.LOCK_TEMPLATE_VERSION, role="r", port=1, runtime="node")


def write_template_project(root: Path) -> Path:
    """``root/agents/swarm-agent/`` (package.json, .npmrc) and ``root/node/agent-runtime/``; the agent's dir."""
    agent_dir = root / "agents" / node.LOCK_TEMPLATE_NAME
    agent_dir.mkdir(parents=True)
    shared = root / node.SHARED_DIR
    shared.mkdir(parents=True)
    (shared / "package.json").write_text(json.dumps(node.shared_package_json(node.LOCK_TEMPLATE_VERSION), indent=2))
    (agent_dir / "package.json").write_text(json.dumps(node.package_json(template_agent(), "0.0.0"), indent=2))
    (agent_dir / ".npmrc").write_text(node.NPMRC)
    return agent_dir


def strip_registry_urls(lock: dict[str, object]) -> dict[str, object]:
    packages = lock["packages"]
    assert isinstance(packages, dict)
    for entry in packages.values():
        if str(entry.get("resolved", "")).startswith(("http://", "https://")):
            del entry["resolved"]
        entry.pop("funding", None)  # sponsor pages: npm ci needs none of them
    return lock


def regenerate_lock() -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        agent_dir = write_template_project(Path(tmp))
        run(["npm", "install", "--package-lock-only"], agent_dir)
        lock = strip_registry_urls(json.loads((agent_dir / "package-lock.json").read_text()))
    target = PACKAGE / node.LOCK_FILE
    target.write_text(json.dumps(lock, indent=2) + "\n")
    return target


def build_shared(out: Path, modules: Path) -> Path:
    """``tsc`` the shared package's source (with ``modules`` as node_modules) into ``out``; ``out/dist``."""
    shutil.copytree(SHARED_SOURCE / "src", out / "src")
    shutil.copy(SHARED_SOURCE / "tsconfig.json", out / "tsconfig.json")
    (out / "package.json").write_text('{"type": "module"}\n')
    (out / "node_modules").symlink_to(modules)
    run([str(modules / ".bin" / "tsc"), "-p", "tsconfig.json"], out)
    return out / "dist"


def lock_digest() -> str:
    return hashlib.sha256((PACKAGE / node.LOCK_FILE).read_bytes()).hexdigest()[:16]


def installed_modules(cache: Path) -> Path:
    """``node_modules`` of the fixed dependency set, installed by ``npm ci`` from the shipped lock
    (once per ``cache`` directory and lock); the template agent's."""
    root = cache / f"node-{lock_digest()}"
    modules = root / "agents" / node.LOCK_TEMPLATE_NAME / "node_modules"
    if modules.is_dir():
        return modules
    if root.exists():
        shutil.rmtree(root)
    agent_dir = write_template_project(root)
    shutil.copy(PACKAGE / node.LOCK_FILE, agent_dir / node.LOCK_FILE)
    # the shared package needs its dist/ to be installed as a copy
    shutil.copytree(SHARED_SOURCE / "dist", root / node.SHARED_DIR / "dist")
    run(["npm", "ci"], agent_dir)
    return modules


def regenerate_dist() -> Path:
    (SHARED_SOURCE / "src" / "constants.ts").write_text(node.render_constants())
    with tempfile.TemporaryDirectory() as tmp:
        modules = installed_modules(Path(tmp))
        built = build_shared(Path(tmp) / "build", modules)
        target = SHARED_SOURCE / "dist"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(built, target)
    return target


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "lock":
        print(regenerate_lock())
    elif what == "dist":
        print(regenerate_dist())
    else:
        sys.exit("usage: python -m tests.runtimes.node.support lock|dist")


def write_node_files(spec: Spec, out: Path, swarm_version: str = "0.1.0") -> Path:
    """The node runtime's files of ``spec`` (shared package and every node agent) under
    ``out/<swarm>/``, as the compiler lays them out; returns ``out/<swarm>``."""
    root = out / spec.name
    for path, data in node.RUNTIME.shared_files(spec, swarm_version).items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    for agent in spec.agents:
        if agent.runtime != "node":
            continue
        for path, data in node.RUNTIME.agent_files(spec, agent, swarm_version).items():
            target = root / "agents" / agent.id / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return root


def link_modules(agent_dir: Path, modules: Path) -> None:
    """Give a generated agent the session's installed node_modules (same lock, same tree)."""
    target = agent_dir / "node_modules"
    if target.is_symlink() or target.exists():
        return
    target.symlink_to(modules)
