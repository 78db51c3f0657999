"""The reconcile loop: read spec → observe → plan → apply → verify → record status, forever.

Called by ``swarm reconcile`` (``--once`` runs :meth:`Reconciler.run_pass`,
``--watch`` runs :meth:`Reconciler.watch`) and by ``swarm up``.

Why it is built this way:

* **Level-triggered.** A pass never remembers what it did last time; it reads
  the spec, observes the live system and applies the difference. File events,
  git ref moves, the resync timer and retries all just ask for another pass, so
  a burst of saves collapses into one pass and a pass killed half-way is
  repaired by the next one.
* **Incremental between full comparisons.** The one thing kept is the desired
  state the last converged pass applied: a pass triggered by a save (or a git
  ref move) diffs the new desired state against it and applies only that
  (:mod:`swarm.reconcile.delta`: the catalog as PATCH /catalog, Redis users,
  mailboxes and streams of the agents and topics touched), without observing.
  The first pass, the resync timer, retries, a restarted Redis, a lease change
  and any failure (a 409 from the registry: someone else pushed) run the full
  observe-and-diff, which heals whatever drifted meanwhile.
* **The last valid spec stays enforced.** An invalid save records its errors
  (with positions) in status and the pass goes on enforcing the newest valid
  spec, so hand-made drift is still healed while the user fixes the typo. The
  files of the last applied spec are kept in Redis beside the status, so a
  daemon *restarted* onto an invalid spec reads them back and enforces them too.
* **Never exits on a transient fault.** :class:`~swarm.errors.TransientError`
  (Redis or registry down) makes the pass end with ``waiting`` in status and a
  retry after :mod:`swarm.backoff`'s capped exponential backoff with jitter.
* **One writer per swarm.** With real ports a pass first takes (or renews) the
  reconcile lease (:mod:`swarm.reconcile.lease`) and every write is fenced by its
  token; without it the pass only reports ``standby`` (who holds the lease), and
  ``--watch`` tries again every third of the lease TTL.
* **Redis restarts heal at once.** ACL users live in memory only (AOF does not
  keep them), so each pass notes Redis' ``run_id`` (INFO server, new at every
  start) and ``--watch`` reads it again every ``redis_check_seconds``; a
  different one starts a pass that reads every user back and re-creates the
  missing ones, without waiting for the resync timer. The same task renews
  the lease.
* **Blocking work in a thread.** The ports are synchronous (httpx, redis-py);
  :meth:`watch` runs each pass with ``asyncio.to_thread`` while ``awatch``
  keeps collecting events; ``stop_event`` ends both (watchfiles' ``awatch``
  takes it and returns).
* **Compiled output after the live system.** ``compiled/`` is written (only the
  files that changed) *after* the apply, so the latency a user sees from save
  to live system does not include rendering every agent's files.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

from swarm.backoff import Backoff
from swarm.desired import CatalogText, DesiredMemo, DesiredState, desired_from_spec
from swarm.errors import (
    ConflictError,
    InvalidRequestError,
    NotDeclaredError,
    PermanentError,
    SpecError,
    SpecIssue,
    SwarmError,
    TransientError,
)
from swarm.heap import HeapSettler
from swarm.reconcile.apply import CatalogPatch, apply_plan
from swarm.reconcile.delta import desired_delta, incremental_plan
from swarm.redis_auth import with_password
from swarm.reconcile.lease import DEFAULT_TTL, Fence, Lease, LeaseLost, read_lease
from swarm.reconcile.gitsource import (
    changed_files,
    fetch_branch,
    read_spec_at,
    ref_watch_paths,
    remote_branch,
    repo_root,
    resolve_ref,
    walked,
    working_revision,
)
from swarm.reconcile.history import history_fields
from swarm.reconcile.history import parse_pin as parse_history_pin
from swarm.reconcile.plan import Action, Plan, desired_user_rights, plan_actions
from swarm.reconcile.state import ActualState, BusPort, RegistryPort, observe
from swarm.reconcile.status import (
    Applied,
    Attempt,
    FetchInfo,
    LastError,
    LiveSummary,
    PinInfo,
    ReconcileStatus,
    Revision,
    now_iso,
    parse_status,
    short_digest,
)
from swarm.spec.files import compute_digest, read_spec_files

if TYPE_CHECKING:  # the parser and models load on a full load only: `swarm plan` of cached bytes skips them
    from swarm.spec.loader import DocumentCache, LoadedSpec

log = logging.getLogger("swarm.reconcile")

#: Pass results recorded in the history besides applied revisions (each kind once while it lasts).
FAILED_PASS_STATES = frozenset({"invalid-spec", "refused", "error", "waiting"})

LIVE_STATUSES = frozenset({"healthy", "critical", "live"})
EXPIRED_STATUSES = frozenset({"expiring", "expired"})
#: An incremental pass re-reads the live summary at most this often (seconds); see ``Reconciler._refresh_live``.
LIVE_REFRESH_SECONDS = 5.0


class StatusSink(Protocol):
    """Where status is kept (Redis in production). Errors: swarm.errors types only.

    Besides the status document it keeps the last applied spec (its files, as
    :func:`applied_spec_json` writes them), read back after a restart onto an
    invalid spec.
    """

    def read_status(self) -> str | None: ...

    def write_status(self, text: str) -> None: ...

    def read_applied_spec(self) -> str | None: ...

    def write_applied_spec(self, text: str) -> None: ...

    def append_history(self, fields: dict[str, str]) -> None: ...

    def read_pin(self) -> str | None: ...

    def write_pin(self, text: str | None) -> None: ...

    def read_hook(self) -> str | None: ...


@dataclass
class Ports:
    """The live system as one pass sees it."""

    registry: RegistryPort
    bus: BusPort
    status: StatusSink
    close: Callable[[], None] = lambda: None
    #: the fence of the reconcile lease every write of the bus port checks (None: unfenced)
    set_fence: Callable[[Fence | None], None] = lambda _fence: None
    #: raises LeaseLost unless the lease still holds the fence's token (before registry writes)
    check_fence: Callable[[], None] = lambda: None
    #: a redis-py client of the bus' Redis for the lease and the restart check (None: no lease)
    lease_client: object | None = None


class PassMetrics(Protocol):
    """What :meth:`Reconciler.watch` tells of each pass (:class:`swarm.reconcile.metrics.ReconcileMetrics`)."""

    def pass_ended(self, result: PassResult, seconds: float) -> None: ...


PortsFactory = Callable[[DesiredState, "ReconcileConfig"], Ports]
#: Where to keep status before any valid spec was seen: (swarm name, Redis URL) -> sink.
StatusFallback = Callable[[str, str], StatusSink]


@dataclass
class ReconcileConfig:
    """Options of ``swarm reconcile``; durations in seconds, debounce/step in milliseconds."""

    spec_paths: list[Path]
    rev: str | None = None
    #: the environment overlay to apply (``--env``; :mod:`swarm.spec.environments`)
    environment: str | None = None
    prune: bool = False
    force_prune: bool = False
    dry_run: bool = False
    registry_url: str | None = None
    redis_url: str | None = None
    #: password of Redis' default user, applied to a Redis URL without credentials (see :mod:`swarm.redis_auth`)
    redis_password: str | None = None
    resync_seconds: float = 30.0
    compiled_dir: Path | None = None
    #: with ``rev`` naming a remote branch (``origin/main``): fetch it this often (jittered
    #: ±20%) and on each git webhook delivery; 0 never fetches
    fetch_seconds: float = 60.0
    debounce_ms: int = 80
    step_ms: int = 15
    backoff_initial: float = 0.1
    backoff_max: float = 5.0
    #: reconcile lease TTL (seconds; 0 takes no lease); used when the ports offer a lease client
    lease_ttl: float = DEFAULT_TTL
    #: how often ``--watch`` reads Redis' run_id to notice a restart (and renews the lease)
    redis_check_seconds: float = 0.5
    #: Fault-injection hook for tests (``SWARM_FAULT_PAUSE_AFTER``): after applying the
    #: first action of this kind (an :class:`ActionKind` value) the pass stops — for good,
    #: so a test can SIGKILL the daemon at a known point of an apply, or, with
    #: ``resume_file`` (``SWARM_FAULT_RESUME_FILE``), until that file exists, so a test
    #: can stop Redis or the registry in the middle of an apply. Once per process.
    pause_after: str | None = None
    resume_file: Path | None = None

    def bus_redis_url(self, spec_url: str) -> str:
        """The Redis URL to use: ``redis_url`` (else the spec's), with ``redis_password`` when it has no credentials."""
        return with_password(self.redis_url or spec_url, self.redis_password)


@dataclass(frozen=True)
class SpecSource:
    """A valid spec and where it came from."""

    loaded: LoadedSpec
    desired: DesiredState
    revision: Revision
    files: Mapping[str, bytes] = field(default_factory=dict)  # the bytes it was parsed from

    @property
    def digest(self) -> str:
        return self.loaded.digest


@dataclass
class PassResult:
    """What one pass did; ``retry_in`` is set when a transient fault wants a retry."""

    state: str
    plan: Plan | None = None
    applied: list[Action] = field(default_factory=list)
    error: SwarmError | None = None
    retry_in: float | None = None
    status: ReconcileStatus | None = None


class Reconciler:
    """One swarm's reconcile loop. Thread-compatible: passes run one at a time."""

    def __init__(
        self, config: ReconcileConfig, ports_factory: PortsFactory, status_fallback: StatusFallback | None = None
    ) -> None:
        self.config = config
        self._ports_factory = ports_factory
        self._status_fallback = status_fallback
        self._fallback_sinks: dict[tuple[str, str], StatusSink] = {}
        self._invalid_files: dict[str, bytes] | None = None
        self._ports: dict[tuple[str, str], Ports] = {}
        self.good: SpecSource | None = None  # newest valid spec: the one enforced
        self.status: ReconcileStatus | None = None
        self._cache_key: object = None
        self._cache: SpecSource | SpecError | None = None
        #: parsed files of earlier passes: a save re-parses only the files whose bytes changed
        self._documents: DocumentCache | None = None  # made at the first full load
        self._desired_memo = DesiredMemo()  # and each unchanged agent's desired pieces
        self._invalid_attempt: Attempt | None = None  # revision and digest of the cached invalid spec
        self._backoff = Backoff(base=config.backoff_initial, cap=config.backoff_max)
        self._lease: Lease | None = None
        self._run_id: str | None = None  # Redis' run_id when the last pass started
        self._pool: ThreadPoolExecutor | None = None
        self._compiled_digest: str | None = None
        #: the desired state whose Redis users this process last wrote (their rights are derived
        #: from it when a full pass needs them: ~30 ms at 10,000 agents, not on every save)
        self._written_for: DesiredState | None = None
        #: what this process's last converged pass applied: watch-triggered passes apply only what differs
        self._last_applied: _LastApplied | None = None
        self._live_read_at = float("-inf")  # monotonic time status.live was last read from the live system
        self.live_refresh_seconds = LIVE_REFRESH_SECONDS
        self._catalog_text = CatalogText()  # the catalog's digest, agent by agent
        self._stored_digest: str | None = None  # digest of the applied spec this process kept in Redis
        self._recovered = False  # self.good was read back from Redis, not from the spec files
        self._paused = False  # the fault hook (config.pause_after) has fired
        self._compiled = _CompiledWriter(config.compiled_dir) if config.compiled_dir and not config.rev else None
        self._repo = repo_root(config.spec_paths[0]) if config.rev else None
        if config.rev and self._repo is None:
            raise SpecError([SpecIssue(None, "", f"--rev needs a git repository; {config.spec_paths[0]} is not in one")])
        self._remote = remote_branch(self._repo, config.rev) if self._repo is not None and config.rev else None
        #: what following the remote branch last did (status "fetch"); None when not following one
        self.fetch_info = (FetchInfo(ref=config.rev or "", remote=self._remote[0], branch=self._remote[1],
                                     interval_seconds=config.fetch_seconds) if self._remote else None)
        self._pin: PinInfo | None = None  # a rollback pin read from Redis by the keeper
        self._pin_active = False  # the last read of the spec enforced the pin
        self._hook_seen: str | None = None
        self._last_history_commit: str | None = None
        self._last_failure: tuple[str, str | None, str] | None = None  # the failed pass last recorded
        #: called after every pass once a valid spec was seen (never in a dry run) with the spec
        #: enforced and the result: the notifications of ``swarm reconcile --watch``
        self.on_pass_end: Callable[[SpecSource, PassResult], None] | None = None

    # ------------------------------------------------------------------ spec

    def _read(self) -> tuple[object, Callable[[], tuple[dict[str, bytes], "Revision | Future[Revision]"]]]:
        """A cheap cache key for the current input, and how to read it."""
        if self.config.rev:
            assert self._repo is not None
            repo, rev = self._repo, self.config.rev
            commit = resolve_ref(repo, rev)
            pin = self._pin
            self._pin_active = pin is not None and pin.branch_commit == commit
            if pin is not None and self._pin_active:
                pinned = pin.commit
                return ("git", pinned), lambda: (
                    read_spec_at(repo, pinned, self.config.spec_paths),
                    Revision(source="git", commit=pinned, dirty=False, ref=f"rollback of {rev}"),
                )
            return ("git", commit), lambda: (
                read_spec_at(repo, commit, self.config.spec_paths),
                Revision(source="git", commit=commit, dirty=False, ref=rev),
            )
        files = read_spec_files(self.config.spec_paths)
        key = ("tree", compute_digest(files))

        def read() -> tuple[dict[str, bytes], Future[Revision]]:
            # `git rev-parse` + `git status` take tens of milliseconds; run them
            # while the caller parses (the revision is only needed afterwards).
            return files, self._revision_pool().submit(working_revision, self.config.spec_paths)

        return key, read

    def load(self) -> SpecSource:
        """The current spec (cached while its bytes or commit are unchanged); raises SpecError."""
        key, read = self._read()
        if key != self._cache_key or self._cache is None:
            from swarm.spec.loader import DocumentCache, parse_spec_texts

            if self._documents is None:
                self._documents = DocumentCache()
            files, pending = read()
            try:
                try:
                    loaded = parse_spec_texts(files, self.config.environment, cache=self._documents)
                    desired = desired_from_spec(loaded.spec, loaded.digest, self._desired_memo)
                finally:
                    revision = pending.result() if isinstance(pending, Future) else pending
                self._cache = SpecSource(loaded, desired, revision, files)
            except SpecError as exc:
                self._invalid_files = files
                self._invalid_attempt = Attempt(
                    revision=revision, digest=compute_digest(files), at=now_iso(), trigger=""
                )
                self._cache = exc
            self._cache_key = key
        if isinstance(self._cache, SpecError):
            raise self._cache
        return self._cache

    def load_desired(self) -> tuple[DesiredState, str]:
        """The current spec's desired state and digest, all that ``swarm plan`` needs; raises SpecError.

        From the working tree, through the cache across processes (:mod:`swarm.desired_cache`):
        bytes that loaded before are not parsed again. A miss loads in full (:meth:`load`, which
        reports an invalid spec's errors) and keeps the result, under the bytes it was parsed from."""
        if self.config.rev:
            source = self.load()
            return source.desired, source.digest
        from swarm import desired_cache

        files = read_spec_files(self.config.spec_paths)
        hit = desired_cache.lookup(files, self.config.environment)
        if hit is not None:
            return hit, hit.registry.spec_digest
        source = self.load()
        desired_cache.store(source.files, self.config.environment, source.desired)
        return source.desired, source.digest

    def _revision_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="swarm-git")
        return self._pool

    # ------------------------------------------------------------------ ports

    def ports_for(self, desired: DesiredState) -> Ports:
        key = (
            self.config.registry_url or desired.registry.settings.url,
            self.config.bus_redis_url(desired.bus.settings.redis_url),
        )
        if key not in self._ports:
            self._ports[key] = self._ports_factory(desired, self.config)
        return self._ports[key]

    def flush_compiled(self) -> None:
        """Wait until ``compiled/`` holds the newest applied spec (``swarm up --demo`` runs it)."""
        if self._compiled is not None:
            self._compiled.flush()

    def close(self) -> None:
        self.flush_compiled()
        if self._lease is not None:
            try:
                self._lease.release()  # a standby takes over at its next try, not after the TTL
                self._lease.clear_standby()
            except SwarmError as exc:
                log.warning("could not release the reconcile lease: %s", exc)
            self._lease = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for ports in self._ports.values():
            ports.close()
        self._ports.clear()
        for sink in self._fallback_sinks.values():
            close = getattr(sink, "close", None)
            if close is not None:
                close()
        self._fallback_sinks.clear()

    # ------------------------------------------------------------------ one pass

    def run_pass(self, trigger: str = "once") -> PassResult:
        """Reconcile once; never raises for spec, transient or permanent faults."""
        result = self._run_pass(trigger)
        if self.on_pass_end is not None and self.good is not None and not self.config.dry_run:
            self.on_pass_end(self.good, result)
        return result

    def _run_pass(self, trigger: str) -> PassResult:
        source, attempt, spec_error = self._current_spec(trigger)
        if source is None and spec_error is not None and not self.config.dry_run:  # a dry run reports the error
            source = self.good = self._recover_applied_spec()
        if source is None:
            assert spec_error is not None
            log.error("spec is invalid and no valid spec was seen yet:\n%s", spec_error)
            return self._record_without_spec(attempt, spec_error)
        new_spec = spec_error is None and (self.good is None or self.good.digest != source.digest)
        if spec_error is None:
            self.good = source
            self._recovered = False
        ports = self.ports_for(source.desired)
        standby = None if self.config.dry_run else self._take_lease(ports, source.desired.registry.swarm)
        if standby is not None:
            return standby
        if ports.lease_client is not None:  # the Redis process this pass sees (a restart changes it)
            run_id = _run_id(ports.lease_client)
            if run_id is not None and run_id != self._run_id:
                if self._run_id is not None:  # the keeper may not have ticked yet: say it here then
                    log.warning("Redis restarted (run_id %s -> %s): re-creating its users now", self._run_id, run_id)
                self._forget_writes()  # a new Redis process: none of the users written before is there
                self._run_id = run_id
        status = self._status_base(ports, source.desired.registry.swarm)
        status.passes += 1
        status.last_attempted = attempt
        status.fetch = self.fetch_info.model_copy() if self.fetch_info else None
        status.pinned = self._pin if self._pin_active else None
        status.pending = None  # unknown until this pass has planned
        self._end_stale_pin(ports)
        result = PassResult(state="synced", status=status)
        applied_before = status.last_applied
        try:
            self._reconcile(source, ports, result, trigger, changed=new_spec)
            if not self.config.dry_run:
                self._record_converged(source, attempt, result, new_spec=new_spec, spec_error=spec_error)
                if status.last_applied is not None and status.last_applied is not applied_before:
                    healed = (bool(result.applied) and not new_spec and applied_before is not None
                              and applied_before.digest == source.digest)
                    self._record_history(ports, status.last_applied, "drift-healed" if healed else "applied")
        except SwarmError as exc:
            self._record_failure(exc, result)
        if not self.config.dry_run and result.state in FAILED_PASS_STATES:
            self._record_failed_pass(ports, attempt, result)
        status.updated_at = now_iso()
        self.status = status
        if not self.config.dry_run:
            self._store_applied_spec(ports, source, status, rewrite=bool(result.applied))
            self._write_status(ports, status)
            if spec_error is None and result.state == "synced" and self._compiled_digest != source.digest:
                self._compiled_digest = source.digest
                self._write_compiled(source)
        return result

    # ------------------------------------------------------------------ git: history, rollback, fetch

    def _record_history(self, ports: Ports, applied: Applied, result: str) -> None:
        """Append the revision just applied to ``swarm history`` (never fails the pass)."""
        commit = applied.revision.commit
        files: list[str] = []
        if self._repo is not None and commit and self._last_history_commit and self._last_history_commit != commit:
            files = changed_files(self._repo, self._last_history_commit, commit, self.config.spec_paths)
        try:
            ports.status.append_history(history_fields(applied, files, result=result))
            if commit:
                self._last_history_commit = commit
            self._last_failure = None
        except SwarmError as exc:
            log.warning("could not record the applied revision in the history: %s", exc)

    def _record_failed_pass(self, ports: Ports, attempt: Attempt, result: PassResult) -> None:
        """A pass that did not converge, once per kind of failure (retries of the same one are
        not repeated): its state and error go to the history too."""
        error = str(result.error) if result.error is not None else ""
        key = (result.state, attempt.digest, error)
        if key == self._last_failure:
            return
        failed = Applied(revision=attempt.revision, digest=attempt.digest, at=attempt.at, trigger=attempt.trigger)
        try:
            ports.status.append_history(history_fields(failed, [], result=result.state, error=error))
            self._last_failure = key
        except SwarmError as exc:  # Redis itself may be the failure
            log.warning("could not record the failed pass in the history: %s", exc)

    def _end_stale_pin(self, ports: Ports) -> None:
        """A rollback pin whose branch has moved on is over: remove it (the branch applies)."""
        pin = self._pin
        if pin is None or self._pin_active or self.config.dry_run:
            return
        log.warning("the branch moved past the rollback to %s: applying %s again", pin.commit[:10], self.config.rev)
        try:
            ports.status.write_pin(None)
            self._pin = None
        except SwarmError as exc:
            log.warning("could not clear the rollback pin: %s", exc)

    def fetch_now(self) -> bool:
        """Fetch the followed remote branch once; whether a pass is due (the branch moved,
        or the fetch error changed and the status should say so)."""
        info, remote = self.fetch_info, self._remote
        if info is None or remote is None or self._repo is None:
            return False
        before = (info.commit, info.error)
        try:
            info.commit = fetch_branch(self._repo, remote[0], remote[1])
            info.at, info.error, info.error_at = now_iso(), None, None
        except TransientError as exc:
            info.error, info.error_at = str(exc), now_iso()
            log.warning("%s", exc)
        return (info.commit, info.error) != before

    async def _follow(self, kick: asyncio.Event, reasons: set[str], stop_event: asyncio.Event,
                      hook: asyncio.Event) -> None:
        """Fetch the followed branch every ``fetch_seconds`` (jittered) and on each webhook."""
        while not stop_event.is_set():
            if await asyncio.to_thread(self.fetch_now):
                reasons.add("fetch")
                kick.set()
            hook.clear()
            waits = [asyncio.ensure_future(stop_event.wait()), asyncio.ensure_future(hook.wait())]
            try:
                await asyncio.wait(waits, timeout=self.config.fetch_seconds * random.uniform(0.8, 1.2),
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()

    def _poll_git_signals(self, ports: Ports) -> tuple[bool, bool]:
        """(a webhook arrived, the rollback pin changed) since the last poll."""
        hooked = pinned = False
        try:
            hook = ports.status.read_hook()
            if hook != self._hook_seen:
                hooked = self._hook_seen is not None or hook is not None
                self._hook_seen = hook
            pin = parse_history_pin(ports.status.read_pin())
            if pin != self._pin:
                self._pin, pinned = pin, True
        except SwarmError:
            pass  # Redis away: the pass loop reports it
        return hooked, pinned

    # ------------------------------------------------------------------ lease

    def _take_lease(self, ports: Ports, swarm: str) -> PassResult | None:
        """Take or renew the reconcile lease and fence the ports with it; a ``standby`` result when another holds it."""
        if self.config.lease_ttl <= 0 or ports.lease_client is None:
            return None
        lease = self._lease
        if lease is None or lease.keys.swarm != swarm or lease.client is not ports.lease_client:
            if lease is not None:
                lease.release()
            lease = self._lease = Lease(ports.lease_client, swarm, ttl=self.config.lease_ttl)
        try:
            had = lease.fence
            fence = lease.acquire()
        except SwarmError as exc:
            ports.set_fence(_no_lease(lease))
            result = PassResult(state="waiting", error=exc, retry_in=self._backoff.next_delay())
            result.status = ReconcileStatus(swarm=swarm, state="waiting", waiting_for=str(exc),
                                            message=f"waiting for {exc} (retry in {result.retry_in:.1f}s)")
            return result
        ports.set_fence(fence or _no_lease(lease))
        if fence is not None:
            if had is None or had.token != fence.token:
                log.warning("holding the reconcile lease of swarm %s: %s", swarm, lease.holder.describe() if lease.holder else "")
                lease.clear_standby()
                self._forget_writes()  # someone else wrote meanwhile: read every user back
            return None
        holder = lease.holder.describe() if lease.holder else "another process"
        message = f"standing by: the reconcile lease of swarm {swarm} is held by {holder}"
        if had is not None:
            log.warning("lost the reconcile lease of swarm %s to %s", swarm, holder)
        lease.mark_standby(message)
        self._forget_writes()
        result = PassResult(state="standby")
        result.status = ReconcileStatus(swarm=swarm, state="standby", message=message)
        return result

    def lease_interval(self) -> float:
        """How often ``--watch`` renews the lease / a standby retries: a third of the TTL."""
        return max(0.05, self.config.lease_ttl / 3)

    def _keep_once(self, seen: dict[str, object]) -> str | None:
        """One tick of the keeper: renew the lease; read Redis' run_id, the webhook counter and
        the rollback pin. A trigger name when a pass is due."""
        ports = self._ports_of_good()
        if ports is None or ports.lease_client is None:
            return None
        if self.config.rev:
            hooked, pinned = self._poll_git_signals(ports)
            if hooked:
                seen["hook"] = True  # _keep wakes the fetcher
            if pinned:
                return "rollback"
        client: Any = ports.lease_client
        lease = self._lease
        if lease is not None and lease.fence is not None:
            try:
                # not while a fenced write of this process is in flight: renewing touches the
                # lease key, which would break that write's WATCH (the TTL is far longer)
                with getattr(ports.bus, "write_lock", contextlib.nullcontext()):
                    renewed = lease.renew()
                if not renewed:
                    ports.set_fence(_no_lease(lease))
                    log.warning("lost the reconcile lease of swarm %s", lease.keys.swarm)
                    return "lease"
            except SwarmError:
                pass  # Redis down: the restart check below notices it too
        run_id = _run_id(client)
        ref = self._run_id
        if run_id is None or ref is None or run_id == ref or seen.get("kicked") == run_id:
            return None
        seen["kicked"] = run_id  # one pass per restart; that pass records the new run_id
        log.warning("Redis restarted (run_id %s -> %s): re-creating its users now", ref, run_id)
        self._forget_writes()
        return "redis-restart"

    def _ports_of_good(self) -> Ports | None:
        if self.good is None:
            return None
        d = self.good.desired
        return self._ports.get((self.config.registry_url or d.registry.settings.url,
                                self.config.bus_redis_url(d.bus.settings.redis_url)))

    async def _keep(self, kick: asyncio.Event, reasons: set[str], stop_event: asyncio.Event,
                    hook: asyncio.Event | None = None) -> None:
        """Renew the lease and watch Redis' run_id until stopped; kick a pass when one is due."""
        seen: dict[str, object] = {}
        interval = max(0.05, min(self.config.redis_check_seconds, self.lease_interval()))
        while not stop_event.is_set():
            trigger = await asyncio.to_thread(self._keep_once, seen)
            if trigger is not None:
                reasons.add(trigger)
                kick.set()
            if seen.pop("hook", False) and hook is not None:
                hook.set()
            try:
                await asyncio.wait_for(stop_event.wait(), timeout=interval)
            except asyncio.TimeoutError:
                pass

    def _current_spec(self, trigger: str) -> tuple[SpecSource | None, Attempt, SpecError | None]:
        """The spec to enforce (the newest valid one), what was attempted, and the spec error if any."""
        try:
            source = self.load()
            return source, Attempt(revision=source.revision, digest=source.digest, at=now_iso(), trigger=trigger), None
        except SpecError as exc:
            seen = self._invalid_attempt if self._cache is exc else None
            attempt = Attempt(
                revision=seen.revision if seen else Revision(),
                digest=seen.digest if seen else None,
                at=now_iso(),
                trigger=trigger,
            )
            return self.good, attempt, exc

    def _reconcile(self, source: SpecSource, ports: Ports, result: PassResult, trigger: str, *,
                   changed: bool = False) -> None:
        """Observe, plan, apply and verify; raises on refusal and on faults.

        ``changed``: the spec is valid and not the one applied before; then a
        watch-triggered pass applies only the difference (:meth:`_reconcile_incremental`).
        Any other pass (an invalid save, a save that changes nothing) compares in full.
        """
        status = result.status
        assert status is not None
        last, self._last_applied = self._last_applied, None
        if (changed and last is not None and trigger in ("file", "git") and last.ports is ports
                and not self.config.dry_run
                and last.desired.registry.swarm == source.desired.registry.swarm):
            try:
                if self._reconcile_incremental(source, ports, result, last):
                    return
            except (ConflictError, InvalidRequestError, NotDeclaredError) as exc:
                # 409: the stored catalog is not the one last applied (someone pushed); 4xx: a
                # registry without PATCH /catalog. The full comparison sets things right.
                log.warning("incremental pass fell back to a full one: %s", exc)
                self._last_applied = None
            result.plan, result.applied = None, []
        desired = source.desired
        # Event-triggered passes trust the Redis users this process wrote (existence is
        # still checked); start, retry and the resync timer read every user back.
        written, self._written_for = self._written_for, None
        assumed = desired_user_rights(written) if written is not None and trigger in ("file", "git") else None
        actual = observe(ports.registry, ports.bus, desired.bus, assumed)
        status.live = live_summary(desired, actual)
        self._live_read_at = time.monotonic()
        retired = frozenset(status.retired_agents)
        plan = plan_actions(desired, actual, prune=self.config.prune, force_prune=self.config.force_prune, retired=retired)
        result.plan = plan
        status.held_back = [a.description for a in plan.held_back]
        status.pending = [a.description for a in plan.actions]  # until applied and verified
        if not self.config.dry_run:
            status.retired_agents = sorted(plan.retired)
        if plan.refused:
            raise _Refused(plan.refused)
        if self.config.dry_run:
            result.state = "synced" if plan.empty else "changes-pending"
            return
        if not plan.empty:
            status.state, status.message = "applying", f"applying {len(plan.actions)} action(s)"
            self._write_status(ports, status)
            result.applied = apply_plan(
                plan, desired, ports.registry, ports.bus, revision=source.revision.push_id(source.digest),
                on_applied=self._pause_hook if self.config.pause_after else None, check_fence=ports.check_fence,
            )
            seen = observe(ports.registry, ports.bus, desired.bus, desired_user_rights(desired))
            after = plan_actions(
                desired, seen, prune=self.config.prune, force_prune=self.config.force_prune, retired=plan.retired
            )
            if not after.empty:
                raise _VerifyFailed(
                    "after applying, the live system still differs: " + "; ".join(a.description for a in after.actions)
                )
        status.pending = []
        self._backoff.reset()
        self._written_for = desired
        self._last_applied = _LastApplied(
            desired=desired, digest=self._catalog_text.digest(desired.registry), ports=ports,
            users_managed=actual.bus.users_managed, held_back=plan.held_back,
        )

    def _reconcile_incremental(self, source: SpecSource, ports: Ports, result: PassResult, last: "_LastApplied") -> bool:
        """Apply only what differs from the last applied desired state (no observation); False
        when the full comparison must decide (:func:`~swarm.reconcile.delta.incremental_plan`)."""
        status = result.status
        assert status is not None
        desired = source.desired
        delta = desired_delta(last.desired, desired, self._desired_memo.changed_since(last.desired, desired))
        plan = incremental_plan(last.desired, desired, delta, prune=self.config.prune,
                                users_managed=last.users_managed, retired=frozenset(status.retired_agents))
        if plan is None:
            return False
        result.plan = plan
        wanted = set(desired.bus.agents) | set(desired.bus.topics)
        held = tuple(a for a in last.held_back if a.target not in wanted) + plan.held_back
        status.held_back = [a.description for a in held]
        status.retired_agents = sorted(plan.retired)
        digest = self._catalog_text.digest(desired.registry) if delta.catalog_changed else last.digest
        status.pending = [a.description for a in plan.actions]  # until applied
        if not plan.empty:
            status.state, status.message = "applying", f"applying {len(plan.actions)} action(s)"
            self._write_status(ports, status)
            patch = CatalogPatch(delta.catalog, last.digest, digest) if delta.catalog is not None else None
            result.applied = apply_plan(
                plan, desired, ports.registry, ports.bus, revision=source.revision.push_id(source.digest),
                on_applied=self._pause_hook if self.config.pause_after else None, check_fence=ports.check_fence,
                catalog_patch=patch,
            )
        status.live = self._refresh_live(ports, desired, status.live)
        status.pending = []
        self._backoff.reset()
        self._written_for = desired
        self._last_applied = _LastApplied(desired=desired, digest=digest, ports=ports,
                                          users_managed=last.users_managed, held_back=held)
        return True

    def _refresh_live(self, ports: Ports, desired: DesiredState, live: LiveSummary | None) -> LiveSummary | None:
        """The live summary after an incremental pass: declared from ``desired``, the rest re-read.

        An incremental pass observes nothing before it applies (that is what makes save ->
        live fast at 10,000 agents), so without this ``status.live`` kept the counts of the
        last full pass. Read here, *after* the apply, so the change is live before the read
        starts; and cheaply: the registry's own counts (GET /status, a few hundred bytes,
        not GET /agents with every registration) and the breakers and protection flag from
        Redis (one SCAN and one pipeline, not the streams, groups and users a full
        observation reads). At most once every ``live_refresh_seconds`` (a burst of saves
        pays it once; in between only ``agents_declared`` moves), and not the keeper's job:
        the keeper ticks in its own thread while a pass may be building the status, and the
        status is written at the end of each pass anyway. A port without these reads (test
        fakes) or a failed read keeps the last figures, with only ``agents_declared`` updated."""
        declared = len(desired.registry.agents)
        now = time.monotonic()
        counts_of = getattr(ports.registry, "agent_counts", None)
        signals_of = getattr(ports.bus, "live_signals", None)
        if (live is not None and now - self._live_read_at < self.live_refresh_seconds) or counts_of is None \
                or signals_of is None:
            return live.model_copy(update={"agents_declared": declared}) if live is not None else None
        try:
            counts: dict[str, int] = counts_of()
            breakers, protection = signals_of()
        except SwarmError as exc:
            log.debug("live summary not refreshed: %s", exc)
            return live.model_copy(update={"agents_declared": declared}) if live is not None else None
        self._live_read_at = now
        return LiveSummary(
            agents_declared=declared,
            agents_live=sum(n for s, n in counts.items() if s in LIVE_STATUSES),
            agents_expired=sum(n for s, n in counts.items() if s in EXPIRED_STATUSES),
            breakers_open=sorted(breakers),
            protection=protection,
            observed_at=now_iso(),
        )

    def _forget_writes(self) -> None:
        """Someone else may have written (another lease holder, a restarted Redis): the next
        pass reads every user back and compares everything."""
        self._written_for = None
        self._last_applied = None

    def _pause_hook(self, action: Action) -> None:
        if action.kind.value != self.config.pause_after or self._paused:
            return
        self._paused = True
        print(f"fault hook: paused after {action.kind.value} (SWARM_FAULT_PAUSE_AFTER)", file=sys.stderr, flush=True)
        resume = self.config.resume_file
        while resume is None or not resume.exists():
            threading.Event().wait(0.02)  # without a resume file: for good, the test kills the process
        print("fault hook: resumed", file=sys.stderr, flush=True)

    def _record_converged(
        self, source: SpecSource, attempt: Attempt, result: PassResult, *, new_spec: bool, spec_error: SpecError | None
    ) -> None:
        status = result.status
        assert status is not None
        previous = status.last_applied
        if result.applied and not new_spec and previous is not None and previous.digest == source.digest:
            status.drift = [a.description for a in result.applied]  # the spec did not change: hand-made drift
            status.drift_at = now_iso()
        if new_spec or result.applied or previous is None or previous.digest != source.digest:
            status.last_applied = Applied(
                revision=source.revision,
                digest=source.digest,
                at=attempt.at,
                trigger=attempt.trigger,
                actions=[a.to_dict() for a in result.applied],
            )
        status.waiting_for = None
        if spec_error is not None:
            result.state = status.state = "invalid-spec"
            result.error = spec_error
            status.message = (
                f"the newest spec is invalid ({len(spec_error.issues)} error(s)); "
                f"still enforcing digest {short_digest(source.digest)}"
                + (" (the last applied spec, read back from Redis)" if self._recovered else "")
            )
            status.last_error = _error("spec", spec_error)
        else:
            status.state = "synced"
            status.message = f"in sync with {source.revision.label()}"
            status.last_error = None

    def _record_failure(self, exc: SwarmError, result: PassResult) -> None:
        status = result.status
        assert status is not None
        result.error = exc
        if isinstance(exc, LeaseLost):  # another daemon took over: no status of ours to write
            result.state = "standby"
            status.state, status.message = "standby", str(exc)
            self._forget_writes()
            return
        if isinstance(exc, (TransientError, _VerifyFailed)):
            result.retry_in = self._backoff.next_delay()
        if isinstance(exc, TransientError):
            result.state = status.state = "waiting"
            status.waiting_for = str(exc)
            status.message = f"waiting for {exc} (retry in {result.retry_in:.1f}s)"
            status.last_error = _error("transient", exc)
            return
        kind = "refused" if isinstance(exc, _Refused) else "verify" if isinstance(exc, _VerifyFailed) else "permanent"
        result.state = status.state = "refused" if kind == "refused" else "error"
        status.message = str(exc)
        status.last_error = _error(kind, exc)

    def _record_without_spec(self, attempt: Attempt, spec_error: SpecError) -> PassResult:
        """No valid spec yet: enforce nothing, but say why in status when the swarm can be guessed."""
        result = PassResult(state="invalid-spec", error=spec_error)
        target = self._invalid_spec_target()
        if target is None or self.config.dry_run:
            return result
        name, url = target
        try:
            sink = self._fallback_sink(name, url)
            client = getattr(sink, "client", None)
            if client is not None and self.config.lease_ttl > 0:
                holder = read_lease(client, name)[0]
                if holder is not None and (self._lease is None or holder.owner != self._lease.owner):
                    # the status document is the lease holder's: say it here only
                    log.error("spec is invalid; not writing status: the reconcile lease is held by %s", holder.describe())
                    return result
            status = self.status if self.status is not None and self.status.swarm == name else None
            status = status or parse_status(sink.read_status()) or ReconcileStatus(swarm=name)
            status.passes += 1
            status.state = "invalid-spec"
            status.message = f"the spec is invalid ({len(spec_error.issues)} error(s)) and no valid spec was seen since start; nothing is enforced"
            status.last_attempted = attempt
            status.last_error = _error("spec", spec_error)
            status.updated_at = now_iso()
            sink.write_status(status.to_json())
            self.status = result.status = status
        except SwarmError as exc:
            log.warning("could not write status: %s", exc)
        return result

    def _store_applied_spec(self, ports: Ports, source: SpecSource, status: ReconcileStatus, *, rewrite: bool) -> None:
        """Keep the files of the spec just applied in Redis, for a restart onto a broken one.

        Once per digest, and again whenever a pass changed something (another
        process may have applied another spec meanwhile: drift this pass undid).
        """
        applied = status.last_applied
        if self._recovered or not source.files or (self._stored_digest == source.digest and not rewrite):
            return
        if applied is None or applied.digest != source.digest or status.state not in ("synced", "invalid-spec"):
            return
        try:
            ports.status.write_applied_spec(applied_spec_json(source))
            self._stored_digest = source.digest
        except SwarmError as exc:  # the next pass tries again
            log.warning("could not store the applied spec: %s", exc)

    def _recover_applied_spec(self) -> SpecSource | None:
        """The last applied spec kept in Redis, for a daemon started onto an invalid spec; else None."""
        target = self._invalid_spec_target()
        if target is None:
            return None
        name, url = target
        try:
            raw = self._fallback_sink(name, url).read_applied_spec()
        except SwarmError as exc:
            log.warning("could not read the last applied spec: %s", exc)
            return None
        source = parse_applied_spec(raw, name)
        if source is not None:
            log.warning("the spec is invalid; enforcing the last applied spec %s read back from Redis",
                        short_digest(source.digest))
            self._recovered = True
            self._stored_digest = source.digest
        return source

    def _invalid_spec_target(self) -> tuple[str, str] | None:
        """(swarm, Redis URL) read leniently from the invalid spec's files, when a status fallback is set."""
        if self._status_fallback is None:
            return None
        target = lenient_target(self._invalid_files or {})
        return None if target is None else (target[0], self.config.bus_redis_url(target[1]))

    def _fallback_sink(self, name: str, url: str) -> StatusSink:
        assert self._status_fallback is not None
        if (name, url) not in self._fallback_sinks:
            self._fallback_sinks[(name, url)] = self._status_fallback(name, url)
        return self._fallback_sinks[(name, url)]

    def _status_base(self, ports: Ports, swarm: str) -> ReconcileStatus:
        if self.status is not None and self.status.swarm == swarm:
            # shallow: a pass only rebinds the status' fields, never changes one in place, and a
            # deep copy of the last apply's actions (thousands on a big swarm) cost ~0.5 s a pass
            return self.status.model_copy()
        try:  # a restarted daemon keeps showing what was applied before it
            previous = parse_status(ports.status.read_status())
        except SwarmError:
            previous = None
        if previous is not None and previous.swarm == swarm:
            return previous
        return ReconcileStatus(swarm=swarm)

    def _write_status(self, ports: Ports, status: ReconcileStatus) -> None:
        try:
            ports.status.write_status(status.to_json())
        except SwarmError as exc:  # the next pass writes it again
            log.warning("could not write status: %s", exc)

    def _write_compiled(self, source: SpecSource) -> None:
        if self._compiled is not None:  # with --rev the commit carries its own compiled output
            self._compiled.submit(source)

    # ------------------------------------------------------------------ watch

    def watch_paths(self) -> list[Path]:
        if self.config.rev:
            assert self._repo is not None
            return ref_watch_paths(self._repo)
        # a file's folder (editors save by rename); folders inside another are covered by it
        folders = {p if p.is_dir() else p.parent for p in (q.resolve() for q in self.config.spec_paths)}
        return sorted(f for f in folders if not any(o != f and o in f.parents for o in folders))

    def _watch_filter(self) -> Callable[[object, str], bool]:
        if self.config.rev:
            def git_filter(_change: object, path: str) -> bool:
                name = Path(path).name
                return name in ("HEAD", "packed-refs") or "/refs/" in path or name.endswith(".lock")
            return git_filter
        files = {p.resolve() for p in self.config.spec_paths if not p.is_dir()}
        dirs = [p.resolve() for p in self.config.spec_paths if p.is_dir()]

        def spec_filter(_change: object, path: str) -> bool:
            """Whether reading the spec reads ``path``: a file named, or one a directory walk finds."""
            p = Path(path).resolve()
            return p in files or any(d in p.parents and walked(p.relative_to(d).as_posix()) for d in dirs)
        return spec_filter

    async def watch(self, stop_event: asyncio.Event, on_pass: Callable[[PassResult], None] | None = None,
                    metrics: PassMetrics | None = None) -> None:
        """Reconcile on every change, on the resync timer and after failures until ``stop_event``;
        ``metrics`` (:class:`swarm.reconcile.metrics.ReconcileMetrics`) is told of each pass's end."""
        kick = asyncio.Event()
        reasons: set[str] = set()
        watcher = asyncio.create_task(self._watch_files(kick, reasons, stop_event))
        watcher.add_done_callback(_log_watcher_end)
        hook = asyncio.Event()
        keeper = asyncio.create_task(self._keep(kick, reasons, stop_event, hook))
        tasks = [watcher, keeper]
        if self._remote is not None and self.config.fetch_seconds > 0:
            tasks.append(asyncio.create_task(self._follow(kick, reasons, stop_event, hook)))
        trigger = "start"
        settler = HeapSettler()
        try:
            while not stop_event.is_set():
                started = time.monotonic()
                try:
                    result = await asyncio.to_thread(self.run_pass, trigger)
                except Exception as exc:  # a bug must not end the daemon: say so and try again
                    log.exception("reconcile pass failed unexpectedly")
                    result = PassResult(state="error", error=SwarmError(f"unexpected {type(exc).__name__}: {exc}"),
                                        retry_in=self._backoff.next_delay())
                if metrics is not None:
                    metrics.pass_ended(result, time.monotonic() - started)
                if on_pass is not None:
                    on_pass(result)
                await asyncio.to_thread(settler.settle)
                if result.state == "standby":
                    timeout, idle = self.lease_interval(), "lease"
                elif result.retry_in is not None:
                    timeout, idle = result.retry_in, "retry"
                else:
                    timeout, idle = self.config.resync_seconds, "resync"
                trigger = await _wait(kick, reasons, stop_event, timeout, idle)
        finally:
            stop_event.set()
            for task in tasks:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
                except Exception:  # the keeper's failure must not hide the loop's
                    log.exception("background task failed")
            self.close()

    async def _watch_files(self, kick: asyncio.Event, reasons: set[str], stop_event: asyncio.Event) -> None:
        from watchfiles import awatch

        reason = "git" if self.config.rev else "file"
        async for _changes in awatch(
            *self.watch_paths(),
            watch_filter=self._watch_filter(),
            debounce=self.config.debounce_ms,
            step=self.config.step_ms,
            stop_event=stop_event,
        ):
            reasons.add(reason)
            kick.set()


def _run_id(client: Any) -> str | None:
    """Redis' run_id (INFO server; new at every start), None when it cannot be read now."""
    try:
        value = client.info("server").get("run_id")
    except Exception:  # Redis away or refusing: the pass loop reports why
        return None
    return str(value) if value else None


def _no_lease(lease: Lease) -> Fence:
    """A fence no lease ever holds (tokens start at 1): every write through it is refused."""
    return Fence(lease.keys.lease, 0)


def _log_watcher_end(task: "asyncio.Task[None]") -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("file watcher stopped (only the resync timer triggers passes now): %s", task.exception())


async def _wait(kick: asyncio.Event, reasons: set[str], stop: asyncio.Event, timeout: float, idle: str) -> str:
    """Wait for a kick, stop or the timeout; return the trigger name of the next pass."""
    kicked = asyncio.ensure_future(kick.wait())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({kicked, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        kicked.cancel()
        stopped.cancel()
    if kick.is_set():
        kick.clear()
        name = ",".join(sorted(reasons)) or idle
        reasons.clear()
        return name
    return idle


@dataclass(frozen=True)
class _LastApplied:
    """The desired state the last converged pass left live, and what that pass knew."""

    desired: DesiredState
    digest: str  # of its catalog, as the registry computes it
    ports: Ports
    users_managed: bool
    held_back: tuple[Action, ...]


class _CompiledWriter:
    """Writes compiled/ in a background thread, newest spec wins, after the live system.

    Rendering and writing every agent's files of a 100-agent spec takes hundreds of
    milliseconds; on the pass's own thread it would delay the next save's apply.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self._cond = threading.Condition()
        self._pending: SpecSource | None = None
        self._thread: threading.Thread | None = None

    def submit(self, source: SpecSource) -> None:
        with self._cond:
            self._pending = source
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="swarm-compile", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                source, self._pending = self._pending, None
                if source is None:
                    self._thread = None
                    self._cond.notify_all()
                    return
            try:
                from swarm.compiler import compile_loaded, write_output

                write_output(compile_loaded(source.loaded), self.out, source.loaded.output_name)
            except SwarmError as exc:
                log.warning("could not write compiled output to %s: %s", self.out, exc)

    def flush(self, timeout: float = 60.0) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._thread is None, timeout=timeout)


class _Refused(PermanentError):
    """The plan was refused (mass prune without --force-prune)."""


class _VerifyFailed(PermanentError):
    """Observing after an apply still found differences."""


def _error(kind: str, exc: SwarmError) -> LastError:
    issues = [i.to_dict() for i in exc.issues] if isinstance(exc, SpecError) else []
    return LastError(kind=kind, message=str(exc), at=now_iso(), issues=issues)  # type: ignore[arg-type]


def applied_spec_json(source: SpecSource) -> str:
    """The stored form of an applied spec: its files (bytes kept exactly), digest and revision."""
    return json.dumps({
        "format": 1,
        "swarm": source.desired.registry.swarm,
        "digest": source.digest,
        "environment": source.loaded.environment,
        "revision": source.revision.model_dump(mode="json"),
        "files": {name: data.decode("utf-8", "surrogateescape") for name, data in source.files.items()},
    })


def parse_applied_spec(raw: str | None, swarm: str) -> SpecSource | None:
    """A :class:`SpecSource` from :func:`applied_spec_json` output; None when missing, foreign or not valid."""
    if not raw:
        return None
    from swarm.spec.loader import parse_spec_texts

    try:
        doc = json.loads(raw)
        files = {name: text.encode("utf-8", "surrogateescape") for name, text in doc["files"].items()}
        loaded = parse_spec_texts(files, doc.get("environment"))
        if doc.get("swarm") != swarm or loaded.spec.name != swarm or loaded.digest != doc.get("digest"):
            return None
        return SpecSource(loaded, desired_from_spec(loaded.spec, loaded.digest),
                          Revision.model_validate(doc.get("revision") or {}), files)
    except (ValueError, KeyError, TypeError, AttributeError, SwarmError) as exc:
        log.warning("the stored applied spec is unusable: %s", exc)
        return None


def lenient_target(files: Mapping[str, bytes]) -> tuple[str, str] | None:
    """(swarm name, bus.redis_url) read leniently from spec files that do not validate."""
    import yaml

    for raw in files.values():
        try:
            docs = list(yaml.safe_load_all(raw))
        except yaml.YAMLError:
            continue
        for doc in docs:
            if isinstance(doc, dict) and doc.get("kind") == "Swarm":
                meta, bus = doc.get("metadata"), doc.get("bus")
                name = meta.get("name") if isinstance(meta, dict) else None
                url = bus.get("redis_url") if isinstance(bus, dict) else None
                if isinstance(name, str) and name:
                    return name, url if isinstance(url, str) else "redis://127.0.0.1:6379/0"
    return None


def live_summary(desired: DesiredState, actual: ActualState) -> LiveSummary:
    """Agents declared / live / expired, open breakers and protection mode from one observation."""
    agents = actual.registry.agents.values()
    return LiveSummary(
        agents_declared=len(desired.registry.agents),
        agents_live=sum(1 for a in agents if a.status in LIVE_STATUSES),
        agents_expired=sum(1 for a in agents if a.status in EXPIRED_STATUSES),
        breakers_open=sorted(actual.bus.breakers_open),
        protection=actual.bus.protection,
        observed_at=now_iso(),
    )
