"""The pure core imports no adapter library (the layers stay visible: spec, acl, compiler and plan never reach Redis or HTTP).

Each core module is imported in a fresh interpreter; none of Redis, HTTP, the
file watcher or the ASGI stack may appear in ``sys.modules`` afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CORE_MODULES = [
    "swarm.acl",
    "swarm.keys",
    "swarm.errors",
    "swarm.backoff",
    "swarm.redis_auth",
    "swarm.desired",
    "swarm.spec.models",
    "swarm.spec.loader",
    "swarm.spec.checks",
    "swarm.spec.yamldoc",
    "swarm.spec.sourcemap",
    "swarm.spec.schema",
    "swarm.compiler.render",
    "swarm.compiler.templating",
    "swarm.compiler.targets",
    "swarm.compiler.targets.compose",
    "swarm.compiler.targets.desired",
    "swarm.compiler.targets.kubernetes",
    "swarm.compiler.targets.inputs",
    "swarm.secrets_k8s",
    "swarm.runtimes",
    "swarm.runtimes.python.runtime",
    "swarm.bus.dedup",
    "swarm.bus.breaker",
    "swarm.bus.routing",
    "swarm.reconcile.plan",
    "swarm.reconcile.delta",
    "swarm.reconcile.state",
    "swarm.reconcile.status",
    "swarm.reconcile.history",
    "swarm.notify.rules",
    "swarm.signature",
    "swarm.registry.webhook",
    "swarm.reconcile.supervise",
    "swarm.spec.environments",
    "swarm.runtimes.python.agent_runtime",
    "swarm.runtimes.node",
    "swarm.agent_runtime",  # generated agents import it: no Redis/HTTP unless the agent uses them
]
FORBIDDEN = ["redis", "httpx", "starlette", "uvicorn", "watchfiles", "sse_starlette", "hiredis"]


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_imports_no_adapter(module: str) -> None:
    code = (
        "import json, sys, importlib; importlib.import_module(%r); "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in %r)))" % (module, FORBIDDEN)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [], f"{module} pulls in adapter libraries"


def test_registry_client_import_is_light() -> None:
    """Generated agents import the client: it must not drag in the server stack."""
    code = (
        "import json, sys; from swarm.registry import AgentRegistryClient; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ['redis', 'uvicorn', 'sse_starlette'])))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_public_all_is_sorted_and_complete() -> None:
    import swarm

    assert list(swarm.__all__) == sorted(swarm.__all__)
    for name in swarm.__all__:
        assert getattr(swarm, name) is not None
