"""Benchmark: what notifying costs a reconcile pass, with a healthy and with a hung receiver.

Run from the repository root::

    .venv/bin/python -m bench.bench_notify [--passes 2000]

The reconcile loop calls ``Notifier.pass_ended`` at the end of each pass. This measures
that call alone (turning the PassResult into a view, the rules, rendering nothing yet,
the queue put) for passes that each fail with a new error (so each one is notified),
in three set-ups measured in the same run:

* **floor**: a notifier without targets (the rules run, nothing is queued);
* **fast**: one target, a local ``http.server`` receiver answering 200 at once;
* **hung**: one target whose receiver never answers (each post waits its timeout).

Prints p50/p99 per call and the ratios to the floor, and how many notifications the
fast receiver got per second (the background sender's throughput). The hung case
also shows the bounded queue at work: once 100 are waiting the rest are dropped.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from swarm.desired import desired_from_spec
from swarm.errors import PermanentError
from swarm.notify.sender import Notifier
from swarm.reconcile.loop import PassResult, SpecSource
from swarm.reconcile.status import Attempt, ReconcileStatus, Revision, now_iso
from swarm.spec.loader import load_spec_full
from swarm.spec.models import Notification

REPO = Path(__file__).resolve().parents[1]


def receiver(hang: threading.Event | None) -> tuple[ThreadingHTTPServer, list[int]]:
    got: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if hang is not None:
                hang.wait(120)
            got.append(1)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, got


def measure(notifier: Notifier, source: SpecSource, passes: int) -> list[float]:
    times = []
    for i in range(passes):
        status = ReconcileStatus(swarm="research", state="error", message=f"error {i}",
                                 last_attempted=Attempt(revision=Revision(), digest=source.digest, at=now_iso(), trigger="resync"))
        result = PassResult(state="error", error=PermanentError(f"apply failed: error {i}"), status=status)
        start = time.perf_counter()
        notifier.pass_ended(source, result)
        times.append(time.perf_counter() - start)
    return times


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--passes", type=int, default=2000)
    args = parser.parse_args()
    quiet = logging.getLogger("swarm.notify")  # the drop lines are still made (their cost counts), not printed
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    loaded = load_spec_full(REPO / "specs")

    def source_with(url: str | None) -> SpecSource:
        notes = [] if url is None else [Notification(name="hook", url=url, triggers=["on-sync-failed"], timeout_seconds=60)]
        spec = loaded.spec.model_copy(update={"swarm": loaded.spec.swarm.model_copy(update={"notifications": notes})})
        return SpecSource(dataclasses.replace(loaded, spec=spec), desired_from_spec(spec, loaded.digest), Revision())

    rows = []
    floor = measure(Notifier(), source_with(None), args.passes)
    rows.append(("floor (no target)", floor))

    fast_server, got = receiver(None)
    fast = Notifier(queue_size=args.passes + 1)
    started = time.perf_counter()
    fast_times = measure(fast, source_with(f"http://127.0.0.1:{fast_server.server_address[1]}/"), args.passes)
    fast.close(timeout=120)
    elapsed = time.perf_counter() - started
    rows.append(("fast receiver", fast_times))

    hang = threading.Event()
    hung_server, _ = receiver(hang)
    hung = Notifier()
    hung_times = measure(hung, source_with(f"http://127.0.0.1:{hung_server.server_address[1]}/"), args.passes)
    dropped = hung.counts["hook"]["dropped"]
    rows.append(("hung receiver", hung_times))
    hang.set()
    hung.close(timeout=5)

    base = statistics.median(floor)
    print(f"{args.passes} passes, each notified (a new error each time)")
    print("| set-up | p50 per pass_ended | p99 | ratio p50 / floor |")
    print("|---|---|---|---|")
    for name, times in rows:
        print(f"| {name} | {pct(times, 50):.0f} µs | {pct(times, 99):.0f} µs | {statistics.median(times) / base:.2f}x |")
    print(f"fast receiver: {len(got)} delivered in {elapsed:.2f} s ({len(got) / elapsed:.0f}/s, one sender thread)")
    print(f"hung receiver: {dropped} dropped (queue of 100 full), passes not slowed")
    fast_server.shutdown()
    hung_server.shutdown()


if __name__ == "__main__":
    main()
