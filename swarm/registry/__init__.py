"""The agent registry: client (``from swarm.registry import AgentRegistryClient``) and server
(imported from its modules).

Generated agents do ``from swarm.registry import AgentRegistryClient``; the client
(httpx + standard library) is imported on that first access (PEP 562), not with the
package, so the light modules here (:mod:`swarm.registry.auth`, :mod:`swarm.registry.config`)
cost no HTTP client: ``swarm token`` starts fast. The server side (Starlette app, Redis
store, SSE watch, sweeper) lives in ``swarm.registry.server`` and friends and is imported
explicitly by the CLI; ``tests/test_layers.py`` keeps this import light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from swarm.registry.client import AgentRegistryClient

__all__ = ["AgentRegistryClient"]


def __getattr__(name: str) -> Any:
    if name == "AgentRegistryClient":
        from swarm.registry.client import AgentRegistryClient

        return AgentRegistryClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
