"""The Secrets the kubernetes target's manifests name, with their values: what ``swarm secrets
k8s`` prints for a user to ``kubectl apply -f -`` or to seal (kubeseal, SOPS). Pure (no I/O:
the CLI, :mod:`swarm.cli.secrets_k8s_cmds`, reads the environment and prints).

The compiled manifests (:mod:`swarm.compiler.targets.kubernetes`) reference these by
name and key and never hold a value:

* ``<swarm>-swarm``: ``SWARM_REGISTRY_SECRET`` (the key of every agent token),
  ``SWARM_REDIS_PASSWORD`` (Redis' default user: the registry, the router and the
  reconciler), and, when the user set them, ``SWARM_BUS_SECRET`` (the key of the
  agents' Redis passwords; default the registry secret) and ``SWARM_ADMIN_TOKEN``;
* ``<swarm>-<id>`` per agent: ``SWARM_BUS_PASSWORD`` (its Redis user's password,
  :func:`swarm.redis_auth.bus_password` under the bus secret) and, when it registers,
  ``SWARM_AGENT_TOKEN`` (:func:`swarm.registry.auth.agent_token`).

Values go in ``data`` (base64), the form ``kubectl get secret -o yaml`` returns, so a
re-apply or ``kubectl diff`` of an unchanged secret shows nothing.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Mapping

from swarm.compiler.targets.kubernetes import AGENT, _labels, _selector, object_name
from swarm.compiler.templating import safe_dump_yaml
from swarm.errors import InvalidRequestError
from swarm.spec.models import Spec

#: A namespace name: a DNS-1123 label.
NAMESPACE_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
WARNING = (
    "# Secrets of swarm {swarm}: apply (`kubectl apply -f -`) or seal them; never commit this output.\n"
    "# Printed by `swarm secrets k8s`; the compiled kubernetes/ manifests reference these names and keys.\n"
)


def _secret(name: str, labels: dict[str, str], values: dict[str, str], namespace: str | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": metadata,
        "data": {k: base64.b64encode(v.encode("utf-8")).decode("ascii") for k, v in values.items()},
    }


def secret_manifests(
    spec: Spec,
    *,
    swarm_version: str,
    registry_secret: str,
    redis_password: str,
    bus_secret: str | None = None,
    admin_token: str | None = None,
    namespace: str | None = None,
    notify_values: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The swarm's Secret, then one per agent (sorted by id). ``notify_values``: the variables the
    spec's notifications read (``Spec.notification_env``) that are set, added to the swarm's Secret."""
    # imported here: swarm.registry's package imports its HTTP client, swarm.bus.apply a Redis client
    from swarm.redis_auth import bus_password  # pure: no Redis client imported
    from swarm.registry.auth import agent_token

    if not registry_secret:
        raise InvalidRequestError("SWARM_REGISTRY_SECRET is empty")
    if not redis_password:
        raise InvalidRequestError("SWARM_REDIS_PASSWORD is empty")
    if namespace is not None and not NAMESPACE_PATTERN.fullmatch(namespace):
        raise InvalidRequestError(f"--namespace {namespace!r} is not a namespace name (a DNS label: a-z, 0-9, '-', at most 63)")
    swarm_name = object_name(spec.name, "swarm")
    values = {"SWARM_REGISTRY_SECRET": registry_secret, "SWARM_REDIS_PASSWORD": redis_password}
    if bus_secret:
        values["SWARM_BUS_SECRET"] = bus_secret
    if admin_token:
        values["SWARM_ADMIN_TOKEN"] = admin_token
    wanted = set(spec.notification_env())
    values.update((k, v) for k, v in sorted((notify_values or {}).items()) if k in wanted and v and k not in values)
    labels = _labels(_selector(spec, "secrets", "swarm-secrets", swarm_name), swarm_version)
    secrets = [_secret(swarm_name, labels, values, namespace)]
    key = bus_secret or registry_secret
    for agent in sorted(spec.agents, key=lambda a: a.id):
        name = object_name(spec.name, agent.id)
        agent_values = {"SWARM_BUS_PASSWORD": bus_password(key, spec.name, agent.id)}
        if agent.registry:
            agent_values["SWARM_AGENT_TOKEN"] = agent_token(registry_secret, spec.name, agent.id)
        secrets.append(_secret(name, _labels(_selector(spec, AGENT, agent.id, name), agent.version), agent_values, namespace))
    return secrets


def render(spec: Spec, secrets: list[dict[str, Any]]) -> str:
    """A multi-document YAML stream of ``secrets`` under a warning comment."""
    return WARNING.format(swarm=spec.name) + "---\n".join(safe_dump_yaml(s) for s in secrets)
