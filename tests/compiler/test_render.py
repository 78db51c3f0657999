"""The pure renderer: what each generated file contains, escaping, determinism."""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import re
from typing import Any, Callable

import pyflakes.checker
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarm.compiler import compile_loaded
from swarm.compiler.render import render
from swarm.compiler.templating import docker_quote
from swarm.runtimes.python.runtime import DISTRIBUTION
from swarm.errors import CompileError
from swarm.runtimes.node import RUNTIME as NODE
from swarm.spec.loader import LoadedSpec, load_spec_full

from .conftest import REPO, agent_doc

Make = Callable[..., LoadedSpec]

HOSTILE_NAMES = [
    'Quote " and \' and """ triple',
    "new\nline and \r\n crlf and \t tab",
    "back\\slash \\n not a newline \\",
    "ünïcødé — 中文 🐝",
    "{{ jinja }} {% raw %} {# c #}",
    "${HOME} $$ $(whoami) `id`",
    "nul \x00 and bell \x07 and \u2028 separator and \x85 next line",
]


def server_of(files: dict[str, bytes], swarm: str, agent: str) -> str:
    return files[f"{swarm}/agents/{agent}/server.py"].decode("utf-8")


def flakes(source: str, filename: str = "server.py") -> list[str]:
    tree = ast.parse(source, filename)
    checker = pyflakes.checker.Checker(tree, filename=filename)
    return [str(m) for m in checker.messages]


def literal(source: str, name: str) -> Any:
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} not assigned at module level")


def test_example_renders_every_expected_file() -> None:
    files = compile_loaded(load_spec_full(REPO / "specs"))
    agents = ["auditor", "paper-researcher", "reviewer", "summarizer", "web-researcher"]
    expected = {f"research/agents/{a}/{f}" for a in agents for f in ("Dockerfile", "server.py", "requirements.txt")}
    # the architect is a NestJS agent; the node runtime's shared package is emitted once
    node_files = (".npmrc", "Dockerfile", "package-lock.json", "package.json", "tsconfig.json",
                  "src/app.module.ts", "src/config.ts", "src/handler.ts", "src/main.ts")
    expected |= {f"research/agents/architect/{f}" for f in node_files}
    expected |= {f"research/{p}" for p in NODE.shared_files(load_spec_full(REPO / "specs").spec, "0.1.0")}
    expected |= {
        f"research/{f}"
        for f in ("acl.json", "acl.md", "registry.json", "bus.json", "manifest.json", "docker-compose.yml")
    }
    expected.add("research/registry/Dockerfile")
    kubernetes = ["desired", "kustomization", "reconciler", "registry", "router",
                  *(f"agents/{a}" for a in [*agents, "architect"])]
    expected |= {f"research/kubernetes/{f}.yaml" for f in kubernetes}
    assert set(files) == expected


def test_every_generated_server_compiles_and_defines_every_name(make_spec: Make) -> None:
    loaded = make_spec(
        [
            agent_doc("plain", 9001, registry=False),
            agent_doc("leased", 9002),
            agent_doc("worker", 9003, role="worker", publishes=["results.work"], subscribes=["tasks.work"]),
            agent_doc("sender", 9004, role="worker", publishes=["results.work"], registry=False),
            agent_doc("handled", 9005, role="worker", subscribes=["tasks.work"], handler="my_pkg.agents:handle"),
        ]
    )
    files = compile_loaded(loaded)
    example = compile_loaded(load_spec_full(REPO / "specs"))
    servers = {p: d for p, d in {**files, **example}.items() if p.endswith("server.py")}
    python_agents = [a for a in load_spec_full(REPO / "specs").spec.agents if a.runtime == "python"]
    assert len(servers) == 5 + len(python_agents)
    for path, data in servers.items():
        source = data.decode("utf-8")
        compile(source, path, "exec")
        assert flakes(source, path) == [], path


def test_registry_enabled_server_has_the_registry_wiring(make_spec: Make) -> None:
    files = compile_loaded(make_spec([agent_doc("leased", 9002)]))
    source = server_of(files, "demo", "leased")
    assert "from swarm.registry import AgentRegistryClient" in source
    assert "start_heartbeat_loop" in source
    assert "/health/live" in source
    assert "deregister()" in source
    assert 'token=os.environ.get("SWARM_AGENT_TOKEN")' in source
    assert literal(source, "TTL_SECONDS") == 30
    assert literal(source, "HEARTBEAT_INTERVAL") == 10
    assert "httpx>=0.26" in files["demo/agents/leased/requirements.txt"].decode()


