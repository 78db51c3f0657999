"""``swarm logs AGENT [--follow] [-n N]``: the log of a demo agent run by ``swarm up``.

``up`` appends each agent's output (across its restarts) to ``<state>/agent-<id>.log``
(:func:`swarm.reconcile.up_agents.agent_log`). :func:`find_agent_log` checks the id
(an agent id of the spec's form only: ``../x`` or ``a/b`` would name a file outside
that folder) and says which agents have a log when the one asked for has none;
:func:`last_lines` and :func:`follow` print it, like ``tail [-n N] [-f]``.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import BinaryIO, Callable

from swarm.errors import InvalidRequestError, NotDeclaredError
from swarm.reconcile.up_agents import agent_log
from swarm.spec.models import NAME_MAX, NAME_PATTERN

_PREFIX, _SUFFIX = "agent-", ".log"


def known_agents(state_dir: Path) -> list[str]:
    """The agents with a log in ``state_dir`` (sorted)."""
    try:
        names = os.listdir(state_dir)
    except OSError:
        return []
    return sorted(n[len(_PREFIX):-len(_SUFFIX)] for n in names
                  if n.startswith(_PREFIX) and n.endswith(_SUFFIX) and re.match(NAME_PATTERN, n[len(_PREFIX):-len(_SUFFIX)]))


def find_agent_log(state_dir: Path, agent_id: str) -> Path:
    """The log of ``agent_id``; a clear error for an id that is no agent id, or an agent with no log."""
    if len(agent_id) > NAME_MAX or not re.match(NAME_PATTERN, agent_id):
        raise InvalidRequestError(
            f"swarm logs: {agent_id!r} is not an agent id (lowercase letters, digits and '-', at most {NAME_MAX})")
    path = agent_log(state_dir, agent_id)
    if not path.is_file():
        known = known_agents(state_dir)
        where = f"in {state_dir}/" if state_dir.is_dir() else f"({state_dir}/ does not exist: has swarm up run here?)"
        listing = f"agents with a log: {', '.join(known)}" if known else "no agent has a log yet (swarm up --demo writes them)"
        raise NotDeclaredError(f"swarm logs: no log of agent {agent_id!r} {where}; {listing}")
    return path


def last_lines(fh: BinaryIO, count: int | None, chunk: int = 65536) -> bytes:
    """The last ``count`` lines of ``fh`` (all of it for None), read from the end; leaves ``fh`` at its end."""
    end = fh.seek(0, os.SEEK_END)
    if count is None:
        fh.seek(0)
        data = fh.read()
        return data
    if count <= 0:
        return b""
    pos, data = end, b""
    while pos > 0 and data.count(b"\n") <= count:
        step = min(chunk, pos)
        pos -= step
        fh.seek(pos)
        data = fh.read(step) + data
    fh.seek(end)
    lines = data.splitlines(keepends=True)
    return b"".join(lines[-count:])


def follow(fh: BinaryIO, write: Callable[[bytes], None], *, interval: float = 0.2,
           stop: Callable[[], bool] = lambda: False) -> None:
    """Write what is appended to ``fh`` as it comes, until ``stop()`` (or Ctrl-C in the caller)."""
    while not stop():
        data = fh.read()
        if data:
            write(data)
        else:
            time.sleep(interval)
