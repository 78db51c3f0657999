"""The kubernetes target: a kustomize base that validates (kubernetes-validate, strict) against
the oldest and newest Kubernetes versions the validator ships, for the example swarm and for a
spec with hostile-but-valid values; Secrets only by name; the security context, the labels, the
NetworkPolicy and the command lines (parsed by swarm's own CLI parser) held to their contract."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

from swarm.bus.apply import bus_password
from swarm.cli import build_parser, main
from swarm.compiler import compile_loaded
from swarm.compiler.targets.kubernetes import _dump, desired_config_maps, label_value, object_name
from swarm.errors import CompileError
from swarm.registry.auth import agent_token
from swarm.secrets_k8s import secret_manifests
from swarm.spec.loader import LoadedSpec, load_spec_full

from .conftest import REPO, agent_doc

Make = Callable[..., LoadedSpec]
KUBE = "kubernetes/"
LABELS = {f"app.kubernetes.io/{k}" for k in ("name", "instance", "component", "part-of", "managed-by", "version")}
SELECTOR_LABELS = LABELS - {"app.kubernetes.io/managed-by", "app.kubernetes.io/version"}


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


VERSIONS = sorted(set(all_versions()), key=_version_key)
#: The oldest and the newest Kubernetes the validator has schemas for.
OLDEST_AND_NEWEST = [VERSIONS[0], VERSIONS[-1]]


def kube_files(files: dict[str, bytes], swarm: str) -> dict[str, bytes]:
    prefix = f"{swarm}/{KUBE}"
    return {p[len(prefix):]: d for p, d in files.items() if p.startswith(prefix)}


def objects_of(files: dict[str, bytes], swarm: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path, data in sorted(kube_files(files, swarm).items()):
        if path != "kustomization.yaml":
            out.extend(d for d in yaml.safe_load_all(data) if d is not None)
    return out


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for d in of_kind(objects, "Deployment"):
        yield d["metadata"]["name"], d["spec"]["template"]["spec"]


def hostile_spec(make_spec: Make) -> LoadedSpec:
    """Valid values that stress escaping and naming: a swarm name starting with a digit, ids at the
    63-character limit, `$(VAR)` in URLs, SemVer build metadata, quotes and newlines in names."""
    long_id = "a" * 60 + "-zz"
    return make_spec(
        [
            agent_doc(long_id, 9001, name='He said "hi"\n$(HOME) \\ # not: a comment', version="1.0.0-rc.1+build.5",
                      role="worker", publishes=["results.work"], subscribes=["tasks.work"]),
            agent_doc("a" * 60 + "-zy", 9002, registry=False, role="worker", subscribes=["tasks.work"],
                      resources={"requests": {"cpu": "1.5", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}),
            agent_doc("0lead", 65535, name="ünïcødé ☃ 😀 \u2028", metadata={"x": "$(SWARM_REDIS_PASSWORD)"}),
        ],
        name="9" + "s" * 62,
        bus={"redis_url": "rediss://redis.example.com:6380/3?ssl_cert_reqs=$(HOME)"},
        images={"repository": "registry.example.com:5000/team"},
        compile={"targets": ["kubernetes"]},
        deploy={
            "registry": {"replicas": 3},
            "router": {"replicas": 1, "resources": {"requests": {"cpu": "10m"}, "limits": {}}},
            "reconciler": {"git": {"repository": "https://git.example.com/team/swarm.git", "ref": "release/v1",
                                   "spec_path": "deploy/specs", "period_seconds": 15}},
            "redis": {"cidrs": ["10.0.3.0/24"], "pod_labels": {"app.kubernetes.io/name": "redis"},
                      "namespace_labels": {"kubernetes.io/metadata.name": "data"}},
        },
    )


@pytest.fixture(scope="module")
def example() -> dict[str, bytes]:
    return compile_loaded(load_spec_full(REPO / "specs"))


@pytest.fixture
def hostile(make_spec: Make) -> tuple[LoadedSpec, dict[str, bytes]]:
    loaded = hostile_spec(make_spec)
    return loaded, compile_loaded(loaded)


def _validate_all(objects: list[dict[str, Any]]) -> None:
    for version in OLDEST_AND_NEWEST:
        for obj in objects:
            kubernetes_validate.validate(obj, version, strict=True)


def test_the_validator_is_strict_and_knows_several_versions() -> None:
    assert len(VERSIONS) >= 2 and _version_key(VERSIONS[0]) < _version_key(VERSIONS[-1])
    bad = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "x"}, "automountServiceAcountToken": False}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[-1], strict=True)


def test_every_example_manifest_validates_on_the_oldest_and_newest_kubernetes(example: dict[str, bytes]) -> None:
    objects = objects_of(example, "research")
    assert len(of_kind(objects, "Deployment")) == 6 + 3
    _validate_all(objects)


def test_every_committed_kubernetes_base_validates() -> None:
    """Every swarm compiled in the repository with the kubernetes target, as committed."""
    bases = sorted((REPO / "compiled").glob("*/kubernetes"))
    assert bases, "the example compiles with the kubernetes target"
    for base in bases:
        objects = [d for p in sorted(base.rglob("*.yaml")) if p.name != "kustomization.yaml"
                   for d in yaml.safe_load_all(p.read_text("utf-8")) if d]
        assert objects, base
        _validate_all(objects)


def test_every_hostile_manifest_validates_and_every_name_is_a_dns_label(hostile: tuple[LoadedSpec, dict[str, bytes]]) -> None:
    loaded, files = hostile
    objects = objects_of(files, loaded.spec.name)
    _validate_all(objects)
    for obj in objects:
        name = obj["metadata"]["name"]
        assert len(name) <= 63 and name[0].isalpha(), name
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names)), "two objects of one kind share a name"


def test_secret_manifests_validate_too(hostile: tuple[LoadedSpec, dict[str, bytes]]) -> None:
    loaded, _ = hostile
    secrets = secret_manifests(loaded.spec, swarm_version="0.1.0", registry_secret="s" * 64,
                               redis_password="p@ss:/word", bus_secret="b", admin_token="t", namespace="team-a")
    _validate_all(secrets)


def test_the_kustomization_lists_exactly_the_files_of_the_directory(example: dict[str, bytes],
                                                                   hostile: tuple[LoadedSpec, dict[str, bytes]]) -> None:
    for swarm, files in (("research", example), (hostile[0].spec.name, hostile[1])):
        kube = kube_files(files, swarm)
        kustomization = yaml.safe_load(kube["kustomization.yaml"])
        assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and kustomization["kind"] == "Kustomization"
        assert kustomization["resources"] == sorted(set(kube) - {"kustomization.yaml"})
    on_disk = REPO / "compiled" / "research" / "kubernetes"
    listed = yaml.safe_load((on_disk / "kustomization.yaml").read_text())["resources"]
    assert sorted(p.relative_to(on_disk).as_posix() for p in on_disk.rglob("*.yaml") if p.name != "kustomization.yaml") == listed


def test_no_secret_is_written_and_every_reference_is_one_swarm_secrets_k8s_prints(hostile: tuple[LoadedSpec, dict[str, bytes]],
                                                                                 example: dict[str, bytes]) -> None:
    loaded, files = hostile
    for swarm, all_files in ((loaded.spec.name, files), ("research", example)):
        objects = objects_of(all_files, swarm)
        assert of_kind(objects, "Secret") == []
        assert all("data" not in o and "stringData" not in o for o in objects if o["kind"] != "ConfigMap")
    printed = secret_manifests(loaded.spec, swarm_version="0.1.0", registry_secret="k", redis_password="p")
    provided = {(s["metadata"]["name"], key) for s in printed for key in s["data"]}
    referenced: set[tuple[str, str]] = set()
    for _, pod in pod_specs(objects_of(files, loaded.spec.name)):
        for container in pod["containers"] + pod.get("initContainers", []):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref is not None and not ref.get("optional"):
                    referenced.add((ref["name"], ref["key"]))
    assert referenced and referenced <= provided


def test_every_deployment_runs_unprivileged_with_a_writable_tmp_only(example: dict[str, bytes],
                                                                     hostile: tuple[LoadedSpec, dict[str, bytes]]) -> None:
    for swarm, files in (("research", example), (hostile[0].spec.name, hostile[1])):
        objects = objects_of(files, swarm)
        service_accounts = {o["metadata"]["name"]: o for o in of_kind(objects, "ServiceAccount")}
        for name, pod in pod_specs(objects):
            assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001, name
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False, name
            assert service_accounts[pod["serviceAccountName"]]["automountServiceAccountToken"] is False
            assert {"name": "tmp", "emptyDir": {}} in pod["volumes"], name
            for c in pod["containers"] + pod.get("initContainers", []):
                sc = c["securityContext"]
                assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001, (name, c["name"])
                assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, (name, c["name"])
                assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
                assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"], (name, c["name"])
                assert c["resources"].get("requests"), (name, c["name"])


def test_labels_everywhere_and_selectors_stable(hostile: tuple[LoadedSpec, dict[str, bytes]]) -> None:
    loaded, files = hostile
    objects = objects_of(files, loaded.spec.name)
    for obj in objects:
        assert set(obj["metadata"]["labels"]) == LABELS, (obj["kind"], obj["metadata"]["name"])
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == loaded.spec.name
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "swarm"
    pods = {}
    for d in of_kind(objects, "Deployment"):
        selector = d["spec"]["selector"]["matchLabels"]
        assert set(selector) == SELECTOR_LABELS  # never the version: an upgrade keeps the selector
        template = d["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= template.items() and set(template) == LABELS
        pods[d["metadata"]["name"]] = template
    for svc in of_kind(objects, "Service") + of_kind(objects, "PodDisruptionBudget"):
        selector = svc["spec"]["selector"] if svc["kind"] == "Service" else svc["spec"]["selector"]["matchLabels"]
        matched = [n for n, labels in pods.items() if selector.items() <= labels.items()]
        assert matched == [svc["metadata"]["name"]], svc["metadata"]["name"]
    # SemVer build metadata ('+') cannot be a label value
    versions = {o["metadata"]["labels"]["app.kubernetes.io/version"] for o in objects}
    assert "1.0.0-rc.1_build.5" in versions


def test_network_policy_lets_in_the_prober_only_and_out_to_dns_redis_and_the_registry(
    example: dict[str, bytes], hostile: tuple[LoadedSpec, dict[str, bytes]]
) -> None:
    loaded, files = hostile
    for spec, all_files in ((load_spec_full(REPO / "specs").spec, example), (loaded.spec, files)):
        objects = objects_of(all_files, spec.name)
        registry = next(d for d in of_kind(objects, "Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"] == "registry")
        registry_pod = registry["spec"]["template"]["metadata"]["labels"]
        deployments = {d["metadata"]["name"]: d for d in of_kind(objects, "Deployment")}
        policies = of_kind(objects, "NetworkPolicy")
        assert len(policies) == len(spec.agents)
        for policy in policies:
            agent = next(a for a in spec.agents if object_name(spec.name, a.id) == policy["metadata"]["name"])
            body = policy["spec"]
            assert body["policyTypes"] == ["Ingress", "Egress"]
            assert body["podSelector"]["matchLabels"] == deployments[policy["metadata"]["name"]]["spec"]["selector"]["matchLabels"]
            (ingress,) = body["ingress"]
            (peer,) = ingress["from"]
            assert set(peer) == {"podSelector"} and peer["podSelector"]["matchLabels"].items() <= registry_pod.items()
            assert ingress["ports"] == [{"port": agent.port, "protocol": "TCP"}]
            rules = body["egress"]
            dns = rules[0]
            assert sorted((p["port"], p["protocol"]) for p in dns["ports"]) == [(53, "TCP"), (53, "UDP")]
            assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
            ports = [[(p["port"], p["protocol"]) for p in r["ports"]] for r in rules[1:]]
            bus = bool(agent.publishes or agent.subscribes)
            redis_port = 6380 if spec is loaded.spec else 6379
            expected = ([[(redis_port, "TCP")]] if bus else []) + ([[(8700, "TCP")]] if agent.registry else [])
            assert ports == expected, agent.id
            if agent.registry:
                (to_registry,) = rules[-1]["to"]
                assert to_registry["podSelector"]["matchLabels"].items() <= registry_pod.items()
            if bus and spec is loaded.spec:
                assert rules[1]["to"] == [
                    {"ipBlock": {"cidr": "10.0.3.0/24"}},
                    {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "redis"}},
                     "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "data"}}},
                ]
            if bus and spec is not loaded.spec:  # redis://127.0.0.1: the address as a /32 block
                assert rules[1]["to"] == [{"ipBlock": {"cidr": "127.0.0.1/32"}}]


def _command(objects: list[dict[str, Any]], component: str) -> tuple[dict[str, Any], list[str]]:
    (deployment,) = [d for d in of_kind(objects, "Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"] == component]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return deployment, container["command"]


def test_command_lines_parse_with_the_real_cli_and_replicas_come_from_the_spec(hostile: tuple[LoadedSpec, dict[str, bytes]],
                                                                             example: dict[str, bytes]) -> None:
    loaded, files = hostile
    parser = build_parser()
    objects = objects_of(files, loaded.spec.name)
    registry, command = _command(objects, "registry")
    assert command[0] == "swarm" and registry["spec"]["replicas"] == 3
    args = parser.parse_args(command[1:])
    assert args.route is False and args.swarm == loaded.spec.name and args.port == 8700 and args.host == "0.0.0.0"
    # a literal '$' is doubled so that Kubernetes' $(VAR) expansion leaves it alone
    assert args.redis_url == "rediss://redis.example.com:6380/3?ssl_cert_reqs=$$(HOME)"
    router, command = _command(objects, "router")
    assert router["spec"]["replicas"] == 1
    args = parser.parse_args(command[1:])
    assert args.swarm == loaded.spec.name and args.redis_url.startswith("rediss://redis.example.com:6380/3")
    reconciler, command = _command(objects, "reconciler")
    assert reconciler["spec"]["replicas"] == 1
    args = parser.parse_args(command[1:])
    assert args.watch is True and args.compiled_dir == "" and args.spec == ["/git/current/deploy/specs"]
    registry_service = object_name(loaded.spec.name, "registry")
    assert args.registry_url == f"http://{registry_service}:8700"
    (service,) = [s for s in of_kind(objects, "Service") if s["metadata"]["name"] == registry_service]
    # the registry turns ready once it has a catalog, which the reconciler pushes through this Service
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert registry["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    pod = reconciler["spec"]["template"]["spec"]
    sync_env = {e["name"]: e.get("value") for e in pod["containers"][1]["env"]}
    assert sync_env["GITSYNC_REPO"] == "https://git.example.com/team/swarm.git" and sync_env["GITSYNC_REF"] == "release/v1"
    assert sync_env["GITSYNC_PERIOD"] == "15s" and sync_env["GITSYNC_LINK"] == "current"
    assert [c["name"] for c in pod["initContainers"]] == ["git-sync-init"]
    # the example's defaults: 2 replicas each for the registry and the router
    example_objects = objects_of(example, "research")
    assert _command(example_objects, "registry")[0]["spec"]["replicas"] == 2
    assert _command(example_objects, "router")[0]["spec"]["replicas"] == 2
    assert len(of_kind(example_objects, "PodDisruptionBudget")) == 3


def test_agent_env_resources_image_and_probes(hostile: tuple[LoadedSpec, dict[str, bytes]]) -> None:
    loaded, files = hostile
    spec = loaded.spec
    deployments = {d["metadata"]["name"]: d for d in of_kind(objects_of(files, spec.name), "Deployment")}
    for agent in spec.agents:
        deployment = deployments[object_name(spec.name, agent.id)]
        assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
        assert deployment["metadata"]["annotations"]["swarm/agent-name"] == agent.display_name
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"] == f"registry.example.com:5000/team/{spec.name}-{agent.id}:{agent.version.replace('+', '_')}"
        env = {e["name"]: e for e in container["env"]}
        assert env["AGENT_ID"]["value"] == agent.id and env["AGENT_PORT"]["value"] == str(agent.port)
        assert env["AGENT_HOST"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
        names = [e["name"] for e in container["env"]]
        if agent.publishes or agent.subscribes:
            user = f"swarm.{spec.name}.{agent.id}"
            assert env["REDIS_URL"]["value"] == f"rediss://{user}:$(SWARM_BUS_PASSWORD)@redis.example.com:6380/3?ssl_cert_reqs=$$(HOME)"
            assert names.index("SWARM_BUS_PASSWORD") < names.index("REDIS_URL")  # $(VAR) needs it defined first
        else:
            assert "REDIS_URL" not in env and "SWARM_BUS_PASSWORD" not in env
        assert ("SWARM_AGENT_TOKEN" in env) == agent.registry == ("REGISTRY_URL" in env)
        assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        assert container["startupProbe"]["httpGet"]["path"] == "/health/live"
        assert container["ports"] == [{"name": "http", "containerPort": agent.port, "protocol": "TCP"}]
        if agent.resources is not None:
            assert container["resources"] == {"requests": {"cpu": "1.5", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}
        else:
            assert container["resources"] == {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}


def _reassembled(config_maps: list[dict[str, Any]]) -> dict[str, str]:
    """The desired files as a pod projecting every ConfigMap would see them (parts concatenated)."""
    keys = {k: v for cm in config_maps for k, v in cm["data"].items()}
    files: dict[str, str] = {}
    for key in sorted(keys):
        files[key.split(".part-")[0]] = files.get(key.split(".part-")[0], "") + keys[key]
    return files


def test_the_config_map_holds_the_desired_state(example: dict[str, bytes], hostile: tuple[LoadedSpec, dict[str, bytes]]) -> None:
    (config,) = of_kind(objects_of(example, "research"), "ConfigMap")
    assert config["metadata"]["name"] == "research-desired"
    assert sorted(config["data"]) == ["acl.json", "bus.json", "registry.json"]
    for name, text in config["data"].items():
        assert text.encode() == example[f"research/{name}"], name
    # readable in a review diff: a literal block, one JSON line per YAML line
    assert "  acl.json: |2\n    {\n" in kube_files(example, "research")["desired.yaml"].decode()
    loaded, files = hostile  # non-ASCII names: a quoted scalar that reads back the same
    swarm = loaded.spec.name
    assert _reassembled(of_kind(objects_of(files, swarm), "ConfigMap")) == {
        n: files[f"{swarm}/{n}"].decode() for n in ("acl.json", "bus.json", "registry.json")}


def test_a_large_desired_state_is_split_over_config_maps_under_the_budget(hostile: tuple[LoadedSpec, dict[str, bytes]]) -> None:
    loaded, files = hostile
    swarm = loaded.spec.name
    desired = {n: files[f"{swarm}/{n}"] for n in ("acl.json", "bus.json", "registry.json")}
    budget = 700
    maps = desired_config_maps(loaded.spec, "0.1.0", desired, budget=budget)
    assert len(maps) > 3
    assert all(sum(len(v.encode()) for v in cm["data"].values()) <= budget for cm in maps)
    assert [cm["metadata"]["name"] for cm in maps] == [object_name(swarm, "desired", str(i)) for i in range(len(maps))]
    assert any(".part-001" in k for cm in maps for k in cm["data"])
    assert _reassembled(maps) == {n: d.decode() for n, d in desired.items()}
    text = _dump(maps, "0.1.0")
    assert _reassembled([d for d in yaml.safe_load_all(text) if d]) == {n: d.decode() for n, d in desired.items()}
    _validate_all(maps)


def test_rendering_is_deterministic_and_a_one_agent_change_touches_its_file(make_spec: Make) -> None:
    agents = [agent_doc("a1", 9001), agent_doc("a2", 9002)]
    first = compile_loaded(make_spec(agents, compile={"targets": ["kubernetes"]}))
    again = compile_loaded(make_spec(agents, compile={"targets": ["kubernetes"]}))
    assert first == again
    changed = compile_loaded(make_spec([agent_doc("a1", 9001), agent_doc("a2", 9003)], compile={"targets": ["kubernetes"]}))
    diff = sorted(p for p in set(first) | set(changed) if first.get(p) != changed.get(p) and p.startswith("demo/kubernetes/"))
    assert diff == ["demo/kubernetes/agents/a2.yaml", "demo/kubernetes/desired.yaml"]
    assert "demo/docker-compose.yml" not in first and "demo/registry/Dockerfile" in first


def test_an_environment_base_runs_its_reconciler_with_the_same_overlay() -> None:
    loaded = load_spec_full(REPO / "specs", environment="staging")
    files = compile_loaded(loaded)
    objects = objects_of(files, "research.staging")
    _validate_all(objects)
    _, command = _command(objects, "reconciler")
    args = build_parser().parse_args(command[1:])
    assert args.env == "staging"
    _, base_command = _command(objects_of(compile_loaded(load_spec_full(REPO / "specs")), "research"), "reconciler")
    assert "--env" not in base_command


def test_names_are_dns_labels() -> None:
    assert object_name("research", "architect") == "research-architect"
    assert object_name("9lives", "x") == "s9lives-x"
    long = object_name("s" * 63, "a" * 63)
    assert len(long) == 63 and long != object_name("s" * 63, "a" * 62 + "b")
    assert label_value("1.0.0+build.5") == "1.0.0_build.5"
    assert label_value("1." + "x" * 70) == "1." + "x" * 61


@pytest.mark.parametrize("agent_id", ["router", "reconciler", "swarm", "desired", "git"])
def test_an_agent_id_taking_a_swarm_object_name_is_refused(make_spec: Make, agent_id: str) -> None:
    with pytest.raises(CompileError, match=f"{agent_id}.*rename the agent"):
        compile_loaded(make_spec([agent_doc(agent_id, 9001)], compile={"targets": ["kubernetes"]}))


def test_a_unix_socket_redis_is_refused_for_kubernetes(make_spec: Make) -> None:
    with pytest.raises(CompileError, match="redis:// or rediss://"):
        compile_loaded(make_spec([agent_doc("a1", 9001)], bus={"redis_url": "unix:///run/redis.sock"},
                                 compile={"targets": ["kubernetes"]}))


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_builds_the_committed_base() -> None:
    base = REPO / "compiled" / "research" / "kubernetes"
    result = subprocess.run(["kubectl", "kustomize", str(base)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    built = [d for d in yaml.safe_load_all(result.stdout) if d]
    expected = objects_of({f"research/kubernetes/{p.relative_to(base).as_posix()}": p.read_bytes()
                           for p in base.rglob("*.yaml")}, "research")
    assert sorted((o["kind"], o["metadata"]["name"]) for o in built) == sorted((o["kind"], o["metadata"]["name"]) for o in expected)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_reads_hostile_values_as_swarm_wrote_them(hostile: tuple[LoadedSpec, dict[str, bytes]],
                                                                    tmp_path: Path) -> None:
    """Go's YAML parser (kustomize's) reads the hand-written ConfigMap scalars and the escaped
    names exactly as PyYAML does."""
    loaded, files = hostile
    base = tmp_path / "base"
    for path, data in kube_files(files, loaded.spec.name).items():
        (base / path).parent.mkdir(parents=True, exist_ok=True)
        (base / path).write_bytes(data)
    result = subprocess.run(["kubectl", "kustomize", str(base)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    built = sorted((d for d in yaml.safe_load_all(result.stdout) if d), key=key)
    assert built == sorted(objects_of(files, loaded.spec.name), key=key)


def test_swarm_secrets_k8s_prints_the_derived_values(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWARM_REGISTRY_SECRET", "reg-secret")
    monkeypatch.setenv("SWARM_REDIS_PASSWORD", "redis-pw")
    monkeypatch.setenv("SWARM_BUS_SECRET", "bus-secret")
    monkeypatch.delenv("SWARM_ADMIN_TOKEN", raising=False)
    assert main(["secrets", "k8s", str(REPO / "specs"), "--namespace", "team"]) == 0
    out = capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # printed, never written
    docs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(out) if d}
    values = {name: {k: base64.b64decode(v).decode() for k, v in d["data"].items()} for name, d in docs.items()}
    assert all(d["metadata"]["namespace"] == "team" and d["kind"] == "Secret" for d in docs.values())
    assert values["research-swarm"] == {"SWARM_REGISTRY_SECRET": "reg-secret", "SWARM_REDIS_PASSWORD": "redis-pw",
                                        "SWARM_BUS_SECRET": "bus-secret"}
    spec = load_spec_full(REPO / "specs").spec
    for agent in spec.agents:
        got = values[f"research-{agent.id}"]
        assert got["SWARM_BUS_PASSWORD"] == bus_password("bus-secret", "research", agent.id)
        assert got.get("SWARM_AGENT_TOKEN") == (agent_token("reg-secret", "research", agent.id) if agent.registry else None)


@pytest.mark.parametrize(
    ("env", "argv", "expected"),
    [
        ({"SWARM_REDIS_PASSWORD": "p"}, [], "SWARM_REGISTRY_SECRET is not set"),
        ({"SWARM_REGISTRY_SECRET": "s"}, [], "SWARM_REDIS_PASSWORD is not set"),
        ({"SWARM_REGISTRY_SECRET": "s", "SWARM_REDIS_PASSWORD": "p"}, ["--namespace", "Bad_NS"], "not a namespace name"),
    ],
)
def test_swarm_secrets_k8s_refuses_missing_values(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                                  env: dict[str, str], argv: list[str], expected: str) -> None:
    for name in ("SWARM_REGISTRY_SECRET", "SWARM_REDIS_PASSWORD", "SWARM_BUS_SECRET", "SWARM_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["secrets", "k8s", str(REPO / "specs"), *argv]) == 2
    captured = capsys.readouterr()
    assert expected in captured.err and captured.out == ""



@pytest.mark.parametrize(
    ("fields", "agent_fields", "expected"),
    [
        ({"deploy": {"registry": {"replicas": 0}}}, {}, "replicas"),
        ({"deploy": {"redis": {"cidrs": ["10.0.3.1/24"]}}}, {}, "CIDR"),
        ({"deploy": {"redis": {"pod_labels": {"bad key!": "x"}}}}, {}, "pod_labels"),
        ({"deploy": {"reconciler": {"git": {"repository": "https://user:pw@git.example.com/x.git"}}}}, {}, "credentials"),
        ({}, {"resources": {"requests": {"cpu": "-1"}}}, "cpu"),
        ({}, {"resources": {"limits": {"memory": "1e3"}}}, "memory"),
    ],
)
def test_bad_deploy_settings_are_errors_at_their_position(tmp_path: Path, fields: dict[str, Any],
                                                          agent_fields: dict[str, Any], expected: str) -> None:
    from swarm.errors import SpecError

    from .conftest import swarm_doc, write_spec

    directory = write_spec(tmp_path / "s", swarm_doc(**fields), [agent_doc("a1", 9001, **agent_fields)])
    with pytest.raises(SpecError) as info:
        load_spec_full(directory)
    (issue,) = info.value.issues
    assert expected in str(issue)
    assert issue.position is not None and issue.position.line > 1
