"""Sends notifications (the adapter around :mod:`swarm.notify.rules`): httpx, one thread per target.

:class:`Notifier` is what the reconcile daemon holds. Its inputs never wait on a
network: each rendered notification goes into the target's bounded queue and a
background thread posts it, so a receiver that hangs or fails delays no reconcile
pass and no other target (each target has its own queue and thread).

* **Retries**: a network error, a 429 or a 5xx (:mod:`swarm.foreign_http` decides) is
  retried after :class:`swarm.backoff.Backoff`'s delay, up to the target's
  ``max_attempts``; then it is given up with a log line (``gave_up`` counts them).
  Another 4xx is not retried (the receiver refuses it; trying again will not help).
* **Full queue**: a notification that finds its target's queue full is dropped with a
  log line (``dropped`` counts them); the queue holds ``queue_size`` notifications.
* :meth:`Notifier.close` waits (at most ``timeout`` seconds) for the queues to drain.

The counters are per target in :attr:`Notifier.counts`: ``sent``, ``gave_up``, ``dropped``.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from typing import Any, Callable, Mapping, Sequence

import httpx

from swarm.backoff import Backoff
from swarm.errors import SwarmError, TransientError
from swarm.foreign_http import http_status_error, http_transport_error
from swarm.notify.rules import (
    EventMemory,
    Notice,
    PassView,
    SyncMemory,
    Target,
    event_notices,
    pass_notices,
    protection_notices,
    render,
    resolve_targets,
)
from swarm.spec.models import Notification

log = logging.getLogger("swarm.notify")

#: Notifications a target's queue holds before new ones are dropped.
QUEUE_SIZE = 100
_STOP = object()


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat()


class _Worker:
    """The queue and the sending thread of one target."""

    def __init__(self, target: Target, counts: dict[str, int], lock: threading.Lock, *, queue_size: int,
                 backoff_base: float, backoff_cap: float) -> None:
        self.target = target
        self.counts = counts
        self._lock = lock
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._backoff_args = (backoff_base, backoff_cap)
        self._thread = threading.Thread(target=self._run, name=f"swarm-notify-{target.name}", daemon=True)
        self._thread.start()

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def offer(self, notice: Notice) -> None:
        try:
            self.queue.put_nowait(notice)
        except queue.Full:
            self._count("dropped")
            log.warning("notification %s: queue full (%d waiting); dropped %s", self.target.name,
                        self.queue.qsize(), notice.trigger)

    def stop(self) -> None:
        """Send what is queued, then end the thread (without blocking: a full queue ends it later)."""
        threading.Thread(target=self.queue.put, args=(_STOP,), daemon=True).start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        with httpx.Client(follow_redirects=False) as client:
            while True:
                item = self.queue.get()
                try:
                    if item is _STOP:
                        return
                    self._deliver(client, item)
                except Exception:  # a bug must not end the sender: say so, go on with the next one
                    log.exception("notification %s: sending failed unexpectedly", self.target.name)
                finally:
                    self.queue.task_done()

    def _deliver(self, client: httpx.Client, notice: Notice) -> None:
        target = self.target
        body, headers = render(notice, target)
        backoff = Backoff(base=self._backoff_args[0], cap=self._backoff_args[1])
        what = f"notification {target.name} ({notice.trigger})"
        for attempt in range(1, target.max_attempts + 1):
            try:
                response = client.post(target.url, content=body, headers=headers, timeout=target.timeout)
                error: SwarmError | None = None if response.is_success else http_status_error(
                    response, what, peer="receiver")
            except httpx.HTTPError as exc:
                error = http_transport_error(exc, what, peer="receiver")
            if error is None:
                self._count("sent")
                if attempt > 1:
                    log.info("%s: delivered at attempt %d", what, attempt)
                return
            if not isinstance(error, TransientError):
                self._count("gave_up")
                log.error("%s: refused, not retried: %s", what, error)
                return
            if attempt < target.max_attempts:
                delay = backoff.next_delay()
                log.warning("%s: attempt %d of %d failed (%s); retrying in %.1fs", what, attempt,
                            target.max_attempts, error, delay)
                threading.Event().wait(delay)
            else:
                self._count("gave_up")
                log.error("%s: giving up after %d attempts: %s", what, attempt, error)


class Notifier:
    """The notifications of one reconcile daemon: feed it passes, events and the protection flag.

    Thread-safe (passes end on a worker thread, events arrive on the event loop)."""

    def __init__(self, *, env: Mapping[str, str] | None = None, queue_size: int = QUEUE_SIZE,
                 backoff_base: float = 0.5, backoff_cap: float = 30.0, clock: Callable[[], str] = _now) -> None:
        self._env = os.environ if env is None else env
        self._queue_size = queue_size
        self._backoff = (backoff_base, backoff_cap)
        self._clock = clock
        self._lock = threading.Lock()
        self._workers: dict[Target, _Worker] = {}
        self._config: tuple[str, tuple[Notification, ...]] | None = None
        self._sync = SyncMemory()
        self._events = EventMemory()
        #: the last pass was this process's (not a standby's): only then are events notified
        self.active = False
        self.swarm: str | None = None
        #: per target name: sent, gave_up, dropped
        self.counts: dict[str, dict[str, int]] = {}

    def snapshot(self) -> dict[str, dict[str, int]]:
        """A copy of :attr:`counts`, taken under the lock (for the metrics scrape)."""
        with self._lock:
            return {name: dict(counts) for name, counts in self.counts.items()}

    # ------------------------------------------------------------------ configuration

    def configure(self, swarm: str, notifications: Sequence[Notification]) -> None:
        """Use these targets from now on (cheap when unchanged: called at every pass)."""
        key = (swarm, tuple(notifications))
        with self._lock:
            if key == self._config:
                return
            self._config = key
            if swarm != self.swarm:
                self._sync, self._events = SyncMemory(), EventMemory()
            self.swarm = swarm
            targets, problems = resolve_targets(notifications, self._env)
            for problem in problems:
                log.error("%s", problem)
            for target in [t for t in self._workers if t not in targets]:
                self._workers.pop(target).stop()
            for target in targets:
                if target not in self._workers:
                    counts = self.counts.setdefault(target.name, {"sent": 0, "gave_up": 0, "dropped": 0})
                    self._workers[target] = _Worker(target, counts, self._lock, queue_size=self._queue_size,
                                                    backoff_base=self._backoff[0], backoff_cap=self._backoff[1])

    def _send(self, notices: list[Notice]) -> None:
        if not notices:
            return
        with self._lock:
            workers = list(self._workers.items())
        for notice in notices:
            log.info("notify %s: %s", notice.trigger, notice.summary)
            for target, worker in workers:
                if target.wants(notice):
                    worker.offer(notice)

    # ------------------------------------------------------------------ inputs

    def pass_ended(self, source: Any, result: Any) -> None:
        """The reconcile loop's hook (``Reconciler.on_pass_end``): ``source`` the enforced
        :class:`~swarm.reconcile.loop.SpecSource`, ``result`` the pass's ``PassResult``."""
        try:
            spec = source.loaded.spec
            self.configure(spec.name, spec.swarm.notifications)
            view = pass_view(spec.name, source, result)
            with self._lock:
                self.active = result.state != "standby"
                notices, self._sync = pass_notices(self._sync, view, self._clock())
            self._send(notices)
        except Exception:  # notifying must never fail a pass
            log.exception("could not queue the notifications of a pass")

    def event(self, fields: Mapping[str, str]) -> None:
        """One entry of the registry's event stream (``{type, agent, data}``)."""
        with self._lock:
            if self.swarm is None:
                return
            notices, self._events = event_notices(self._events, fields, self.swarm, self._clock())
            if not self.active:  # a standby: the lease holder notifies
                notices = []
        self._send(notices)

    def protection(self, active: bool) -> None:
        """The registry's mass-eviction protection flag as just read."""
        with self._lock:
            if self.swarm is None:
                return
            notices, self._events = protection_notices(self._events, active, self.swarm, self._clock())
            if not self.active:
                notices = []
        self._send(notices)

    def close(self, timeout: float = 5.0) -> None:
        """Let the queued notifications go out, waiting at most ``timeout`` seconds in all."""
        import time

        with self._lock:
            workers = list(self._workers.values())
            self._workers.clear()
            self._config = None
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
            left = worker.queue.qsize()
            if left:
                log.warning("notification %s: %d not sent before exit", worker.target.name, left)


def _at(iso: str) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return 0.0


def pass_view(swarm: str, source: Any, result: Any) -> PassView:
    """A :class:`PassView` of a ``PassResult`` (duck-typed: this module does not import the loop)."""
    from swarm.errors import SpecError

    status = result.status
    attempted = status.last_attempted if status is not None else None
    applied_descriptions = tuple(a.description for a in result.applied)
    healed = False
    if status is not None and result.applied and status.drift_at and attempted is not None:
        # the loop records drift (status.drift, drift_at) only when a pass undid changes
        # to the spec it already had applied; drift_at of this pass is newer than its attempt
        healed = _at(status.drift_at) >= _at(attempted.at) and tuple(status.drift) == applied_descriptions
    revision = source.revision
    error = result.error
    return PassView(
        swarm=swarm,
        state=result.state,
        digest=source.digest,
        attempted_digest=attempted.digest if attempted is not None else None,
        revision=revision.label(),
        commit=revision.commit,
        cause=attempted.trigger if attempted is not None else "",
        applied=applied_descriptions,
        healed=healed,
        error=str(error) if error is not None else None,
        issues=tuple(i.to_dict() for i in error.issues) if isinstance(error, SpecError) else (),
        message=status.message if status is not None else "",
    )
