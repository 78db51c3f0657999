"""The outbox entry rules: what the router accepts from an agent's outbox, and why it refuses (pure).

The router (:mod:`swarm.bus.router`) calls :func:`check_entry` on every entry it reads
from ``swarm:{N}:outbox:<id>``; an agent runtime may call the same function before its
XADD to fail fast with the same verdict (the router stays the authority). Keeping the
rules here, without Redis, gives them one definition that every runtime and the tests
share, and keeps a hostile entry's bytes away from any decoder that could crash:

* the sender is the outbox's owner; an entry with a ``sender`` field naming anyone
  else is refused (``sender_mismatch``);
* only the fields ``topic``, ``payload``, ``message_id``, ``content_type`` and
  ``sender`` exist; names and values must be valid UTF-8;
* the payload is at most ``max_payload_bytes`` (measured before decoding, so a huge
  entry costs no decode) and is strict JSON (no ``NaN``/``Infinity``);
* the topic is declared and in ``BusPlan.agents[sender].publish`` (declared by the
  agent and permitted by its role, computed by the compiler);
* ``message_id`` is 1-200 characters without whitespace; by default it is
  ``<sender>:<outbox entry id>`` (unique, so it never collides in the dedup window).

A refusal carries a stable ``reason`` code (:data:`REASONS`, written to receipts and the
``refused`` stream, mapped to the publisher's errors by :func:`refusal_error`), a
human ``detail``, and a short escaped ``preview`` of the payload: a refused entry is
never copied whole.

>>> from swarm.desired import BusPlan  # doctest: +SKIP
>>> check_entry(plan, "planner", "1-0", {b"topic": b"tasks.a", b"payload": b"{}"})  # doctest: +SKIP
Accepted(outbox_id='1-0', topic='tasks.a', message_id='planner:1-0', payload='{}', ...)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Mapping, NoReturn

from swarm.desired import BusPlan
from swarm.errors import (
    AclDeniedError,
    BreakerOpenError,
    BusError,
    InvalidRequestError,
    NotDeclaredError,
    PayloadTooLargeError,
    UndeclaredTopicError,
)

CONTENT_TYPE = "application/json"
MAX_MESSAGE_ID = 200
#: Bytes of a refused payload (and characters of a refused topic) kept in the ``refused`` stream.
PREVIEW_BYTES = 120
FIELDS = frozenset({"topic", "payload", "message_id", "content_type", "sender"})

#: reason code -> what it means (the ``reason`` of a refused receipt and ``refused`` entry).
REASONS: dict[str, str] = {
    "invalid_utf8": "a field name or value is not valid UTF-8",
    "unknown_field": "the entry has a field outside topic, payload, message_id, content_type, sender",
    "missing_field": "the entry has no topic or no payload",
    "too_large": "the payload is over max_payload_bytes",
    "sender_mismatch": "the sender field names another agent than the outbox's owner",
    "invalid_content_type": "content_type is not application/json",
    "invalid_message_id": "message_id is empty, over 200 characters or contains whitespace",
    "undeclared_agent": "the outbox's owner is not declared in the swarm",
    "undeclared_topic": "the topic is not declared in the swarm",
    "acl_denied": "the sender did not declare the topic or its role does not permit publishing it",
    "invalid_json": "the payload is not valid JSON",
    "breaker_open": "the sender's circuit breaker is open",
    "breaker_half_open": "the sender's circuit breaker is half-open (a health probe decides)",
    "route_failed": "a key the router writes is not a stream (an operator's mistake); nothing was appended",
    "inbox_full": "a subscriber's inbox held inbox_max_len unfinished entries: not delivered to that subscriber "
                  "(the topic log and the other subscribers got it)",
    "inbox_missing": "a subscriber's inbox did not exist (the agent was just removed from the spec, or its inbox "
                     "deleted): not delivered to that subscriber; the router never creates an inbox",
    "topic_missing": "the topic's log stream did not exist (the topic was just removed from the spec, or its "
                     "stream deleted): nothing was appended; the router never creates a topic log",
}


@dataclass(frozen=True, slots=True)
class Accepted:
    """An entry that passed every check; the router appends it (breaker and dedup permitting)."""

    outbox_id: str
    topic: str
    message_id: str
    payload: str
    content_type: str = CONTENT_TYPE


@dataclass(frozen=True, slots=True)
class Refused:
    """An entry the router refuses: ``reason`` is a key of :data:`REASONS`."""

    outbox_id: str
    reason: str
    detail: str
    message_id: str = ""
    topic: str = ""
    size: int = 0
    preview: str = ""


def escape(raw: bytes, limit: int = PREVIEW_BYTES) -> str:
    """The first ``limit`` bytes of ``raw`` as printable text: invalid UTF-8 and control
    characters as backslash escapes, so a preview never breaks a decoder or a terminal."""
    text = raw[:limit].decode("utf-8", "backslashreplace")
    out = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return out + ("..." if len(raw) > limit else "")


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


_MESSAGE_ID = re.compile(r"\S{1,%d}" % MAX_MESSAGE_ID)
_FIELD_BYTES = frozenset(f.encode() for f in FIELDS)
_CONTENT_TYPE = CONTENT_TYPE.encode()


def valid_message_id(message_id: str) -> bool:
    """1-200 characters, none of them whitespace."""
    return _MESSAGE_ID.fullmatch(message_id) is not None


def check_entry(plan: BusPlan, sender: str, outbox_id: str, fields: Mapping[bytes, bytes]) -> Accepted | Refused:
    """The verdict on one outbox entry of ``sender`` (fields as raw bytes, as Redis holds them)."""
    payload_raw = fields.get(b"payload")
    topic_raw = fields.get(b"topic")
    if (payload_raw is None or topic_raw is None or not _FIELD_BYTES.issuperset(fields)
            or len(payload_raw) > plan.settings.max_payload_bytes):
        return _refuse_shape(plan, sender, outbox_id, fields)
    try:
        payload = payload_raw.decode("utf-8")
        topic = topic_raw.decode("utf-8")
        raw_mid = fields.get(b"message_id")
        message_id = f"{sender}:{outbox_id}" if raw_mid is None else raw_mid.decode("utf-8")
        claimed = fields.get(b"sender")
        claimed_text = None if claimed is None else claimed.decode("utf-8")
        content_type = fields.get(b"content_type", _CONTENT_TYPE)
        content_type.decode("utf-8")
    except UnicodeDecodeError:
        bad = next(n for n, v in fields.items() if not _is_utf8(v))
        return _refused(outbox_id, "invalid_utf8", f"the value of {escape(bad, 40)!r} is not valid UTF-8", fields)
    if claimed_text is not None and claimed_text != sender:
        return _refused(outbox_id, "sender_mismatch",
                        f"entry claims sender {escape(claimed, 60)!r} in the outbox of {sender!r}", fields)  # type: ignore[arg-type]
    if content_type != _CONTENT_TYPE:
        return _refused(outbox_id, "invalid_content_type",
                        f"content_type must be {CONTENT_TYPE}, not {escape(content_type, 60)!r}", fields)
    if raw_mid is not None and not valid_message_id(message_id):
        return _refused(outbox_id, "invalid_message_id",
                        f"message id {escape(raw_mid, 60)!r} must be 1-{MAX_MESSAGE_ID} characters without whitespace",
                        fields)
    rights = plan.agents.get(sender)
    if rights is None:
        return _refused(outbox_id, "undeclared_agent", f"agent {sender!r} is not declared in swarm {plan.swarm!r}",
                        fields, message_id)
    if topic not in plan.topics:
        return _refused(outbox_id, "undeclared_topic",
                        f"topic {escape(topic_raw, 80)!r} is not declared in swarm {plan.swarm!r}", fields, message_id)
    if topic not in rights.publish:
        return _refused(outbox_id, "acl_denied", f"agent {sender!r} (role {rights.role!r}) may not publish to "
                        f"{topic!r}: not declared by the agent or not permitted by its role", fields, message_id)
    try:
        json.loads(payload, parse_constant=_no_constant)
    except ValueError as exc:
        return _refused(outbox_id, "invalid_json", f"payload is not valid JSON: {exc}", fields, message_id)
    return Accepted(outbox_id, topic, message_id, payload, CONTENT_TYPE)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _refused(outbox_id: str, reason: str, detail: str, fields: Mapping[bytes, bytes], message_id: str = "") -> Refused:
    return Refused(outbox_id, reason, detail, message_id=message_id, topic=escape(fields.get(b"topic", b"")),
                   size=sum(len(k) + len(v) for k, v in fields.items()), preview=escape(fields.get(b"payload", b"")))


def _refuse_shape(plan: BusPlan, sender: str, outbox_id: str, fields: Mapping[bytes, bytes]) -> Refused:
    """Why an entry with missing, unknown or undecodable fields or a payload over the limit is refused."""
    for name in fields:
        if not _is_utf8(name):
            return _refused(outbox_id, "invalid_utf8", f"field name {escape(name, 40)!r} is not valid UTF-8", fields)
    unknown = sorted(n.decode() for n in fields if n not in _FIELD_BYTES)
    if unknown:
        return _refused(outbox_id, "unknown_field", f"unknown fields {[escape(n.encode(), 40) for n in unknown[:5]]}",
                        fields)
    payload = fields.get(b"payload")
    if payload is None or b"topic" not in fields:
        return _refused(outbox_id, "missing_field", "an outbox entry needs the fields topic and payload", fields)
    limit = plan.settings.max_payload_bytes
    return _refused(outbox_id, "too_large", f"payload is {len(payload)} bytes, over the limit of {limit} bytes", fields)


def refusal_error(reason: str, detail: str) -> BusError:
    """The error a publisher raises for a refused receipt (the same distinct errors as the in-process checks)."""
    if reason == "undeclared_topic":
        return UndeclaredTopicError(detail)
    if reason == "acl_denied":
        return AclDeniedError(detail)
    if reason == "too_large":
        return PayloadTooLargeError(detail)
    if reason.startswith("breaker_"):
        return BreakerOpenError(detail)
    if reason == "undeclared_agent":
        return _NotDeclaredBusError(detail)
    return _InvalidEntryError(detail)


class _NotDeclaredBusError(BusError, NotDeclaredError):
    """The router refused an entry of an undeclared agent."""


class _InvalidEntryError(BusError, InvalidRequestError):
    """The router refused a malformed entry (fields, UTF-8, JSON, message id, content type)."""
