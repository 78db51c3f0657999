"""The ``kubernetes`` target: ``kubernetes/``, a kustomize base (``kubectl apply -k``,
Argo CD or Flux pointed at the repository). Pure.

Files (every one listed in ``kubernetes/kustomization.yaml``, sorted):

- ``agents/<id>.yaml`` per agent: its ServiceAccount, Deployment, Service and
  NetworkPolicy (one file per agent, so a one-agent change touches one file);
- ``registry.yaml``, ``router.yaml``, ``reconciler.yaml``: the swarm's own
  processes (ServiceAccount, Deployment, PodDisruptionBudget, and the registry's
  Service);
- ``desired.yaml``: the ConfigMap ``<swarm>-desired`` with the compiled desired
  state (registry.json, bus.json, acl.json), for ``kubectl get`` and for
  ``swarm bus apply`` / ``swarm registry push`` run in the cluster; a large swarm's
  is split over several (:func:`desired_config_maps`).

Secrets are referenced by name and never written (``swarm secrets k8s`` prints
them for a user to apply or seal): ``<swarm>-swarm`` (SWARM_REGISTRY_SECRET,
SWARM_REDIS_PASSWORD, optional SWARM_BUS_SECRET and SWARM_ADMIN_TOKEN) for the
registry, the router and the reconciler; ``<swarm>-<id>`` per agent
(SWARM_AGENT_TOKEN, SWARM_BUS_PASSWORD); the optional ``<swarm>-git`` for the
reconciler's git-sync (GITSYNC_* variables: the repository when the spec names
none, credentials).

The registry runs with ``--no-route``; routing is the router Deployment's (the
router group lets several replicas share the outboxes). The reconciler runs
``swarm reconcile --watch`` (with ``--env NAME`` for an environment's base) on a
checkout that a git-sync sidecar keeps current (an init container clones once
first, so the first pass sees the spec); its lease keeps one writer whatever the
replica count.

Every object carries the ``app.kubernetes.io/*`` labels; selectors use name,
instance, component and part-of (never version, so an upgrade keeps them). Object
names are ``<swarm>-<id>`` (``<swarm>-registry`` ...), shortened with a hash
when longer than 63 characters (a Service name is a DNS label) and prefixed with
``s`` when they would start with a digit. Literal values in commands and
environment variables have ``$`` doubled, so Kubernetes' ``$(VAR)`` expansion
never reads a spec value as a reference.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from typing import Any, Mapping
from urllib.parse import quote, urlsplit, urlunsplit

from swarm.compiler.targets.compose import RECONCILER_METRICS_PORT, REGISTRY_PORT, agent_image, render_registry_dockerfile, swarm_image
from swarm.compiler.targets.inputs import TargetInputs
from swarm.compiler.templating import header, safe_dump_yaml
from swarm.errors import CompileError
from swarm.keys import SwarmKeys
from swarm.spec.models import Agent, Resources, Spec

DIRECTORY = "kubernetes"
KUSTOMIZATION = "kustomization.yaml"
MANAGED_BY = "swarm"
#: The UID/GID the images run as (``USER 10001:10001`` in every generated Dockerfile).
RUN_AS = 10001
#: Components (``app.kubernetes.io/component``) of the swarm's own processes.
REGISTRY, ROUTER, RECONCILER, AGENT = "registry", "router", "reconciler", "agent"
#: Names the agents' objects may not take: ``<swarm>-<one of these>`` is the swarm's own.
RESERVED_IDS = (REGISTRY, ROUTER, RECONCILER, "swarm", "desired", "git")
#: Desired-state files copied into the ``<swarm>-desired`` ConfigMap.
DESIRED_FILES = ("acl.json", "bus.json", "registry.json")
#: Where the reconciler's pod keeps the git-sync checkout (``<root>/<link>`` is the current commit).
GIT_ROOT = "/git"
GIT_LINK = "current"
NAME_MAX = 63
_LABEL_VALUE_BAD = re.compile(r"[^-A-Za-z0-9_.]")


def object_name(*parts: str) -> str:
    """A DNS-1035 label (≤ 63, starts with a letter) from ``parts`` joined by ``-``: deterministic,
    readable when short, ``<first 52>-<10 hex of sha256>`` when not."""
    name = "-".join(parts)
    if not name[:1].isalpha():
        name = "s" + name
    if len(name) > NAME_MAX:
        digest = hashlib.sha256(name.encode()).hexdigest()[:10]
        name = f"{name[: NAME_MAX - 11].rstrip('-')}-{digest}"
    return name


def label_value(value: str) -> str:
    """``value`` as a label value: only ``[-A-Za-z0-9_.]`` (others, e.g. SemVer's ``+``, become
    ``_``), at most 63 characters, alphanumeric at both ends."""
    text = _LABEL_VALUE_BAD.sub("_", value)[:NAME_MAX]
    return text.strip("-_.")


def escape(value: str) -> str:
    """A literal for a command argument or an env value: ``$`` doubled (no ``$(VAR)`` expansion)."""
    return value.replace("$", "$$")


def _selector(spec: Spec, component: str, name: str, instance: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/part-of": spec.name,
    }


def _labels(selector: Mapping[str, str], version: str) -> dict[str, str]:
    return {**selector, "app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/version": label_value(version)}


def _meta(name: str, labels: Mapping[str, str], **extra: Any) -> dict[str, Any]:
    return {"name": name, "labels": dict(labels), **extra}


def _resources(resources: Resources) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, amounts in (("requests", resources.requests), ("limits", resources.limits)):
        values = {k: v for k, v in (("cpu", amounts.cpu), ("memory", amounts.memory)) if v is not None}
        if values:
            out[kind] = values
    return out


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsGroup": RUN_AS,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_security() -> dict[str, Any]:
    return {
        "fsGroup": RUN_AS,
        "runAsGroup": RUN_AS,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _tmp_volume() -> dict[str, Any]:
    return {"name": "tmp", "emptyDir": {}}


def _tmp_mount() -> dict[str, Any]:
    return {"name": "tmp", "mountPath": "/tmp"}


# Builders return fresh dicts: a dict used twice in one document would be dumped as a
# YAML anchor and alias.


def _dns_peer() -> dict[str, Any]:
    """kube-dns / CoreDNS pods, by the usual labels in kube-system."""
    return {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }


def _registry_peer(spec: Spec) -> dict[str, Any]:
    """The registry's pods (its health prober), in the swarm's namespace."""
    return {"podSelector": {"matchLabels": {"app.kubernetes.io/component": REGISTRY, "app.kubernetes.io/part-of": spec.name}}}


def _secret_env(name: str, secret: str, key: str, *, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def _http_probe(path: str, *, period: int, failures: int, initial: int = 0) -> dict[str, Any]:
    probe: dict[str, Any] = {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }
    if initial:
        probe["initialDelaySeconds"] = initial
    return probe


def _probes() -> dict[str, Any]:
    return {
        # up to 60 s to start (first import, registration) before liveness counts
        "startupProbe": _http_probe("/health/live", period=2, failures=30),
        "livenessProbe": _http_probe("/health/live", period=10, failures=3),
        "readinessProbe": _http_probe("/health/ready", period=5, failures=2),
    }


def _pod_spec(service_account: str, containers: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "automountServiceAccountToken": False,
        "containers": containers,
        # thousands of agents' Services would otherwise each add env variables to every pod
        "enableServiceLinks": False,
        "securityContext": _pod_security(),
        "serviceAccountName": service_account,
        "volumes": [_tmp_volume(), *extra.pop("volumes", [])],
        **extra,
    }


def _deployment(
    name: str, selector: Mapping[str, str], labels: Mapping[str, str], replicas: int, pod: dict[str, Any], strategy: str | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "revisionHistoryLimit": 3,
        "selector": {"matchLabels": dict(selector)},
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
    }
    if strategy is not None:
        spec["strategy"] = {"type": strategy}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(name, labels), "spec": spec}


def _service_account(name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name, labels), "automountServiceAccountToken": False}


def _service(name: str, selector: Mapping[str, str], labels: Mapping[str, str], port: int, *, not_ready: bool = False
             ) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": "ClusterIP",
        "selector": dict(selector),
        "ports": [{"name": "http", "port": port, "protocol": "TCP", "targetPort": "http"}],
    }
    if not_ready:
        spec["publishNotReadyAddresses"] = True
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, labels), "spec": spec}


def _pdb(name: str, selector: Mapping[str, str], labels: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(name, labels),
        # maxUnavailable, not minAvailable: a 1-replica Deployment must not block a node drain
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(selector)}},
    }


class _Redis:
    """Where the spec's bus.redis_url points, as the manifests need it."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise CompileError(
                f"target kubernetes: bus.redis_url {url!r} must be a redis:// or rediss:// URL with a host "
                "(pods reach Redis over TCP)"
            )
        self.url = url
        self.parts = parts
        self.host = parts.hostname
        self.port = parts.port or 6379

    def agent_url(self, user: str) -> str:
        """The agent's REDIS_URL: its user, ``$(SWARM_BUS_PASSWORD)`` (expanded by Kubernetes from
        the variable defined before it), the spec's host, port, path and query (``$`` escaped)."""
        p = self.parts
        netloc = f"{quote(user, safe='')}:$(SWARM_BUS_PASSWORD)@{escape(p.netloc)}"
        return urlunsplit((p.scheme, netloc, escape(p.path), escape(p.query), escape(p.fragment)))

    def peers(self, spec: Spec) -> list[dict[str, Any]]:
        """NetworkPolicy peers of Redis (empty: any address, on the Redis port only)."""
        peer = spec.swarm.deploy.redis
        peers: list[dict[str, Any]] = [{"ipBlock": {"cidr": c}} for c in peer.cidrs]
        if peer.pod_labels:
            selected: dict[str, Any] = {"podSelector": {"matchLabels": dict(peer.pod_labels)}}
            if peer.namespace_labels:
                selected["namespaceSelector"] = {"matchLabels": dict(peer.namespace_labels)}
            peers.append(selected)
        if not peers:
            try:
                ip = ipaddress.ip_address(self.host)
            except ValueError:
                return []
            peers.append({"ipBlock": {"cidr": f"{ip}/{ip.max_prefixlen}"}})
        return peers


