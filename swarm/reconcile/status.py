"""The reconcile status document: its JSON format (a contract with the registry) and its store.

Written by the reconcile loop after every pass to the Redis key
``swarm:{NAME}:status`` (:attr:`swarm.keys.SwarmKeys.status`); read back by
``swarm status`` and served verbatim by the registry at ``GET /status``.

Format (``ReconcileStatus.model_dump(mode="json")``)::

    {
      "format": 1,
      "swarm": "research",
      "state": "synced",            # synced | applying | invalid-spec | waiting | refused | error
                                    # (a daemon without the reconcile lease reports "standby" in its
                                    # log and output only: the status document is the holder's)
      "message": "in sync with 3f2a9c1 (digest 5d1e...)",   # one line for humans
      "waiting_for": null,          # e.g. "redis at redis://127.0.0.1:6379/0: Connection refused"
      "updated_at": "2026-11-22T00:01:02.345678+00:00",
      "passes": 42,
      "last_attempted": {"revision": REV, "digest": "…" | null, "at": "…", "trigger": "file"},
      "last_applied":   {"revision": REV, "digest": "…", "at": "…", "trigger": "file",
                         "actions": [{"kind": "push-catalog", "target": "research",
                                      "description": "…", "details": ["…"]}]},
      "drift": ["…"],               # changes the last pass made although the spec had not changed
      "drift_at": "…" | null,
      "held_back": ["agent x will be evicted: no longer declared"],   # needs --prune
      "pending": ["create group …"] | null,   # what the next pass would run: [] once converged,
                                    # the planned actions a failed pass left to retry, null when
                                    # the pass could not plan (e.g. Redis unreachable)
      "retired_agents": ["x"],      # registered agents removed from the spec: evicted only with --prune
      "last_error": {"kind": "spec" | "transient" | "refused" | "permanent" | "verify",
                     "message": "…", "at": "…",
                     "issues": [SpecIssue.to_dict(), …]} | null,
      "live": {"agents_declared": 6, "agents_live": 4, "agents_expired": 0,
               "breakers_open": ["summarizer"], "protection": false, "observed_at": "…"} | null,
      "fetch": {"ref": "origin/main", "remote": "origin", "branch": "main",
                "interval_seconds": 60.0, "commit": "<sha>" | null, "at": "…" | null,
                "error": "…" | null, "error_at": "…" | null} | null,   # --rev of a remote branch
      "pinned": {"commit": "<sha>", "branch_commit": "<sha>", "at": "…"} | null   # swarm rollback
    }
    REV = {"source": "working-tree" | "git", "commit": "<sha>" | null, "dirty": bool | null,
           "ref": "main" | null}

Beside it, ``swarm:{NAME}:applied-spec`` keeps the files of the last applied
spec (``loop.applied_spec_json``), so a daemon restarted onto an invalid spec
keeps enforcing it.

``last_error`` is cleared by the next pass that converges; ``last_applied`` only
moves when a valid spec was applied and verified, so "last attempted vs last
applied" shows at a glance when the newest spec was refused.
"""

from __future__ import annotations

from datetime import datetime, timezone
from collections import Counter
from typing import Any, Iterable, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

#: Lines of actions ``swarm plan`` and ``swarm status`` list before summarising (``--full``: all).
SUMMARY_LIMIT = 50

State = Literal["starting", "synced", "applying", "invalid-spec", "waiting", "refused", "error", "standby"]
ErrorKind = Literal["spec", "transient", "refused", "permanent", "verify"]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def short_digest(digest: str | None) -> str:
    """``sha256:5d1e8a9f0b1c…`` → ``5d1e8a9f0b1c``."""
    if not digest:
        return "-"
    return digest.split(":", 1)[-1][:12]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Revision(_Model):
    """Where a spec came from: a commit (``source="git"``) or the working tree."""

    source: Literal["working-tree", "git"] = "working-tree"
    commit: str | None = None
    dirty: bool | None = None
    ref: str | None = None

    def label(self) -> str:
        if self.commit is None:
            return "working tree (not a git repository)"
        short = self.commit[:10]
        if self.source == "git":
            return f"{self.ref or 'commit'} @ {short}"
        return f"{short}{' + uncommitted changes' if self.dirty else ''}"

    def push_id(self, digest: str) -> str:
        """The revision string sent with the catalog push."""
        if self.commit is None:
            return f"digest:{digest[:16]}"
        return self.commit + ("-dirty" if self.dirty else "")


class Attempt(_Model):
    revision: Revision
    digest: str | None
    at: str
    trigger: str


class Applied(Attempt):
    actions: list[dict[str, Any]] = Field(default_factory=list)


class LastError(_Model):
    kind: ErrorKind
    message: str
    at: str
    issues: list[dict[str, Any]] = Field(default_factory=list)


class LiveSummary(_Model):
    agents_declared: int
    agents_live: int
    agents_expired: int
    breakers_open: list[str] = Field(default_factory=list)
    protection: bool = False
    observed_at: str


