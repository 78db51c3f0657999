"""Publish deduplication: the decision and a reference model (pure, clock injected).

The bus deduplicates in Redis with ``lua/publish.lua``, one atomic script per
publish (or batch): if the mark ``dedup:<topic>:<message id>`` is alive it is a
duplicate and the script returns the entry id stored in it (the window is *not*
extended); otherwise it XADDs the entry and then SETs the mark to the new entry id
with PX window. This is the SET NX PX + XADD of DESIGN §6 in the one order that
survives a failing XADD: Lua scripts have no rollback, so marking first and then
failing to append would leave a mark without an entry; appending first cannot.
The mark is per topic and message id, not per consumer: delivery to every
consumer group is done by the stream itself, so a second subscriber always gets
the message (an earlier registry keyed the mark per consumer and lost messages).

This module states the same rules without Redis so property tests can compare the
Lua script with :class:`DedupModel`, and so the rules can be read in one place.

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
    """Reference model of the publish script: marks per (topic, message id) and the streams."""

    marks: dict[tuple[str, str], DedupMark] = field(default_factory=dict)
    streams: dict[str, list[str]] = field(default_factory=dict)
    _next: int = 0

    def publish(self, topic: str, message_id: str, *, now_ms: int, window_ms: int) -> tuple[str, bool]:
        """Returns (entry id, duplicate)."""
        key = (topic, message_id)
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