class _Names:
    def __init__(self, spec: Spec) -> None:
        self.swarm_secret = object_name(spec.name, "swarm")
        self.git_secret = object_name(spec.name, "git")
        self.registry = object_name(spec.name, REGISTRY)
        self.router = object_name(spec.name, ROUTER)
        self.reconciler = object_name(spec.name, RECONCILER)
        self.registry_url = f"http://{self.registry}:{REGISTRY_PORT}"


def _swarm_env(names: _Names, *, admin: bool) -> list[dict[str, Any]]:
    env = [
        _secret_env("SWARM_REGISTRY_SECRET", names.swarm_secret, "SWARM_REGISTRY_SECRET"),
        _secret_env("SWARM_REDIS_PASSWORD", names.swarm_secret, "SWARM_REDIS_PASSWORD"),
        # the key of the agents' Redis passwords; without it the registry secret is the key
        _secret_env("SWARM_BUS_SECRET", names.swarm_secret, "SWARM_BUS_SECRET", optional=True),
    ]
    if admin:
        env.append(_secret_env("SWARM_ADMIN_TOKEN", names.swarm_secret, "SWARM_ADMIN_TOKEN", optional=True))
    return env


def _agent_objects(spec: Spec, agent: Agent, names: _Names, redis: _Redis) -> list[dict[str, Any]]:
    name = object_name(spec.name, agent.id)
    selector = _selector(spec, AGENT, agent.id, name)
    labels = _labels(selector, agent.version)
    bus = bool(agent.publishes or agent.subscribes)
    env: list[dict[str, Any]] = [
        {"name": "AGENT_ID", "value": agent.id},
        # the registry probes health_url on the agent's own host:port: the pod's IP
        {"name": "AGENT_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "AGENT_PORT", "value": str(agent.port)},
        {"name": "HOME", "value": "/tmp"},
    ]
    if bus:
        env.append(_secret_env("SWARM_BUS_PASSWORD", name, "SWARM_BUS_PASSWORD"))
        env.append({"name": "REDIS_URL", "value": redis.agent_url(SwarmKeys(spec.name).redis_user(agent.id))})
    if agent.registry:
        env.append({"name": "REGISTRY_URL", "value": names.registry_url})
        env.append(_secret_env("SWARM_AGENT_TOKEN", name, "SWARM_AGENT_TOKEN"))
    container: dict[str, Any] = {
        "name": "agent",
        "image": agent_image(spec, agent),
        "imagePullPolicy": "IfNotPresent",
        "env": env,
        "ports": [{"name": "http", "containerPort": agent.port, "protocol": "TCP"}],
        "resources": _resources(agent.resources or spec.swarm.deploy.agents),
        "securityContext": _container_security(),
        "volumeMounts": [_tmp_mount()],
        **_probes(),
    }
    pod = _pod_spec(name, [container], terminationGracePeriodSeconds=30)
    deployment = _deployment(name, selector, labels, 1, pod, strategy="Recreate")
    # one pod per agent id: a rolling update would let the old pod deregister the new one's id
    deployment["metadata"]["annotations"] = {"swarm/agent-name": agent.display_name}
    egress: list[dict[str, Any]] = [
        {"to": [_dns_peer()], "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
    ]
    if bus:
        rule: dict[str, Any] = {"ports": [{"port": redis.port, "protocol": "TCP"}]}
        peers = redis.peers(spec)
        if peers:
            rule["to"] = peers
        egress.append(rule)
    if agent.registry:
        egress.append({"to": [_registry_peer(spec)], "ports": [{"port": REGISTRY_PORT, "protocol": "TCP"}]})
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(name, labels),
        "spec": {
            "podSelector": {"matchLabels": dict(selector)},
            "policyTypes": ["Ingress", "Egress"],
            # the registry's health prober, on the agent's port only
            "ingress": [{"from": [_registry_peer(spec)], "ports": [{"port": agent.port, "protocol": "TCP"}]}],
            "egress": egress,
        },
    }
    return [_service_account(name, labels), deployment, _service(name, selector, labels, agent.port), policy]


def _registry_objects(spec: Spec, names: _Names, swarm_version: str, redis: _Redis) -> list[dict[str, Any]]:
    deploy = spec.swarm.deploy.registry
    selector = _selector(spec, REGISTRY, "swarm-registry", names.registry)
    labels = _labels(selector, swarm_version)
    container: dict[str, Any] = {
        "name": REGISTRY,
        "image": swarm_image(spec, swarm_version),
        "imagePullPolicy": "IfNotPresent",
        "command": [
            "swarm", "registry", "serve",
            "--host", "0.0.0.0",
            "--port", str(REGISTRY_PORT),
            "--redis-url", escape(redis.url),  # SWARM_REDIS_PASSWORD is applied to it by the CLI
            "--swarm", spec.name,
            "--no-route",  # the router Deployment routes
        ],
        "env": [*_swarm_env(names, admin=True), {"name": "HOME", "value": "/tmp"}],
        "ports": [{"name": "http", "containerPort": REGISTRY_PORT, "protocol": "TCP"}],
        "resources": _resources(deploy.resources),
        "securityContext": _container_security(),
        "volumeMounts": [_tmp_mount()],
        **_probes(),
    }
    pod = _pod_spec(names.registry, [container])
    return [
        _service_account(names.registry, labels),
        _deployment(names.registry, selector, labels, deploy.replicas, pod),
        _pdb(names.registry, selector, labels),
        # not-ready pods too: a registry is ready only once it has a catalog, which the reconciler
        # pushes through this Service (readiness still gates the registry's rollouts)
        _service(names.registry, selector, labels, REGISTRY_PORT, not_ready=True),
    ]


def _router_objects(spec: Spec, names: _Names, swarm_version: str, redis: _Redis) -> list[dict[str, Any]]:
    deploy = spec.swarm.deploy.router
    selector = _selector(spec, ROUTER, "swarm-router", names.router)
    labels = _labels(selector, swarm_version)
    container: dict[str, Any] = {
        "name": ROUTER,
        "image": swarm_image(spec, swarm_version),
        "imagePullPolicy": "IfNotPresent",
        "command": ["swarm", "bus", "route", "--swarm", spec.name, "--redis-url", escape(redis.url)],
        "env": [*_swarm_env(names, admin=False), {"name": "HOME", "value": "/tmp"}],
        "resources": _resources(deploy.resources),
        "securityContext": _container_security(),
        "volumeMounts": [_tmp_mount()],
    }
    pod = _pod_spec(names.router, [container])
    return [
        _service_account(names.router, labels),
        _deployment(names.router, selector, labels, deploy.replicas, pod),
        _pdb(names.router, selector, labels),
    ]


def _git_sync(spec: Spec, names: _Names, *, one_time: bool) -> dict[str, Any]:
    git = spec.swarm.deploy.reconciler.git
    env: list[dict[str, Any]] = [
        {"name": "GITSYNC_ROOT", "value": GIT_ROOT},
        {"name": "GITSYNC_LINK", "value": GIT_LINK},
        {"name": "GITSYNC_REF", "value": escape(git.ref)},
        {"name": "GITSYNC_PERIOD", "value": f"{git.period_seconds}s"},
        {"name": "GITSYNC_DEPTH", "value": "1"},
        {"name": "HOME", "value": "/tmp"},
    ]
    if git.repository is not None:
        env.append({"name": "GITSYNC_REPO", "value": escape(git.repository)})
    if one_time:
        env.append({"name": "GITSYNC_ONE_TIME", "value": "true"})
    return {
        "name": "git-sync-init" if one_time else "git-sync",
        "image": git.image,
        "imagePullPolicy": "IfNotPresent",
        # GITSYNC_REPO (when the spec names none) and credentials; explicit env above wins
        "envFrom": [{"secretRef": {"name": names.git_secret, "optional": True}}],
        "env": env,
        "resources": _resources(Resources()),
        "securityContext": _container_security(),
        "volumeMounts": [{"name": "git", "mountPath": GIT_ROOT}, _tmp_mount()],
    }


def _reconciler_objects(spec: Spec, names: _Names, swarm_version: str, redis: _Redis, environment: str | None
                        ) -> list[dict[str, Any]]:
    deploy = spec.swarm.deploy.reconciler
    selector = _selector(spec, RECONCILER, "swarm-reconciler", names.reconciler)
    labels = _labels(selector, swarm_version)
    spec_dir = f"{GIT_ROOT}/{GIT_LINK}/{deploy.git.spec_path}"
    container: dict[str, Any] = {
        "name": RECONCILER,
        "image": swarm_image(spec, swarm_version),
        "imagePullPolicy": "IfNotPresent",
        "command": [
            "swarm", "reconcile", spec_dir, "--watch",
            "--registry-url", names.registry_url,
            "--redis-url", escape(redis.url),
            "--compiled-dir", "",  # compiled/ is the repository's, written by `swarm compile`
            "--metrics-port", str(RECONCILER_METRICS_PORT), "--metrics-host", "0.0.0.0",  # swarm_reconcile_*
            *(["--env", environment] if environment is not None else []),  # the overlay this base was compiled with
        ],
        "env": [*_swarm_env(names, admin=True), {"name": "HOME", "value": "/tmp"},
                # the notifications' URLs and keys (url_env, secret_env): keys of the swarm's Secret
                *(_secret_env(name, names.swarm_secret, name, optional=True) for name in spec.notification_env())],
        "ports": [{"name": "metrics", "containerPort": RECONCILER_METRICS_PORT, "protocol": "TCP"}],
        "resources": _resources(deploy.resources),
        "securityContext": _container_security(),
        "volumeMounts": [{"name": "git", "mountPath": GIT_ROOT, "readOnly": True}, _tmp_mount()],
    }
    pod = _pod_spec(
        names.reconciler,
        [container, _git_sync(spec, names, one_time=False)],
        initContainers=[_git_sync(spec, names, one_time=True)],
        volumes=[{"name": "git", "emptyDir": {}}],
    )
    return [
        _service_account(names.reconciler, labels),
        # one replica: the reconcile lease keeps one writer anyway, a second pod would only stand by
        _deployment(names.reconciler, selector, labels, 1, pod),
        _pdb(names.reconciler, selector, labels),
    ]


#: Bytes of desired-state text per ConfigMap: far under Kubernetes' 1 MiB object limit, and
#: under the 256 KiB of annotations that client-side ``kubectl apply`` spends on a copy of
#: the object (``last-applied-configuration``) even after JSON escaping.
CONFIG_MAP_BUDGET = 128 * 1024
_SURROGATE_PAIR = re.compile(r"(?<!\\)((?:\\\\)*)\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})")


def _pieces(text: str, budget: int) -> list[str]:
    """``text`` cut at line ends into pieces of at most ``budget`` UTF-8 bytes (a longer line
    is cut inside; at most 4 bytes per character)."""
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for line in text.splitlines(keepends=True):
        chunks = [line] if len(line.encode("utf-8")) <= budget else [line[i:i + budget // 4] for i in range(0, len(line), budget // 4)]
        for chunk in chunks:
            n = len(chunk.encode("utf-8"))
            if current and size + n > budget:
                pieces.append("".join(current))
                current, size = [], 0
            current.append(chunk)
            size += n
    if current:
        pieces.append("".join(current))
    return pieces


def desired_config_maps(spec: Spec, swarm_version: str, desired: Mapping[str, bytes],
                        budget: int = CONFIG_MAP_BUDGET) -> list[dict[str, Any]]:
    """The desired state as ConfigMaps: ``<swarm>-desired`` with keys acl.json, bus.json and
    registry.json when they fit one; else ``<swarm>-desired-<n>`` (n from 0), a file too large
    for one split at line ends into keys ``<file>.part-000``, ``.part-001``..., whose
    concatenation in key order is the file (``cat registry.json.part-*`` in a volume that
    projects them all)."""
    items: list[tuple[str, str]] = []
    for name in DESIRED_FILES:
        if name not in desired:
            continue
        text = desired[name].decode("utf-8")
        parts = _pieces(text, budget) if len(desired[name]) > budget else [text]
        items += [(name, text)] if len(parts) == 1 else [(f"{name}.part-{i:03d}", part) for i, part in enumerate(parts)]
    maps: list[dict[str, str]] = [{}]
    size = 0
    for key, text in items:
        n = len(text.encode("utf-8"))
        if maps[-1] and size + n > budget:
            maps.append({})
            size = 0
        maps[-1][key] = text
        size += n
    out = []
    for index, data in enumerate(maps):
        name = object_name(spec.name, "desired") if len(maps) == 1 else object_name(spec.name, "desired", str(index))
        selector = _selector(spec, "desired-state", "swarm-desired", name)
        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(name, _labels(selector, swarm_version)), "data": data})
    return out


_BLOCK_SAFE = re.compile(r"^[\x20-\x7e\n]+$")


def _yaml_string(text: str) -> str:
    """A YAML scalar of ``text``, written here rather than by PyYAML, whose pure emitter (the
    one any multi-line value needs, see :func:`safe_dump_yaml`) takes seconds on a large
    swarm's desired state. Printable ASCII text becomes a literal block (``|2`` and the
    chomping that keeps its trailing newlines), so a review diff shows the changed lines;
    anything else a double-quoted scalar with JSON's escapes (ASCII only: no raw line
    separator reaches a parser) and astral characters as YAML's ``\\UXXXXXXXX``."""
    if _BLOCK_SAFE.fullmatch(text):
        if text.endswith("\n\n"):
            chomp, lines = "+", text.split("\n")[:-1]
        elif text.endswith("\n"):
            chomp, lines = "", text[:-1].split("\n")
        else:
            chomp, lines = "-", text.split("\n")
        return f"|2{chomp}\n" + "".join((f"    {line}" if line else "") + "\n" for line in lines)

    def astral(m: re.Match[str]) -> str:
        code = 0x10000 + ((int(m.group(2), 16) - 0xD800) << 10) + (int(m.group(3), 16) - 0xDC00)
        return f"{m.group(1)}\\U{code:08x}"

    return _SURROGATE_PAIR.sub(astral, json.dumps(text, ensure_ascii=True)) + "\n"


def _dump_object(obj: dict[str, Any]) -> str:
    if obj["kind"] != "ConfigMap":
        return safe_dump_yaml(obj)
    head = safe_dump_yaml({k: v for k, v in obj.items() if k != "data"})
    body = "".join(f"  {key}: {_yaml_string(value)}" for key, value in sorted(obj["data"].items()))
    return head + ("data:\n" + body if body else "data: {}\n")


def _dump(objects: list[dict[str, Any]], swarm_version: str) -> bytes:
    return (header(swarm_version) + "---\n".join(_dump_object(o) for o in objects)).encode("utf-8")


def manifests(spec: Spec, swarm_version: str, inputs: TargetInputs) -> dict[str, list[dict[str, Any]]]:
    """Every manifest file's objects, keyed by the path under ``kubernetes/`` (data, not text)."""
    for agent in spec.agents:
        if agent.id in RESERVED_IDS:
            raise CompileError(
                f"target kubernetes: agent id {agent.id!r} would share its object names with the swarm's "
                f"{agent.id} (names reserved: {', '.join(RESERVED_IDS)}); rename the agent"
            )
    names = _Names(spec)
    redis = _Redis(spec.swarm.bus.redis_url)
    files = {
        "registry.yaml": _registry_objects(spec, names, swarm_version, redis),
        "router.yaml": _router_objects(spec, names, swarm_version, redis),
        "reconciler.yaml": _reconciler_objects(spec, names, swarm_version, redis, inputs.environment),
        "desired.yaml": desired_config_maps(spec, swarm_version, inputs.desired),
    }
    for agent in sorted(spec.agents, key=lambda a: a.id):
        files[f"agents/{agent.id}.yaml"] = _agent_objects(spec, agent, names, redis)
    return files


def render_files(spec: Spec, swarm_version: str, inputs: TargetInputs) -> dict[str, bytes]:
    """The target's files keyed by their path under ``<swarm>/``: ``kubernetes/*`` and the
    ``registry/Dockerfile`` of the registry/router/reconciler image (as the compose target's)."""
    docs = manifests(spec, swarm_version, inputs)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": sorted(docs),
    }
    files = {f"{DIRECTORY}/{path}": _dump(objects, swarm_version) for path, objects in docs.items()}
    files[f"{DIRECTORY}/{KUSTOMIZATION}"] = _dump([kustomization], swarm_version)
    files["registry/Dockerfile"] = render_registry_dockerfile(spec, swarm_version)
    return dict(sorted(files.items()))
