"""``swarm reconcile --watch --metrics-port``: the daemon's swarm_reconcile_* series after real passes
(an apply, hand-made drift healed, an invalid save), scraped from its port; the flags' errors."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Callable

from prometheus_client import generate_latest

from swarm.reconcile.loop import PassResult
from swarm.reconcile.metrics import ReconcileMetrics
from swarm.reconcile.plan import Action, ActionKind
from swarm.reconcile.status import Attempt, LastError, ReconcileStatus, Revision, now_iso
from tests.reconcile.conftest import Daemon, run_cli
from tests.registry.conftest import RegistryProcess
from tests.support.metrics import Samples, parse, scrape_until
from tests.support.services import free_port


def test_daemon_metrics_follow_its_passes(live: RegistryProcess, spec_dir: Path,
                                          daemon_factory: Callable[..., Daemon]) -> None:
    port = free_port()
    d = daemon_factory(spec_dir, "--metrics-port", str(port))
    url = f"http://127.0.0.1:{port}/metrics"
    d.wait_for(lambda s: s.state == "synced")
    s = scrape_until(url, lambda s: s.value("swarm_reconcile_passes_total", state="synced") >= 1)
    assert s.value("swarm_reconcile_sync_state", state="synced") == 1
    assert s.get_value("swarm_reconcile_sync_state", state="invalid-spec") == 0
    assert s.value("swarm_reconcile_last_success_timestamp_seconds") > 0
    assert s.value("swarm_reconcile_pass_duration_seconds_count") >= 1
    assert s.value("swarm_reconcile_actions_applied_total", kind="push-catalog") == 1  # the first apply
    assert s.value("swarm_reconcile_lease_held") == 1
    assert s.get_value("swarm_reconcile_drift_healed_total", kind="write-acl-table") == 0
    assert sum(v for (n, _), v in s.items() if n == "swarm_reconcile_errors_total") == 0

    r: Any = live.redis.client(decode_responses=True)
    try:
        r.delete("swarm:{research}:acl")  # drift by hand, as with redis-cli
        d.wait_for(lambda s: s.drift_at is not None and "write the ACL table" in s.drift)
    finally:
        r.close()
    s = scrape_until(url, lambda s: s.value("swarm_reconcile_drift_healed_total", kind="write-acl-table") == 1)
    assert s.value("swarm_reconcile_actions_applied_total", kind="write-acl-table") == 2  # the first apply + the heal
    assert s.value("swarm_reconcile_actions_applied_total", kind="push-catalog") == 1  # nothing else was redone
    success = s.value("swarm_reconcile_last_success_timestamp_seconds")

    workers = spec_dir / "agents" / "workers.yaml"
    workers.write_text(workers.read_text().replace("role: worker", "role: wroker", 1))
    d.wait_for(lambda s: s.state == "invalid-spec")

    def invalid(s: Samples) -> bool:
        return s.value("swarm_reconcile_sync_state", state="invalid-spec") == 1

    s = scrape_until(url, invalid)
    assert s.get_value("swarm_reconcile_sync_state", state="synced") == 0
    assert s.value("swarm_reconcile_errors_total", kind="spec") >= 1
    assert s.value("swarm_reconcile_passes_total", state="invalid-spec") >= 1
    assert s.value("swarm_reconcile_last_success_timestamp_seconds") == success  # no synced pass since
    assert s.value("swarm_reconcile_last_pass_timestamp_seconds") >= success


def test_metrics_port_needs_watch_and_a_free_port(live: RegistryProcess, spec_dir: Path, tmp_path: Path) -> None:
    urls = ("--registry-url", live.url, "--redis-url", live.redis.url, "--compiled-dir", "")
    once = run_cli("reconcile", str(spec_dir), "--metrics-port", "9", *urls, cwd=tmp_path)
    assert once.returncode == 2 and "--metrics-port needs --watch" in once.stderr
    bad = run_cli("reconcile", str(spec_dir), "--watch", "--metrics-port", "70000", *urls, cwd=tmp_path)
    assert bad.returncode == 2 and "must be a port number" in bad.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run_cli("reconcile", str(spec_dir), "--watch", "--metrics-port", str(port), *urls, cwd=tmp_path)
    assert busy.returncode == 2 and f"cannot serve metrics on 127.0.0.1:{port}" in busy.stderr, busy.stderr


# --------------------------------------------------------------------------- the accounting of one pass (pure)


def _result(state: str, *, error_kind: str | None = None, applied: int = 0, drift: bool = False,
            status: bool = True) -> PassResult:
    st = None
    if status:
        st = ReconcileStatus(swarm="research", state=state, drift_at="2000-01-01T00:00:00+00:00")
        st.last_attempted = Attempt(revision=Revision(), digest=None, at=now_iso(), trigger="test")
        if drift:
            st.drift_at = now_iso()  # after the attempt began: this pass recorded it
        if error_kind is not None:
            st.last_error = LastError(kind=error_kind, message="x", at=now_iso())  # type: ignore[arg-type]
    actions = [Action(ActionKind.CREATE_STREAM, f"t{i}", "create a stream") for i in range(applied)]
    return PassResult(state=state, status=st, applied=actions)


def test_pass_accounting_by_state_error_kind_and_drift() -> None:
    m = ReconcileMetrics()
    m.pass_ended(_result("synced", applied=2), 0.2, now=100.0)  # a new spec applied: not drift
    m.pass_ended(_result("synced", applied=1, drift=True), 0.1, now=110.0)
    m.pass_ended(_result("waiting", error_kind="transient"), 0.3, now=120.0)
    m.pass_ended(_result("waiting"), 0.01, now=125.0)  # the lease could not be taken: no last_error
    m.pass_ended(_result("error", status=False), 0.01, now=130.0)  # the watch loop caught a bug
    m.pass_ended(_result("refused", error_kind="refused"), 0.01, now=131.0)
    m.pass_ended(_result("standby"), 0.01, now=140.0)
    s = parse(generate_latest(m.registry).decode())
    assert s.value("swarm_reconcile_actions_applied_total", kind="create-stream") == 3
    assert s.value("swarm_reconcile_drift_healed_total", kind="create-stream") == 1
    assert {k: s.value("swarm_reconcile_errors_total", kind=k) for k in ("transient", "lease", "unexpected", "refused", "spec")} \
        == {"transient": 1, "lease": 1, "unexpected": 1, "refused": 1, "spec": 0}
    assert s.value("swarm_reconcile_last_success_timestamp_seconds") == 110.0
    assert s.value("swarm_reconcile_last_pass_timestamp_seconds") == 140.0
    assert s.value("swarm_reconcile_sync_state", state="standby") == 1
    assert sum(v for (n, _), v in s.items() if n == "swarm_reconcile_sync_state") == 1
    assert s.get_value("swarm_reconcile_lease_held") == 0
    assert s.value("swarm_reconcile_pass_duration_seconds_count") == 7
    assert s.value("swarm_reconcile_pass_duration_seconds_bucket", le="0.25") == 6
    assert s.value("swarm_reconcile_passes_total", state="synced") == 2
