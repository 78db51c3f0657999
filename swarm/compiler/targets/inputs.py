"""What a target gets besides the spec and the compiling version (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class TargetInputs:
    #: The desired target's files (``registry.json``, ``bus.json``, ``acl.json``, ``acl.md``).
    desired: Mapping[str, bytes] = field(default_factory=dict)
    #: The environment overlay compiled (``--env NAME``), None for the base spec.
    environment: str | None = None
