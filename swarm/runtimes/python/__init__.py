"""The ``python`` runtime: a Starlette server per agent, run by uvicorn.

:mod:`.runtime` renders an agent's files (``server.py``, ``requirements.txt``,
``Dockerfile``); :mod:`.agent_runtime` is the code every compiled Python agent
shares at run time (imported by the generated servers as ``swarm.agent_runtime``).
"""
