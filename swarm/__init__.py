"""swarm: GitOps for fleets of AI agents.

Public API (sorted): ``AclTable``, ``SpecError``, ``SwarmError``, ``compile_spec``,
``load_spec``. Heavier parts (registry, bus, reconciler) are imported from their
subpackages so that ``import swarm`` stays cheap and free of Redis/HTTP imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["AclTable", "SpecError", "SwarmError", "__version__", "compile_spec", "load_spec"]

from swarm.errors import SpecError, SwarmError

if TYPE_CHECKING:  # pragma: no cover
    from swarm.acl import AclTable
    from swarm.compiler import compile_spec
    from swarm.spec.loader import load_spec


def __getattr__(name: str) -> Any:
    if name == "AclTable":  # lazily: `swarm token` and `--version` need no ACL engine
        from swarm.acl import AclTable

        return AclTable
    if name == "load_spec":
        from swarm.spec.loader import load_spec

        return load_spec
    if name == "compile_spec":
        from swarm.compiler import compile_spec

        return compile_spec
    raise AttributeError(f"module 'swarm' has no attribute {name!r}")
