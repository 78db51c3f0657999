"""What /proc says of processes, for the tests that check nothing outlives `swarm up`.

Linux only (as the machines these tests run on): a pid's state, start time and parent come
from ``/proc/PID/stat`` (the fields after the command name in parentheses).
"""

from __future__ import annotations

import os
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _read_cmdline(pid: int | str) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def cmdline(pid: int) -> str:
    """The command line of ``pid``, its arguments joined by spaces; ``"?"`` when it cannot be read."""
    try:
        return _read_cmdline(pid)
    except OSError:
        return "?"


def processes_in(folder: Path, *, besides: tuple[int, ...] = ()) -> list[str]:
    """Processes (but this one and ``besides``) whose command line or working directory is inside ``folder``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in (os.getpid(), *besides):
            continue
        try:
            line = _read_cmdline(entry.name)
            cwd = os.readlink(entry / "cwd")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if str(folder) in line or cwd.startswith(str(folder)):
            found.append(f"{entry.name}: {line.strip()} (cwd {cwd})")
    return found


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in ticks), None when the pid is gone or a zombie."""
    fields = _stat_fields(pid)
    return None if fields is None or fields[0] in ("Z", "X") else fields[19]


def alive(pid: int) -> bool:
    """The pid runs (a zombie or a dead process does not)."""
    return start_time(pid) is not None


def parents() -> dict[int, int]:
    """Every process -> its parent pid."""
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                found[int(entry.name)] = int(fields[1])
    return found


def depths(root: int) -> dict[int, int]:
    """Every live descendant of ``root`` -> its depth below it (1: a child)."""
    tree = parents()
    depth: dict[int, int] = {}
    frontier, level = [root], 0
    while frontier:
        level += 1
        frontier = [pid for pid, ppid in tree.items() if ppid in frontier and pid not in depth and alive(pid)]
        depth.update({pid: level for pid in frontier})
    return depth


def descendants(root: int) -> dict[int, str]:
    """Every live process below ``root`` (children, grandchildren ...) -> its start time."""
    return {pid: started for pid in depths(root) if (started := start_time(pid)) is not None}
