"""The reaper of ``swarm up``: ends its children's process groups when ``up`` dies, even by SIGKILL.

Run as a script (``python -I reaper.py``: no import of swarm, stdlib only) by
:class:`swarm.reconcile.children.Reaper`, with the read end of a pipe as its
standard input. ``up`` writes ``+PGID`` for each child it starts (every child
leads a process group of its own) and ``-PGID`` once it has ended that group
itself. When the pipe reaches its end (``up`` closed it, or died: the kernel
closes a dead process's descriptors), every group still listed gets SIGTERM,
and SIGKILL after :data:`GRACE` seconds if anything of it is left. This reaches
what the children started in turn (``npm`` -> ``sh`` -> ``node``), which the
kernel's parent-death signal (sent to the direct child only) does not.
"""

from __future__ import annotations

import os
import signal
import sys
import time

#: seconds between SIGTERM and SIGKILL
GRACE = 5.0


def signal_group(pgid: int, sig: int) -> bool:
    """Signal group ``pgid``; False when it is gone (no process left in it) or not ours (any more)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the end of the pipe ends it
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    groups: set[int] = set()
    for raw in sys.stdin.buffer:
        line = raw.strip()
        if len(line) > 1 and line[1:].isdigit():
            pgid = int(line[1:])
            if line[:1] == b"+" and pgid > 1:
                groups.add(pgid)
            elif line[:1] == b"-":
                groups.discard(pgid)
    left = {g for g in groups if signal_group(g, signal.SIGTERM)}
    deadline = time.monotonic() + GRACE
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = {g for g in left if signal_group(g, 0)}
    for pgid in left:
        signal_group(pgid, signal.SIGKILL)


if __name__ == "__main__":
    main()