class FetchInfo(_Model):
    """What following a remote branch (``--rev origin/main``) last did."""

    ref: str
    remote: str
    branch: str
    interval_seconds: float
    commit: str | None = None  # where the branch was at the last successful fetch
    at: str | None = None
    error: str | None = None  # the last fetch's error; None once a fetch succeeds
    error_at: str | None = None


class PinInfo(_Model):
    """A rollback (``swarm rollback REV``): ``commit`` is enforced while the followed
    branch stays at ``branch_commit``; the branch moving ends it."""

    commit: str
    branch_commit: str
    at: str


class ReconcileStatus(_Model):
    format: int = 1
    swarm: str
    state: State = "starting"
    message: str = ""
    waiting_for: str | None = None
    updated_at: str = Field(default_factory=now_iso)
    passes: int = 0
    last_attempted: Attempt | None = None
    last_applied: Applied | None = None
    drift: list[str] = Field(default_factory=list)
    drift_at: str | None = None
    held_back: list[str] = Field(default_factory=list)
    pending: list[str] | None = None
    retired_agents: list[str] = Field(default_factory=list)
    last_error: LastError | None = None
    live: LiveSummary | None = None
    fetch: FetchInfo | None = None
    pinned: PinInfo | None = None

    def to_json(self) -> str:
        return self.model_dump_json()

    def render(self, limit: int | None = SUMMARY_LIMIT) -> str:
        """Human text for ``swarm status``; lists of actions past ``limit`` are summarised."""
        out = [f"swarm {self.swarm}: {self.state}" + (f" — {self.message}" if self.message else "")]
        if self.waiting_for:
            out.append(f"waiting for: {self.waiting_for}")
        if self.last_applied:
            la = self.last_applied
            out.append(f"last applied: {la.revision.label()} digest {short_digest(la.digest)} at {la.at} ({la.trigger})")
            out.extend(_summarised([str(a.get("description")) for a in la.actions], limit,
                                   [str(a.get("kind")) for a in la.actions]))
        else:
            out.append("last applied: never")
        if self.last_attempted:
            at = self.last_attempted
            out.append(f"last attempted: {at.revision.label()} digest {short_digest(at.digest)} at {at.at} ({at.trigger})")
        if self.drift:
            out.append(f"drift healed at {self.drift_at}:")
            out.extend(_summarised(self.drift, limit))
        if self.pending:
            out.append("next pass would run:")
            out.extend(_summarised(self.pending, limit))
        if self.held_back:
            out.append("held back (needs --prune):")
            out.extend(_summarised(self.held_back, limit))
        if self.last_error:
            e = self.last_error
            summary = f"{len(e.issues)} problem(s) in the spec" if e.issues else e.message
            out.append(f"last error ({e.kind}) at {e.at}: {summary}")
            for issue in e.issues:
                where = f"{issue.get('file')}:{issue.get('line')}:{issue.get('column')}"
                path = f"{issue.get('path')}: " if issue.get("path") else ""
                out.append(f"  {where}: {path}{issue.get('message')}")
        if self.fetch:
            f = self.fetch
            fetched = f"{f.ref} @ {f.commit[:10]} at {f.at}" if f.commit else f"{f.ref}: not fetched yet"
            out.append(f"fetched: {fetched} (every {f.interval_seconds:g} s and on POST /hooks/git)")
            if f.error:
                out.append(f"fetch error at {f.error_at}: {f.error}")
        if self.pinned:
            p = self.pinned
            out.append(f"rolled back to {p.commit[:10]} at {p.at}: enforced until the branch moves "
                       f"from {p.branch_commit[:10]} (revert in git to keep it)")
        if self.live:
            lv = self.live
            out.append(
                f"live: {lv.agents_declared} declared, {lv.agents_live} live, {lv.agents_expired} expired; "
                f"breakers open: {', '.join(lv.breakers_open) or 'none'}; "
                f"protection mode: {'ON' if lv.protection else 'off'}"
            )
        return "\n".join(out)


def count_kinds(kinds: Iterable[str]) -> str:
    """``put-redis-user 900, create-group 50``: how many of each kind (most first, then by name)."""
    counts = Counter(kinds)
    return ", ".join(f"{k} {n}" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _summarised(lines: list[str], limit: int | None, kinds: list[str] | None = None) -> list[str]:
    """``  - line`` for each, or past ``limit`` the counts per kind and the first ``limit``."""
    if limit is None or len(lines) <= limit:
        return [f"  - {line}" for line in lines]
    out = ["  by kind: " + count_kinds(kinds)] if kinds else []
    out += [f"  - {line}" for line in lines[:limit]]
    out.append(f"  ... and {len(lines) - limit} more (--full lists them all)")
    return out


class KeyValue(Protocol):
    """The two Redis commands the store needs (a redis.Redis satisfies it)."""

    def get(self, name: str) -> Any: ...

    def set(self, name: str, value: str) -> Any: ...


def parse_status(raw: bytes | str | None) -> ReconcileStatus | None:
    """Parse a stored status; ``None`` when missing or unreadable."""
    if raw is None:
        return None
    try:
        return ReconcileStatus.model_validate_json(raw)
    except ValidationError:
        return None
