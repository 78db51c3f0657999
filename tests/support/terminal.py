"""Reading what a program wrote to a pseudo-terminal (tests of terminal-only output)."""

from __future__ import annotations

import os


def drain(leader: int) -> bytes:
    """Everything written to the pty whose leader side is ``leader``, once its other side is closed."""
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other side is closed and drained
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)
