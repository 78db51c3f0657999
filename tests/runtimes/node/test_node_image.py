"""The node Dockerfile's steps really build and run an agent (slow: a real ``npm ci``).

No container engine is used here (the container tests build real images): the
Dockerfile is replayed on this machine. Every stage gets a directory standing for its
file system; COPY copies from the build context (``compiled/<swarm>/``), from the
``source`` context (the directory holding ``compiled/``) or from an earlier stage, RUN
runs in the stage's WORKDIR, and the last stage's CMD is started there with the image's
ENV. So a wrong path in a COPY, a build that needs a file the context lacks, or a
runtime stage missing a production dependency fails here.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from swarm.compiler import compile_loaded, write_output
from tests.support.services import ProcessServer, free_port

from .support import npm_env
from .test_node_runtime import handler_swarm

pytestmark = pytest.mark.slow


def instructions(dockerfile: str) -> list[str]:
    out: list[str] = []
    pending = ""
    for line in dockerfile.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    return out


def copy(src: Path, dst: str, into: Path, workdir: str) -> None:
    target = into / (dst if dst.startswith("/") else f"{workdir}/{dst}").lstrip("/")
    if src.is_dir():
        shutil.copytree(src, target, dirs_exist_ok=True, symlinks=True)
    else:
        if dst.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
            target = target / src.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def replay(dockerfile: Path, context: Path, source: Path, root: Path) -> tuple[Path, str, dict[str, str], list[str]]:
    """Run the Dockerfile's stages under ``root``; (last stage dir, its workdir, ENV, CMD)."""
    stages: dict[str, Path] = {}
    stage, workdir, env, cmd = root, "/", dict[str, str](), [""]
    for index, line in enumerate(instructions(dockerfile.read_text())):
        word, _, rest = line.partition(" ")
        if word == "FROM":
            name = rest.split(" AS ")[1].strip() if " AS " in rest else f"stage{index}"
            stage = stages[name] = root / name
            stage.mkdir(parents=True)
            workdir, env = "/", {}
        elif word == "WORKDIR":
            workdir = rest.strip()
            (stage / workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
        elif word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
        elif word == "COPY":
            parts = rest.split()
            base = context
            if parts[0].startswith("--from="):
                origin = parts.pop(0).split("=", 1)[1]
                base = source if origin == "source" else stages[origin]
            *sources, dst = parts
            for src in sources:
                copy(base / src.lstrip("/"), dst, stage, workdir)
        elif word == "RUN":
            # the stage's paths as this machine's: /build/... -> <stage>/build/...
            command = rest.replace(" /build/", f" {stage}/build/")
            result = subprocess.run(command, shell=True, cwd=stage / workdir.lstrip("/"), env={**npm_env(), **env},
                                    capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, f"RUN {rest}\n{result.stdout}\n{result.stderr}"
        elif word == "CMD":
            cmd = json.loads(rest)
    return stage, workdir, env, cmd


def test_the_node_dockerfile_builds_a_runnable_agent_with_production_dependencies_only(tmp_path: Path) -> None:
    source = tmp_path / "repo"
    files = compile_loaded(handler_swarm(source))
    write_output(files, source / "compiled", "demo")
    context = source / "compiled" / "demo"
    dockerfile = context / "agents" / "echo" / "Dockerfile"  # registry: false, a .js handler at the top level
    image, workdir, env, cmd = replay(dockerfile, context, source, tmp_path / "image")
    app = image / workdir.lstrip("/")
    assert sorted(p.name for p in app.iterdir()) == ["dist", "node_modules", "package.json"]
    assert not (app / "node_modules" / "typescript").exists()  # dev dependencies pruned
    assert (app / "node_modules" / "@swarm-gitops" / "agent-runtime" / "dist" / "index.js").is_file()
    assert (app / "dist" / "user" / "echo.js").is_file()  # the handler, from the source context
    assert cmd == ["node", "dist/main.js"]
    port = free_port()
    server = ProcessServer(cmd, port=port, cwd=app, log=tmp_path / "agent.log",
                           env={**env, "AGENT_PORT": str(port), "SWARM_LISTEN_HOST": "127.0.0.1",
                                "REDIS_URL": "redis://127.0.0.1:1/0", "PATH": os.environ["PATH"]}).start()
    try:
        health = httpx.get(server.url + "/health", timeout=5).json()
        assert health["agent_id"] == env["AGENT_ID"] == "echo" and health["runtime"] == "node"
        assert httpx.get(server.url + "/health/ready", timeout=5).json()["waiting_for"] == ["bus"]
    finally:
        assert server.stop() == 0
