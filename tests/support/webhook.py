"""A real HTTP receiver for notification tests: ``http.server`` on a free port, in a thread.

It records every request (path, headers, JSON body) and answers from a script:
``statuses`` are the codes of the first requests (then 200), and with ``hold`` set
the handler of the first request blocks until :meth:`Receiver.release` (a hung
receiver): :attr:`Receiver.arrived` is set when that request is in, and
:attr:`Receiver.answered` counts the requests answered so far.

    with Receiver(statuses=[500, 500]) as receiver:
        ...  # post to receiver.url
        receiver.wait_for(3)
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Sequence


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> Any:
        return json.loads(self.raw)


class Receiver:
    def __init__(self, statuses: Sequence[int] = (), *, hold: bool = False) -> None:
        self.statuses = list(statuses)
        self.requests: list[Received] = []
        self.answered = 0
        self.arrived = threading.Event()
        self._release = threading.Event()
        if not hold:
            self._release.set()
        self._held = hold
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._cond:
                    receiver.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, raw))
                    index = len(receiver.requests) - 1
                    status = receiver.statuses[index] if index < len(receiver.statuses) else 200
                    receiver._cond.notify_all()
                if index == 0 and receiver._held:
                    receiver.arrived.set()
                    receiver._release.wait(60)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                with receiver._cond:
                    receiver.answered += 1
                    receiver._cond.notify_all()

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()

    def release(self) -> None:
        self._release.set()

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """The requests once at least ``count`` have arrived (AssertionError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} request(s), got {len(self.requests)}: "
                                         f"{[r.raw[:200] for r in self.requests]}")
                self._cond.wait(left)
            return list(self.requests)

    def triggers(self) -> list[str]:
        with self._cond:
            return [r.headers.get("x-swarm-trigger", "") for r in self.requests]