def test_registry_disabled_server_has_no_registry_code(make_spec: Make) -> None:
    files = compile_loaded(make_spec([agent_doc("plain", 9001, registry=False)]))
    source = server_of(files, "demo", "plain")
    for word in ("AgentRegistryClient", "swarm.registry", "REGISTRY_URL", "heartbeat", "register", "SWARM_AGENT_TOKEN"):
        assert word.lower() not in source.lower(), word
    assert "/health/live" in source
    assert "httpx" not in files["demo/agents/plain/requirements.txt"].decode()


def test_bus_wiring_only_for_agents_with_topics(make_spec: Make) -> None:
    files = compile_loaded(
        make_spec(
            [
                agent_doc("plain", 9001, registry=False),
                agent_doc("worker", 9003, role="worker", publishes=["results.work"], subscribes=["tasks.work"]),
                agent_doc("sender", 9004, role="worker", publishes=["results.work"]),
            ]
        )
    )
    plain, worker, sender = (server_of(files, "demo", a) for a in ("plain", "worker", "sender"))
    assert "EventBus" not in plain and "REDIS_URL" not in plain
    assert "redis" not in files["demo/agents/plain/requirements.txt"].decode()
    assert "EventBus(redis_url=REDIS_URL, swarm=SWARM, agent_id=AGENT_ID)" in worker  # rights from the plan
    assert "run_bus(bus, SUBSCRIBES, handler, log, connected)" in worker
    assert "from swarm.agent_runtime import AgentState, run_bus, log_received" in worker
    assert "run_bus" not in plain
    assert literal(worker, "SUBSCRIBES") == ["tasks.work"]
    assert literal(sender, "SUBSCRIBES") == [] and literal(sender, "PUBLISHES") == ["results.work"]
    assert "redis>=" in files["demo/agents/sender/requirements.txt"].decode()


def test_handler_is_imported_only_when_declared(make_spec: Make) -> None:
    files = compile_loaded(
        make_spec(
            [
                agent_doc("handled", 9005, role="worker", subscribes=["tasks.work"], handler="my_pkg.agents:handle"),
                agent_doc("default", 9006, role="worker", subscribes=["tasks.work"]),
            ]
        )
    )
    handled, default = server_of(files, "demo", "handled"), server_of(files, "demo", "default")
    assert literal(handled, "HANDLER") == "my_pkg.agents:handle"
    assert "importlib.import_module(module_name)" in handled and "def default_handler" not in handled
    assert literal(default, "HANDLER") is None and "def default_handler" in default and "importlib" not in default
    dockerfile = files["demo/agents/handled/Dockerfile"].decode()
    assert "# The handler my_pkg.agents:handle is user code" in dockerfile
    assert re.findall(r"^COPY --from=.*$", dockerfile, re.M) == ["COPY --from=source my_pkg/ ./my_pkg/"]
    assert "handler" not in files["demo/agents/default/Dockerfile"].decode()


def test_requirements_are_sorted_pinned_and_name_the_compiling_version(make_spec: Make) -> None:
    loaded = make_spec([agent_doc("worker", 9003, role="worker", subscribes=["tasks.work"])])
    files = render(loaded.spec, loaded.digest, swarm_version="9.8.7")
    lines = files["demo/agents/worker/requirements.txt"].decode().splitlines()
    assert lines == sorted(lines)
    assert f"{DISTRIBUTION}==9.8.7" in lines
    assert all(re.match(r"^[a-z-]+(==|>=)[0-9.]+(,<[0-9]+)?$", line) for line in lines), lines
    assert {line.split("=")[0].split(">")[0] for line in lines} == {
        "httpx", "redis", "starlette", DISTRIBUTION, "uvicorn"
    }


def test_handler_requirements_join_the_generated_ones(make_spec: Make) -> None:
    loaded = make_spec([agent_doc("handled", 9003, handler="pkg.mod:fn", requirements=["zeta-sdk>=2", "anthropic"])])
    lines = render(loaded.spec, loaded.digest, swarm_version="9.8.7")["demo/agents/handled/requirements.txt"]
    assert lines.decode().splitlines() == sorted(
        ["anthropic", "httpx>=0.26,<1", "starlette>=0.37,<2", f"{DISTRIBUTION}==9.8.7", "uvicorn>=0.29,<1", "zeta-sdk>=2"]
    )


