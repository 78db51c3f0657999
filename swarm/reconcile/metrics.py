"""Prometheus series of the reconcile daemon (``swarm_reconcile_*``).

``swarm reconcile --watch --metrics-port PORT`` creates one :class:`ReconcileMetrics`,
hands it to :meth:`Reconciler.watch <swarm.reconcile.loop.Reconciler.watch>` (which
calls :meth:`ReconcileMetrics.pass_ended` once per pass, with the pass's wall time)
and serves its registry with :func:`serve`. Everything is derived from the
:class:`~swarm.reconcile.loop.PassResult` alone, so the loop needs no other hook:

* sync state: one gauge per state, 1 for the state of the last pass;
* the time of the last pass and of the last ``synced`` one;
* pass duration (histogram) and passes by resulting state;
* actions applied and drift healed, by action kind: a pass healed drift when it
  applied actions and recorded them as drift (the status's ``drift_at`` is of this
  pass: the loop sets it only when the spec did not change, see
  ``Reconciler._record_converged``);
* errors by kind: the kind of the status's ``last_error`` (spec, transient, refused,
  verify, permanent), ``lease`` when the lease could not be taken, ``unexpected`` for a
  bug the watch loop caught;
* whether this process holds the reconcile lease (0 while standing by);
* notifications by target and outcome (sent, gave_up, dropped), read at scrape time from
  the daemon's notifier (:meth:`ReconcileMetrics.track_notifications`).

docs/metrics.md lists every series.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from swarm.errors import PermanentError
from swarm.reconcile.plan import ActionKind

#: Every state a pass can end in (``PassResult.state``).
PASS_STATES = ("synced", "changes-pending", "invalid-spec", "refused", "error", "waiting", "standby")
#: Kinds of ``swarm_reconcile_errors_total``.
ERROR_KINDS = ("spec", "transient", "refused", "verify", "permanent", "lease", "unexpected")
FAILED = frozenset({"invalid-spec", "refused", "error", "waiting"})
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ReconcileMetrics:
    """The named series on their own registry (several daemons in one process never collide)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.sync_state = Gauge("swarm_reconcile_sync_state", "1 for the state the last reconcile pass ended in.",
                                ["state"], registry=r)
        self.passes = Counter("swarm_reconcile_passes_total", "Reconcile passes by the state they ended in.",
                              ["state"], registry=r)
        self.duration = Histogram("swarm_reconcile_pass_duration_seconds",
                                  "Wall time of one reconcile pass (observe, plan, apply, verify, record).",
                                  registry=r, buckets=BUCKETS)
        self.last_pass = Gauge("swarm_reconcile_last_pass_timestamp_seconds",
                               "Unix time the last reconcile pass ended.", registry=r)
        self.last_success = Gauge("swarm_reconcile_last_success_timestamp_seconds",
                                  "Unix time the last pass that ended synced ended (0: none yet).", registry=r)
        self.applied = Counter("swarm_reconcile_actions_applied_total", "Actions applied, by action kind.",
                               ["kind"], registry=r)
        self.drift_healed = Counter("swarm_reconcile_drift_healed_total",
                                    "Actions that undid hand-made drift (the spec had not changed), by action kind.",
                                    ["kind"], registry=r)
        self.errors = Counter("swarm_reconcile_errors_total", "Passes that did not converge, by kind of error.",
                              ["kind"], registry=r)
        self.lease_held = Gauge("swarm_reconcile_lease_held",
                                "1 while this process holds the reconcile lease (it applies), 0 while it stands by.",
                                registry=r)
        for state in PASS_STATES:
            self.sync_state.labels(state).set(0)
            self.passes.labels(state)
        for kind in ERROR_KINDS:
            self.errors.labels(kind)
        for action in ActionKind:
            self.applied.labels(action.value)
            self.drift_healed.labels(action.value)

    def track_notifications(self, counts: Callable[[], Mapping[str, Mapping[str, int]]]) -> None:
        """Export ``swarm_reconcile_notifications_total{target,outcome}`` from ``counts()``
        (per target name: sent, gave_up, dropped), read at every scrape."""
        self.registry.register(_NotificationCounts(counts))

    def pass_ended(self, result: Any, seconds: float, *, now: float | None = None) -> None:
        """Account one pass: ``result`` is its :class:`~swarm.reconcile.loop.PassResult`."""
        now = time.time() if now is None else now
        state = result.state if result.state in PASS_STATES else "error"
        for s in PASS_STATES:
            self.sync_state.labels(s).set(1 if s == state else 0)
        self.passes.labels(state).inc()
        self.duration.observe(max(0.0, seconds))
        self.last_pass.set(now)
        self.lease_held.set(0 if state == "standby" else 1)
        if state == "synced":
            self.last_success.set(now)
        for action in result.applied:
            self.applied.labels(action.kind.value).inc()
        if healed_drift(result):
            for action in result.applied:
                self.drift_healed.labels(action.kind.value).inc()
        kind = error_kind(result)
        if kind is not None:
            self.errors.labels(kind).inc()


#: Outcomes of ``swarm_reconcile_notifications_total``.
NOTIFICATION_OUTCOMES = ("sent", "gave_up", "dropped")


class _NotificationCounts(Collector):
    _labelnames = ("target", "outcome")

    def __init__(self, counts: Callable[[], Mapping[str, Mapping[str, int]]]) -> None:
        self._counts = counts

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily("swarm_reconcile_notifications", "Notifications by target and outcome.",
                                  labels=["target", "outcome"])

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("swarm_reconcile_notifications",
                                     "Notifications by target and outcome: sent (accepted by the receiver), "
                                     "gave_up (every attempt failed), dropped (the target's queue was full).",
                                     labels=["target", "outcome"])
        for target, counts in sorted(self._counts().items()):
            for outcome in NOTIFICATION_OUTCOMES:
                family.add_metric([target, outcome], counts.get(outcome, 0))
        yield family


def healed_drift(result: Any) -> bool:
    """Whether the pass undid hand-made drift: it applied actions and recorded them as drift in this pass."""
    status = result.status
    if not result.applied or status is None or status.drift_at is None or status.last_attempted is None:
        return False
    return bool(status.drift_at >= status.last_attempted.at)  # ISO 8601 UTC strings of one format


def error_kind(result: Any) -> str | None:
    """The kind counted in ``swarm_reconcile_errors_total`` for a pass that did not converge, else None."""
    if result.state not in FAILED:
        return None
    status = result.status
    if status is not None and status.last_error is not None and status.last_error.kind in ERROR_KINDS:
        return str(status.last_error.kind)
    if result.state == "invalid-spec":
        return "spec"
    if result.state == "waiting":
        return "lease" if status is not None and status.last_error is None else "transient"
    if status is None:
        return "unexpected"
    return "permanent"


class MetricsServer:
    """The HTTP server of :func:`serve`; ``close()`` stops it."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.port = int(server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(metrics: ReconcileMetrics, port: int, host: str = "127.0.0.1") -> MetricsServer:
    """Serve ``metrics`` on http://host:port/metrics (prometheus_client's threaded server); PermanentError
    when the address cannot be bound."""
    try:
        server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise PermanentError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
    return MetricsServer(server, thread)
