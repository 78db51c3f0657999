"""An agent's ``handler: module:function`` code really ends up in its image.

No docker daemon here, so the image's file system is emulated from the generated
Dockerfile itself: every ``COPY`` is replayed into a temporary ``/app`` (plain
COPY from the agent's build context, ``COPY --from=source`` from the user's
source directory, which docker-compose.yml passes as the ``source`` build
context), then the Dockerfile's own ``CMD`` is run there, like ``WORKDIR /app``.
The handler module records its import, so the test sees the generated server
load the user's code; without the handler's COPY the same server fails to start.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Callable

import httpx
import pytest
import yaml

from swarm.compiler import compile_loaded, write_output
from swarm.runtimes import SOURCE_CONTEXT, SOURCE_DIR
from swarm.spec.loader import LoadedSpec
from tests.support.services import ProcessServer, free_port

from .conftest import agent_doc

HANDLER_CODE = """\
import os
from pathlib import Path

Path(os.environ["HANDLER_MARKER"]).write_text(__name__)


def handle(message, publish):
    pass
"""


def instructions(dockerfile: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
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


def emulate_image(dockerfile: Path, source: Path, app: Path, *, skip_source: bool = False) -> list[str]:
    """Replay the COPY instructions into ``app``; return the CMD."""
    app.mkdir(parents=True)
    cmd: list[str] = []
    for instruction in instructions(dockerfile.read_text()):
        word, _, rest = instruction.partition(" ")
        if word == "WORKDIR":
            assert rest == "/app"
        elif word == "COPY":
            args = rest.split()
            base = dockerfile.parent
            if args[0].startswith("--from="):
                assert args[0] == f"--from={SOURCE_CONTEXT}"
                if skip_source:
                    continue
                base, args = source, args[1:]
            assert len(args) == 2, instruction
            src, dest = base / args[0], app / args[1]
            if src.is_dir():
                shutil.copytree(src, dest, dirs_exist_ok=True)  # COPY dir/ copies the contents
            else:
                target = dest / src.name if args[1].endswith("/") or args[1] == "." else dest
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, target)
        elif word == "CMD":
            cmd = json.loads(rest)
    return cmd


@pytest.fixture
def compiled(tmp_path: Path, make_spec: Callable[..., LoadedSpec]) -> Path:
    loaded = make_spec(
        [
            agent_doc("packaged", 9301, registry=False, handler="userpkg.handlers:handle"),
            agent_doc("single", 9302, registry=False, handler="usermod:handle"),
            agent_doc("plain", 9303, registry=False),
        ]
    )
    write_output(compile_loaded(loaded), tmp_path / "out", "demo")
    source = tmp_path / "repo"
    (source / "userpkg").mkdir(parents=True)
    (source / "userpkg" / "__init__.py").write_text("")
    (source / "userpkg" / "handlers.py").write_text(HANDLER_CODE)
    (source / "usermod.py").write_text(HANDLER_CODE)
    (source / "unrelated.txt").write_text("not copied")
    return tmp_path / "out" / "demo"


def run_image(app: Path, cmd: list[str], marker: Path, log: Path) -> ProcessServer:
    port = free_port()
    assert cmd[:2] == ["uvicorn", "server:app"]
    args = [str(Path(sys.executable).parent / "uvicorn"), *cmd[1:]]
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    return ProcessServer(
        args, port=port, cwd=app, env={"HANDLER_MARKER": str(marker), "PYTHONPATH": ""}, log=log
    ).start()


@pytest.mark.parametrize(("agent_id", "module", "copied"), [
    ("packaged", "userpkg.handlers", "userpkg/handlers.py"),
    ("single", "usermod", "usermod.py"),
])
def test_the_image_holds_the_handler_and_the_server_imports_it(
    compiled: Path, tmp_path: Path, agent_id: str, module: str, copied: str
) -> None:
    app = tmp_path / "app"
    cmd = emulate_image(compiled / "agents" / agent_id / "Dockerfile", tmp_path / "repo", app)
    assert sorted(p.relative_to(app).as_posix() for p in app.rglob("*") if p.is_file()) == sorted(
        ["requirements.txt", "server.py", copied] + (["userpkg/__init__.py"] if "/" in copied else [])
    )
    marker = tmp_path / "imported"
    server = run_image(app, cmd, marker, tmp_path / "agent.log")
    try:
        assert httpx.get(server.url + "/health/ready", timeout=5).status_code == 200
    finally:
        server.stop()
    assert marker.read_text() == module


def test_without_the_handler_copy_the_server_fails_to_start(compiled: Path, tmp_path: Path) -> None:
    app = tmp_path / "app"
    cmd = emulate_image(compiled / "agents" / "packaged" / "Dockerfile", tmp_path / "repo", app, skip_source=True)
    with pytest.raises(RuntimeError, match="No module named 'userpkg'"):
        run_image(app, cmd, tmp_path / "imported", tmp_path / "agent.log")


def test_compose_passes_the_source_context_only_to_agents_with_a_handler(compiled: Path) -> None:
    services = yaml.safe_load((compiled / "docker-compose.yml").read_text())["services"]
    for agent_id in ("packaged", "single"):
        assert services[agent_id]["build"] == {
            "context": f"./agents/{agent_id}",
            "additional_contexts": {SOURCE_CONTEXT: SOURCE_DIR},
        }
    assert services["plain"]["build"] == {"context": "./agents/plain"}
    assert "COPY --from" not in (compiled / "agents" / "plain" / "Dockerfile").read_text()
    assert "SWARM_SOURCE_DIR" in (compiled / "docker-compose.yml").read_text()