def test_dockerfile_port_equals_server_port_and_agent_port(make_spec: Make) -> None:
    loaded = make_spec([agent_doc("a", 9101), agent_doc("b", 9202, registry=False)])
    files = compile_loaded(loaded)
    compose = yaml.safe_load(files["demo/docker-compose.yml"])
    for agent_id, port in (("a", 9101), ("b", 9202)):
        dockerfile = files[f"demo/agents/{agent_id}/Dockerfile"].decode()
        assert re.findall(r"^EXPOSE (\d+)$", dockerfile, re.M) == [str(port)]
        cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))  # type: ignore[union-attr]
        assert cmd[cmd.index("--port") + 1] == str(port)
        assert re.search(rf"AGENT_PORT={port}\b", dockerfile)
        assert f"127.0.0.1:{port}/health/live" in dockerfile
        assert compose["services"][agent_id]["environment"]["AGENT_PORT"] == str(port)
        assert f'os.environ.get("AGENT_PORT", {str(port)!r})' in server_of(files, "demo", agent_id)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_are_escaped_for_every_target(make_spec: Make, name: str) -> None:
    loaded = make_spec(
        [agent_doc("evil", 9001, name=name, registry=False), agent_doc("evil2", 9002, name=name)],
        metadata={"name": "demo", "description": name},
    )
    files = compile_loaded(loaded)
    for agent_id in ("evil", "evil2"):
        source = server_of(files, "demo", agent_id)
        compile(source, "server.py", "exec")
        assert flakes(source) == []
        assert literal(source, "AGENT_NAME") == name
        dockerfile = files[f"demo/agents/{agent_id}/Dockerfile"].decode()
        assert name not in dockerfile  # free text stays out of Dockerfiles
        assert 'org.opencontainers.image.title="' + agent_id + '"' in dockerfile
        # every line of the Dockerfile is a comment, an instruction or a continuation
        for line in dockerfile.splitlines():
            assert re.match(r"^(#|[A-Z]+ |\s+\S|$)", line), line
    compose = yaml.safe_load(files["demo/docker-compose.yml"])
    assert compose["services"]["evil"]["labels"]["io.swarm.agent-name"] == name.replace("$", "$$")
    registry = json.loads(files["demo/registry.json"])
    assert registry["agents"]["evil"]["agent_name"] == name


def test_docker_quote_escapes_everything_docker_interprets() -> None:
    assert docker_quote('a"b') == '"a\\"b"'
    assert docker_quote("a\\b") == '"a\\\\b"'
    assert docker_quote("$HOME") == '"\\$HOME"'
    assert "\n" not in docker_quote("a\nb") and docker_quote("a\nb") == '"a\\\\nb"'
    assert docker_quote("ünï") == '"ünï"'


def test_agent_ids_that_would_escape_are_refused_before_rendering(make_spec: Make) -> None:
    loaded = make_spec([agent_doc("fine", 9001)])
    bad_agent = loaded.spec.agents[0].model_copy(update={"id": "../evil"})
    bad = loaded.spec.model_copy(update={"agents": [bad_agent]})
    with pytest.raises(CompileError, match="not a valid"):
        render(bad, loaded.digest, swarm_version="0.1.0")


@pytest.mark.parametrize("agent_id", ["redis", "registry", "swarm-bus-apply", "swarm-catalog-push"])
def test_agent_ids_colliding_with_compose_services_are_refused(make_spec: Make, agent_id: str) -> None:
    loaded = make_spec([agent_doc(agent_id, 9001)])
    with pytest.raises(CompileError, match="collides"):
        compile_loaded(loaded)


def test_render_is_deterministic_and_independent_of_agent_order(make_spec: Make) -> None:
    agents = [agent_doc(f"a{i}", 9000 + i, capabilities=[f"c{i % 3}", "x"]) for i in range(6)]
    loaded = make_spec(agents)
    first = render(loaded.spec, loaded.digest, swarm_version="0.1.0")
    reordered = loaded.spec.model_copy(update={"agents": list(reversed(loaded.spec.agents))})
    assert render(reordered, loaded.digest, swarm_version="0.1.0") == first
    assert render(loaded.spec, loaded.digest, swarm_version="0.1.0") == first
    assert list(first) == sorted(first)


def test_manifest_lists_every_other_file_with_its_sha256(make_spec: Make) -> None:
    loaded = make_spec([agent_doc("a", 9001)])
    files = compile_loaded(loaded)
    manifest = json.loads(files["demo/manifest.json"])
    assert manifest["spec_digest"] == loaded.digest
    assert manifest["swarm"] == "demo"
    others = {p.removeprefix("demo/"): d for p, d in files.items() if p != "demo/manifest.json"}
    assert manifest["files"] == {p: "sha256:" + hashlib.sha256(d).hexdigest() for p, d in others.items()}
    assert not re.search(r"\d{4}-\d\d-\d\dT", files["demo/manifest.json"].decode())


