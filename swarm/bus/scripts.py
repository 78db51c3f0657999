"""Lua sources of the bus, shipped as package data (``swarm/bus/lua/*.lua``).

Pure file access, no Redis: callers register the text with ``register_script``,
which runs EVALSHA and loads the script on NOSCRIPT (also after a Redis restart).
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def load_script(name: str) -> str:
    """The source of ``lua/<name>.lua``."""
    return resources.files("swarm.bus").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
