"""Durable history in PostgreSQL: a follower copies the swarm's event streams there.

The registry's watch stream (``swarm:{N}:events``: registered, updated, expired,
deregistered, breaker changes, catalog changes) is capped at 10,000 events and the
reconciler's history stream (``swarm:{N}:history``: every applied pass) at 1,000:
live state, not an audit trail. With a PostgreSQL store configured (the Swarm
document's ``history.postgres_url``, or ``--postgres-url`` / ``SWARM_POSTGRES_URL``;
the password from ``PGPASSWORD`` or ``~/.pgpass``, never in the spec), ``swarm
history follow`` copies both streams into two tables. It is a *follower*: it reads
the streams with XREAD and never sits on the heartbeat or apply path, so a slow or
absent database costs the swarm nothing.

No gap, no duplicate, across any crash (``kill -9`` included):

* each row's primary key is ``(swarm, ms, seq)``, the Redis stream id, and every
  insert is ``ON CONFLICT DO NOTHING``, so copying an entry twice stores it once;
* the resume point is read back from the table at start (its greatest id), and
  rows are committed in the order read, one transaction per batch, so everything
  up to the resume point is stored and everything after it is read again;
* only trimming can lose entries: when the oldest entry left in a stream is newer
  than the resume point, the follower records the hole in ``swarm_history_gaps``
  (and logs it) instead of pretending there is none.

Tables (created when missing)::

    swarm_events(swarm, ms, seq, stream_id, type, agent_id, data jsonb, stored_at)
    swarm_passes(swarm, ms, seq, stream_id, at, trigger, digest, revision jsonb,
                 actions jsonb, files jsonb, result, error, stored_at)
    swarm_history_gaps(swarm, stream, after_id, before_id, noticed_at)

psycopg 3 is an optional dependency (``pip install 'swarm-gitops[postgres]'``),
imported only here and only when a store is used.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

from swarm.errors import InvalidRequestError, TransientError
from swarm.keys import SwarmKeys

log = logging.getLogger("swarm.durable")

SCHEMA = """
CREATE TABLE IF NOT EXISTS swarm_events (
    swarm text NOT NULL, ms bigint NOT NULL, seq bigint NOT NULL, stream_id text NOT NULL,
    type text NOT NULL, agent_id text NOT NULL, data jsonb,
    stored_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (swarm, ms, seq));
CREATE TABLE IF NOT EXISTS swarm_passes (
    swarm text NOT NULL, ms bigint NOT NULL, seq bigint NOT NULL, stream_id text NOT NULL,
    at text NOT NULL, trigger text NOT NULL, digest text NOT NULL, revision jsonb NOT NULL,
    actions jsonb NOT NULL, files jsonb NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (swarm, ms, seq));
ALTER TABLE swarm_passes ADD COLUMN IF NOT EXISTS result text NOT NULL DEFAULT 'applied';
ALTER TABLE swarm_passes ADD COLUMN IF NOT EXISTS error text NOT NULL DEFAULT '';
CREATE TABLE IF NOT EXISTS swarm_history_gaps (
    swarm text NOT NULL, stream text NOT NULL, after_id text NOT NULL, before_id text NOT NULL,
    noticed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (swarm, stream, after_id));
