"""Publish deduplication: the decision and a reference model (pure, clock injected).

The router deduplicates in Redis inside ``lua/route.lua``, the same script run that
appends (see :mod:`swarm.bus.router`): if the mark ``dedup:<topic>:<sender>:<message id>``
is alive the entry is a duplicate, its receipt names the entry id stored in the mark
(the original), and the window is *not* extended; otherwise the script XADDs the
entry to the topic's log and every subscriber's inbox and SETs the mark to the new
entry id with NX PX window, on Redis' clock. Appending before marking is the one order
that survives a failing XADD: scripts have no rollback, so a mark without an entry
must never be written. Why the mark has this shape:

* per topic and message id, not per consumer: every subscriber's inbox gets the one
  routed copy, so a second subscriber always gets the message (an earlier registry
  keyed the mark per consumer and lost messages);
* per sender: only the router writes marks, and a sender's marks only ever hold its
  own ids, so no agent can make another agent's future message id a "duplicate".

This module states the same rules without Redis so property tests can compare the
route script with :class:`DedupModel`, and so the rules can be read in one place.

>>> model = DedupModel()
>>> model.publish("t", "m1", now_ms=0, window_ms=100)
('1', False)
>>> model.publish("t", "m1", now_ms=99, window_ms=100)   # inside: the original id
('1', True)
>>> model.publish("t", "m1", now_ms=100, window_ms=100)  # the window did not move
('2', False)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Outcome(str, enum.Enum):
    ACCEPT = "accept"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class DedupMark:
    """A live mark: the entry id of the first publish and when the window ends."""

    entry_id: str
    expires_at_ms: int


def decide(mark: DedupMark | None, now_ms: int) -> Outcome:
    """A publish is a duplicate exactly while an earlier mark is alive (PX semantics)."""
    if mark is not None and now_ms < mark.expires_at_ms:
        return Outcome.DUPLICATE
    return Outcome.ACCEPT


def window_ms(seconds: float) -> int:
    """A dedup window in whole milliseconds, at least 1 (PX rejects 0)."""
    return max(1, int(round(seconds * 1000)))


@dataclass
class DedupModel:
    """Reference model of the route script: marks per (topic, sender, message id) and the topic logs."""

    marks: dict[tuple[str, str, str], DedupMark] = field(default_factory=dict)
    streams: dict[str, list[str]] = field(default_factory=dict)
    _next: int = 0

    def publish(
        self, topic: str, message_id: str, *, now_ms: int, window_ms: int, sender: str = ""
    ) -> tuple[str, bool]:
        """Returns (entry id, duplicate)."""
        key = (topic, sender, message_id)
        mark = self.marks.get(key)
        if decide(mark, now_ms) is Outcome.DUPLICATE:
            assert mark is not None
            return mark.entry_id, True
        self._next += 1
        entry_id = str(self._next)
        self.streams.setdefault(topic, []).append(entry_id)
        self.marks[key] = DedupMark(entry_id, now_ms + window_ms)
        return entry_id, False

    def entry_count(self, topic: str) -> int:
        return len(self.streams.get(topic, []))
