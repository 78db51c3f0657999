"""The name rules of the spec, without pydantic: metadata.name and agent ids (and the
default private metadata keys).

Re-exported by :mod:`swarm.spec.models` (which builds its field types from them);
imported directly where a command line checks a name before any spec is loaded, and
by :mod:`swarm.desired`, which a cached desired state is read with, without the spec models.
"""

from __future__ import annotations

import re

__all__ = ["DEFAULT_PRIVATE_METADATA", "NAME_MAX", "NAME_PATTERN", "is_name"]

#: metadata.name and agent ids: they become file paths and Redis keys.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
NAME_MAX = 63

#: Metadata keys private by default: what agents put credentials under.
DEFAULT_PRIVATE_METADATA: tuple[str, ...] = ("api_key", "password", "secret", "token")


def is_name(text: str) -> bool:
    """Whether ``text`` is a valid swarm name or agent id."""
    return len(text) <= NAME_MAX and re.fullmatch(NAME_PATTERN, text) is not None