"""
#: Entries copied per transaction.
BATCH = 500


def split_id(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _json_or_text(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _connect(url: str) -> Any:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - the extra is not installed
        raise InvalidRequestError("a PostgreSQL history store needs psycopg: pip install 'swarm-gitops[postgres]'") from None
    try:
        return psycopg.connect(url, autocommit=False, connect_timeout=5)
    except psycopg.Error as exc:
        raise TransientError(f"postgresql: cannot connect: {exc}".strip()) from exc


@dataclass(frozen=True)
class _Stream:
    name: str  # "events" | "history"
    key: str
    table: str


class PostgresHistory:
    """The store: schema, inserts, the resume points and reads for ``swarm history``."""

    def __init__(self, url: str, swarm: str) -> None:
        self.url = url
        self.swarm = swarm
        self._conn = _connect(url)
        self.ensure_schema()  # readers too: an empty store reads as empty, not as an error

    def close(self) -> None:
        self._conn.close()

    def _run(self, what: str, fn: Any) -> Any:
        import psycopg

        try:
            with self._conn.transaction():
                with self._conn.cursor() as cur:
                    return fn(cur)
        except psycopg.OperationalError as exc:
            raise TransientError(f"postgresql: {what}: {exc}".strip()) from exc

    def ensure_schema(self) -> None:
        self._run("create the tables", lambda cur: cur.execute(SCHEMA))

    def last_id(self, table: str) -> str | None:
        row = self._run("read the resume point", lambda cur: cur.execute(
            f"SELECT ms, seq FROM {table} WHERE swarm = %s ORDER BY ms DESC, seq DESC LIMIT 1",  # noqa: S608 (fixed names)
            (self.swarm,)).fetchone())
        return None if row is None else f"{row[0]}-{row[1]}"

    def store(self, table: str, entries: list[tuple[str, dict[str, str]]]) -> None:
        """Insert entries (stream order) in one transaction; repeats are ignored."""
        if table == "swarm_events":
            sql = ("INSERT INTO swarm_events (swarm, ms, seq, stream_id, type, agent_id, data) "
                   "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING")
            rows: list[tuple[Any, ...]] = [
                (self.swarm, *split_id(i), i, f.get("type", ""), f.get("agent", ""),
                 json.dumps(_json_or_text(f.get("data", "null")))) for i, f in entries]
        else:
            sql = ("INSERT INTO swarm_passes (swarm, ms, seq, stream_id, at, trigger, digest, revision, actions, files, "
                   "result, error) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING")
            rows = [(self.swarm, *split_id(i), i, f.get("at", ""), f.get("trigger", ""), f.get("digest", ""),
                     f.get("revision", "{}"), f.get("actions", "[]"), f.get("files", "[]"), f.get("result", "applied"),
                     f.get("error", "")) for i, f in entries]
        self._run("store entries", lambda cur: cur.executemany(sql, rows))

    def record_gap(self, stream: str, after_id: str, before_id: str) -> None:
        self._run("record a gap", lambda cur: cur.execute(
            "INSERT INTO swarm_history_gaps (swarm, stream, after_id, before_id) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING", (self.swarm, stream, after_id, before_id)))

    def passes(self, limit: int) -> list[tuple[str, dict[str, str]]]:
        """The newest ``limit`` passes as history stream entries (newest first)."""
        rows = self._run("read the passes", lambda cur: cur.execute(
            "SELECT stream_id, at, trigger, digest, revision::text, actions::text, files::text, result, error "
            "FROM swarm_passes WHERE swarm = %s ORDER BY ms DESC, seq DESC LIMIT %s", (self.swarm, limit)).fetchall())
        return [(r[0], {"at": r[1], "trigger": r[2], "digest": r[3], "revision": r[4], "actions": r[5], "files": r[6],
                        "result": r[7], "error": r[8]}) for r in rows]

    def event_ids(self) -> list[str]:
        rows = self._run("read the events", lambda cur: cur.execute(
            "SELECT stream_id FROM swarm_events WHERE swarm = %s ORDER BY ms, seq", (self.swarm,)).fetchall())
        return [r[0] for r in rows]

    def gaps(self) -> list[tuple[str, str, str]]:
        rows = self._run("read the gaps", lambda cur: cur.execute(
            "SELECT stream, after_id, before_id FROM swarm_history_gaps WHERE swarm = %s ORDER BY noticed_at",
            (self.swarm,)).fetchall())
        return [(r[0], r[1], r[2]) for r in rows]


class HistoryFollower:
    """Copies the swarm's events and history streams into a :class:`PostgresHistory`."""

    def __init__(self, redis_client: Any, store: PostgresHistory) -> None:
        keys = SwarmKeys(store.swarm)
        self.redis = redis_client
        self.store = store
        self.streams = (_Stream("events", keys.events, "swarm_events"), _Stream("history", keys.history, "swarm_passes"))
        self.last: dict[str, str] = {}

    def start(self) -> None:
        """Create the tables, read the resume points, note what trimming lost meanwhile."""
        self.store.ensure_schema()
        for s in self.streams:
            last = self.store.last_id(s.table)
            self.last[s.key] = last or "0-0"
            if last is not None:
                self._check_gap(s, last)

    def _check_gap(self, s: _Stream, last: str) -> None:
        first = self.redis.xrange(s.key, min="-", max="+", count=1)
        if not first:
            return
        first_id = _text(first[0][0])
        # the oldest entry left is newer than the next one we need: entries in between were trimmed
        if split_id(first_id) > split_id(last) and not self.redis.xrange(s.key, min=last, max=last):
            log.error("the %s stream was trimmed past the stored history: entries after %s and before %s are lost",
                      s.name, last, first_id)
            self.store.record_gap(s.name, last, first_id)

    def step(self, block_ms: int = 1000) -> int:
        """Copy what is new (waiting up to ``block_ms`` for it); the number of entries stored."""
        reply = self.redis.xread(dict(self.last), count=BATCH, block=block_ms)
        copied = 0
        for key, entries in reply or []:
            key = _text(key)
            stream = next(s for s in self.streams if s.key == key)
            rows = [(_text(i), {_text(k): _text(v) for k, v in f.items()}) for i, f in entries]
            if rows:
                self.store.store(stream.table, rows)
                self.last[key] = rows[-1][0]
                copied += len(rows)
        return copied

    def run(self, stop: threading.Event, block_ms: int = 1000) -> None:
        from swarm.backoff import Backoff
        from swarm.foreign import REDIS_ERRORS, redis_error

        backoff = Backoff(base=0.2, cap=10.0)
        started = False
        while not stop.is_set():
            try:
                if not started:
                    self.start()
                    started = True
                self.step(block_ms)
                backoff.reset()
            except REDIS_ERRORS as exc:
                log.warning("history follower: %s", redis_error(exc, "read the streams"))
                stop.wait(backoff.next_delay())
            except TransientError as exc:
                log.warning("history follower: %s", exc)
                stop.wait(backoff.next_delay())


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

