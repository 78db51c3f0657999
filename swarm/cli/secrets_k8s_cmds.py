"""``swarm secrets k8s [SPEC] [--env NAME] [--namespace NS] [--secret-file FILE]``: wiring only.

Prints the Secret manifests the kubernetes target's manifests reference (names, keys
and derivation: :mod:`swarm.secrets_k8s`) to stdout, for ``kubectl apply -f -`` or a
sealing tool; nothing is written to disk. Values come from the environment:
``SWARM_REGISTRY_SECRET`` (or ``--secret-file``'s first line) and
``SWARM_REDIS_PASSWORD`` are required (neither is generated: every token derives
from the first, and the second must be the password the cluster's Redis has);
``SWARM_BUS_SECRET`` and ``SWARM_ADMIN_TOKEN`` are copied when set.

:func:`add_k8s` adds the ``k8s`` action to an existing ``secrets`` group;
:func:`register` creates the group with only that action.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from swarm.cli import EXIT_OK, add_env_option
from swarm.errors import InvalidRequestError


def register(subparsers: Any) -> None:
    group = subparsers.add_parser("secrets", help="print or write the secrets a compiled swarm needs")
    sub = group.add_subparsers(dest="secrets_command", metavar="ACTION")
    sub.required = True
    add_k8s(sub)


def add_k8s(sub: Any) -> None:
    k8s = sub.add_parser(
        "k8s", help="print the Kubernetes Secrets of the kubernetes target (apply or seal them)",
        description="Print the Secret manifests the compiled kubernetes/ manifests reference: <swarm>-swarm "
                    "(registry secret, Redis password, optional bus secret and admin token) and <swarm>-<id> per "
                    "agent (SWARM_BUS_PASSWORD, SWARM_AGENT_TOKEN). Values from SWARM_REGISTRY_SECRET, "
                    "SWARM_REDIS_PASSWORD, SWARM_BUS_SECRET, SWARM_ADMIN_TOKEN.",
    )
    k8s.add_argument("spec", nargs="?", type=Path, default=Path("specs"), metavar="SPEC",
                     help="the spec (default specs/)")
    k8s.add_argument("--namespace", default=None, metavar="NS", help="metadata.namespace of every Secret")
    add_env_option(k8s)
    k8s.add_argument("--secret-file", type=Path, default=None, metavar="FILE",
                     help="read SWARM_REGISTRY_SECRET from FILE's first line instead of the environment")
    k8s.set_defaults(handler=run_k8s)


def run_k8s(args: argparse.Namespace) -> int:
    from swarm import __version__
    from swarm.secrets_k8s import render, secret_manifests
    from swarm.spec.loader import load_spec_full

    from swarm.cli.secrets_cmds import registry_secret as read_registry_secret

    registry_secret = read_registry_secret(args)
    redis_password = os.environ.get("SWARM_REDIS_PASSWORD", "")
    if not redis_password:
        raise InvalidRequestError(
            "SWARM_REDIS_PASSWORD is not set: the password of the default user of the Redis the cluster uses "
            "(the registry, the router and the reconciler log in with it)")
    spec = load_spec_full(args.spec, environment=args.env).spec  # a bad spec: SpecError, printed by the dispatcher
    secrets = secret_manifests(
        spec,
        swarm_version=__version__,
        registry_secret=registry_secret,
        redis_password=redis_password,
        bus_secret=os.environ.get("SWARM_BUS_SECRET") or None,
        admin_token=os.environ.get("SWARM_ADMIN_TOKEN") or None,
        namespace=args.namespace,
        notify_values={name: os.environ[name] for name in spec.notification_env() if os.environ.get(name)},
    )
    sys.stdout.write(render(spec, secrets))
    return EXIT_OK