def test_node_runtime_gets_a_nestjs_app_and_the_shared_package_once(make_spec: Make) -> None:
    files = compile_loaded(make_spec([agent_doc("noder", 9001, runtime="node", registry=False),
                                      agent_doc("other", 9002, runtime="node")]))
    assert "demo/agents/noder/server.py" not in files
    for name in ("package.json", "package-lock.json", "tsconfig.json", "src/main.ts", "src/app.module.ts", "Dockerfile"):
        assert f"demo/agents/noder/{name}" in files, name
    assert "node:20" in files["demo/agents/noder/Dockerfile"].decode()
    shared = [p for p in files if p.startswith("demo/node/agent-runtime/")]
    assert "demo/node/agent-runtime/package.json" in shared
    assert not any("/agents/" in p and "agent-runtime" in p for p in files)  # not copied per agent
    compose = yaml.safe_load(files["demo/docker-compose.yml"].decode().split("\n", 2)[2])
    assert compose["services"]["noder"]["build"] == {"context": ".", "dockerfile": "agents/noder/Dockerfile"}
    assert compose["services"]["noder"]["healthcheck"]["test"][:3] == ["CMD", "node", "-e"]


def test_desired_state_files_are_sorted_json(make_spec: Make) -> None:
    files = compile_loaded(make_spec([agent_doc("a", 9001)]))
    for name in ("acl.json", "registry.json", "bus.json", "manifest.json"):
        raw = files[f"demo/{name}"].decode()
        assert raw.endswith("}\n")
        assert raw == json.dumps(json.loads(raw), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def test_acl_markdown_has_every_role_topic_pair_and_agent(make_spec: Make) -> None:
    files = compile_loaded(make_spec([agent_doc("w", 9001, role="worker", subscribes=["tasks.work"])]))
    md = files["demo/acl.md"].decode()
    acl = json.loads(files["demo/acl.json"])
    for row in acl["table"]:
        assert f"| `{row['role']}` | `{row['topic']}` |" in md
    assert "| `worker` | `tasks.work` | deny | `default deny` | allow | `subscribe: tasks.>` |" in md
    assert "| `w` | `worker` |" in md


_names = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=80)


@pytest.fixture(scope="module")
def base_spec() -> LoadedSpec:
    return load_spec_full(REPO / "specs")


@functools.lru_cache(maxsize=1)
def _rendered_example(digest: str) -> dict[str, bytes]:
    return render(load_spec_full(REPO / "specs").spec, digest, swarm_version="0.1.0")


def _original(loaded: LoadedSpec) -> dict[str, bytes]:
    return _rendered_example(loaded.digest)


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=_names, description=_names)
def test_any_name_round_trips_through_every_target(base_spec: LoadedSpec, name: str, description: str) -> None:
    agents = [
        a.model_copy(update={"name": name, "description": description}) if a.id in ("architect", "auditor") else a
        for a in base_spec.spec.agents
    ]
    spec = base_spec.spec.model_copy(update={"agents": agents})
    files = render(spec, base_spec.digest, swarm_version="0.1.0")
    config = files["research/agents/architect/src/config.ts"].decode()  # a node agent: a JSON literal
    assert json.loads(config.split("COMPILED: CompiledConfig = ", 1)[1].rstrip().rstrip(";"))["agentName"] == name
    source = server_of(files, "research", "auditor")
    assert literal(source, "AGENT_NAME") == name
    assert flakes(source) == []
    for agent_id in ("architect", "auditor"):
        dockerfile = f"research/agents/{agent_id}/Dockerfile"
        assert files[dockerfile] == _original(base_spec)[dockerfile]  # names never reach Dockerfiles
    compose = yaml.safe_load(files["research/docker-compose.yml"])
    assert compose["services"]["architect"]["labels"]["io.swarm.agent-name"] == name.replace("$", "$$")
    assert json.loads(files["research/registry.json"])["agents"]["auditor"]["agent_name"] == name


@pytest.mark.parametrize("max_payload, bound", [(1024 * 1024, 16 * 1024 * 1024), (64 * 1024 * 1024, 129 * 1024 * 1024)])
def test_compose_redis_bounds_one_entry_by_the_bus_payload_limit(make_spec: Make, max_payload: int, bound: int) -> None:
    """Redis has no per-user quota: the Compose Redis refuses any one bulk string larger than the
    bus could ever need (an agent's 512 MiB XADD into its own outbox is refused by Redis itself)."""
    loaded = make_spec([agent_doc("w", 9001)], bus={"redis_url": "redis://127.0.0.1:6379/0", "max_payload_bytes": max_payload})
    files = render(loaded.spec, loaded.digest, swarm_version="0.1.0")
    command = yaml.safe_load(files["demo/docker-compose.yml"])["services"]["redis"]["command"]
    assert command[command.index("--proto-max-bulk-len") + 1] == str(bound)
    assert bound >= 2 * max_payload
