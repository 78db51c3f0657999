"""The agent registry: client (imported here) and server (imported from its modules).

Generated agents do ``from swarm.registry import AgentRegistryClient``, so this
package's ``__init__`` imports only the client (httpx + standard library). The
server side (Starlette app, Redis store, SSE watch, sweeper) lives in
``swarm.registry.server`` and friends and is imported explicitly by the CLI;
``tests/test_layers.py`` keeps this import light.
"""

from __future__ import annotations

from swarm.registry.client import AgentRegistryClient

__all__ = ["AgentRegistryClient"]
