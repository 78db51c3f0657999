"""The import path compiled Python agents use (``from swarm.agent_runtime import ...``).

The code lives in :mod:`swarm.runtimes.python.agent_runtime`; this module keeps the
path that every compiled ``server.py`` (and every image already built) imports.
"""

from swarm.runtimes.python.agent_runtime import *  # noqa: F401,F403
from swarm.runtimes.python.agent_runtime import __all__  # noqa: F401
