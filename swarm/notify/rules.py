"""Which notifications to send, and their bodies. Pure: no I/O (the sender is :mod:`swarm.notify.sender`).

Three inputs, each with a small memory so that an unchanged state is never notified twice:

* **the end of a reconcile pass** (:func:`pass_notices`, fed a :class:`PassView`):

  - ``on-sync-failed`` once per distinct failure: the key is (pass state, attempted
    digest, error text), so the retries of one outage or passes over one invalid save
    send one notification; a different error, another broken save or a failure after a
    success sends again;
  - ``on-sync-succeeded`` when a synced pass changes what is known to be synced: the
    daemon's first synced pass, a new digest applied, or the first success after a
    failure; resync passes that find nothing to do send nothing;
  - ``on-drift-healed`` for each pass that undid hand-made drift (the spec did not
    change): each heal is a new event, so a fight with another writer is visible.

* **the registry's event stream** ``swarm:{N}:events`` (:func:`event_notices`):
  ``on-breaker-opened`` once per opening (a breaker that opens again from half-open
  without having closed is not notified again), ``on-agent-expired`` for each
  ``expired`` event (one per eviction: the registry's sweep emits exactly one).

* **the protection flag** ``swarm:{N}:protection`` (:func:`protection_notices`), which
  has no event of its own: ``on-protection-mode`` when it turns on (also when the
  daemon starts while it is on) and when it turns off (``details.active`` says which).

Bodies (:func:`render`): format ``json`` is swarm's webhook document::

    {"version": 1, "trigger": "on-sync-failed", "swarm": "research",
     "time": "2026-12-02T14:00:00+00:00", "summary": "one line", "details": {...}}

and format ``slack`` a Slack incoming-webhook message ``{"text": ..., "blocks": [...]}``
with every value from agents or the spec escaped (``&``, ``<``, ``>``), so no
``<!channel>`` or link can be smuggled in.

>>> view = PassView(swarm="s", state="synced", digest="sha256:ab", revision="main@1a2b")
>>> notices, memory = pass_notices(SyncMemory(), view, "2026-01-01T00:00:00+00:00")
>>> [n.trigger for n in notices]
['on-sync-succeeded']
>>> pass_notices(memory, view, "2026-01-01T00:00:30+00:00")[0]
[]
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Sequence

from swarm.keys import event_data as _doc
from swarm.signature import signature
from swarm.spec.models import TRIGGERS, Notification

__all__ = [
    "FAILED_STATES",
    "TRIGGERS",
    "EventMemory",
    "Notice",
    "PassView",
    "SyncMemory",
    "Target",
    "event_notices",
    "pass_notices",
    "protection_notices",
    "render",
    "resolve_targets",
    "signature",
]

#: Pass states that are a failed sync (as ``swarm history`` records them).
FAILED_STATES = frozenset({"invalid-spec", "refused", "error", "waiting"})
#: Lists in details are cut to this many entries (the count says how many there were).
MAX_ITEMS = 50
#: Slack allows 3,000 characters in a section's text.
SLACK_TEXT_MAX = 2900
SIGNATURE_HEADER = "X-Swarm-Signature-256"


@dataclass(frozen=True)
class Notice:
    """One notification, before it is rendered for a target."""

    trigger: str
    swarm: str
    time: str
    summary: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PassView:
    """What the rules need of a finished reconcile pass (built from a ``PassResult``)."""

    swarm: str
    state: str
    #: the enforced spec's digest (the last valid one) and the attempted one
    digest: str | None = None
    attempted_digest: str | None = None
    revision: str = ""
    commit: str | None = None
    #: what the pass was triggered by (file, git, resync, ...)
    cause: str = ""
    applied: tuple[str, ...] = ()
    healed: bool = False
    error: str | None = None
    #: spec issues as :meth:`swarm.errors.SpecIssue.to_dict` gives them
    issues: tuple[Mapping[str, Any], ...] = ()
    message: str = ""


@dataclass(frozen=True)
class SyncMemory:
    """The last sync outcome notified: ("synced", digest) or (state, attempted digest, error)."""

    last: tuple[str | None, ...] | None = None


@dataclass(frozen=True)
class EventMemory:
    open_breakers: frozenset[str] = frozenset()
    #: None until the flag was read once
    protection: bool | None = None


def _cut(items: Sequence[Any]) -> list[Any]:
    return list(items[:MAX_ITEMS])


def _short(digest: str | None) -> str:
    return (digest or "").removeprefix("sha256:")[:12]


def _issue_line(issue: Mapping[str, Any]) -> str:
    where = f"{issue.get('file')}:{issue.get('line')}:{issue.get('column')}" if issue.get("file") else "<spec>"
    path = f"{issue['path']}: " if issue.get("path") else ""
    return f"{where}: {issue.get('severity', 'error')}: {path}{issue.get('message', '')}"


def _with_position(issue: Mapping[str, Any]) -> dict[str, Any]:
    """An issue with ``at`` (file:line:col) and ``text`` (the compiler-form line) added."""
    out: dict[str, Any] = dict(issue)
    line = _issue_line(issue)
    out["at"], out["text"] = line.split(": ", 1)[0], line
    return out


def pass_notices(memory: SyncMemory, view: PassView, now: str) -> tuple[list[Notice], SyncMemory]:
    """The notifications one finished pass causes, and the memory for the next pass."""
    out: list[Notice] = []
    base = {"revision": view.revision, "commit": view.commit, "digest": view.digest, "pass_trigger": view.cause}
    if view.state == "synced":
        if view.healed:
            out.append(Notice("on-drift-healed", view.swarm, now,
                              f"drift healed: {len(view.applied)} action(s) undid changes made outside the spec",
                              {**base, "actions": _cut(view.applied), "action_count": len(view.applied)}))
        key: tuple[str | None, ...] = ("synced", view.digest)
        if memory.last != key:
            what = f"{len(view.applied)} action(s) applied" if view.applied else "nothing to change"
            out.append(Notice("on-sync-succeeded", view.swarm, now,
                              f"synced {view.revision or 'the spec'} ({_short(view.digest)}): {what}",
                              {**base, "actions": _cut(view.applied), "action_count": len(view.applied)}))
        return out, SyncMemory(key)
    if view.state in FAILED_STATES:
        key = (view.state, view.attempted_digest, view.error or "")
        if memory.last == key:
            return [], memory
        issues = [_with_position(i) for i in view.issues]
        if view.state == "invalid-spec":
            summary = (f"the spec is invalid ({len(view.issues)} error(s)); still enforcing "
                       f"{_short(view.digest) or 'nothing'}")
            if view.issues:
                summary += f"; first: {_issue_line(view.issues[0])}"
        else:
            first = (view.error or view.message or "").splitlines()[0:1]
            summary = f"sync {view.state}: {first[0] if first else 'no detail'}"
        details = {**base, "state": view.state, "attempted_digest": view.attempted_digest, "error": view.error,
                   "message": view.message, "issues": _cut(issues), "issue_count": len(view.issues)}
        return [Notice("on-sync-failed", view.swarm, now, summary, details)], SyncMemory(key)
    return [], memory  # standby, dry-run states: not this process's sync


def event_notices(memory: EventMemory, fields: Mapping[str, str], swarm: str, now: str) -> tuple[list[Notice], EventMemory]:
    """The notifications of one entry of ``swarm:{N}:events`` ({type, agent, data})."""
    kind, agent = fields.get("type", ""), fields.get("agent", "")
    if not agent:
        return [], memory
    doc = _doc(fields.get("data", ""))
    if kind == "breaker-opened":
        if agent in memory.open_breakers:
            return [], memory
        details: dict[str, Any] = {"agent": agent}
        details.update((k, doc[k]) for k in ("failures", "cooldown_ms", "epoch", "at_ms") if k in doc)
        cooldown = doc.get("cooldown_ms")
        extra = f" (retried after {int(cooldown) / 1000:g}s)" if isinstance(cooldown, (int, float)) else ""
        failures = doc.get("failures")
        after = f" after {failures} failed health checks" if isinstance(failures, int) else ""
        return ([Notice("on-breaker-opened", swarm, now, f"circuit breaker of agent {agent} opened{after}{extra}", details)],
                replace(memory, open_breakers=memory.open_breakers | {agent}))
    if kind == "breaker-closed":
        return [], replace(memory, open_breakers=memory.open_breakers - {agent})
    if kind == "expired":
        # the registration's role, version and capabilities; never its metadata (it may be private)
        details = {"agent": agent}
        details.update((k, doc[k]) for k in ("role", "version", "capabilities") if k in doc)
        return [Notice("on-agent-expired", swarm, now,
                       f"agent {agent} expired: its lease ran out without a heartbeat", details)], memory
    return [], memory


def protection_notices(memory: EventMemory, active: bool, swarm: str, now: str) -> tuple[list[Notice], EventMemory]:
    """``on-protection-mode`` when the flag changes (or is on when first read)."""
    if memory.protection == active or (memory.protection is None and not active):
        return [], replace(memory, protection=active)
    summary = ("mass-eviction protection ON: the registry evicts no expired agent (more than half expired at once)"
               if active else "mass-eviction protection OFF: renewals returned, evictions resume")
    return [Notice("on-protection-mode", swarm, now, summary, {"active": active})], replace(memory, protection=active)


# --------------------------------------------------------------------------- targets and bodies


@dataclass(frozen=True)
class Target:
    """A notification of the spec with its URL and key read from the environment."""

    name: str
    url: str
    format: str
    triggers: frozenset[str]
    headers: tuple[tuple[str, str], ...] = ()
    secret: bytes | None = None
    timeout: float = 5.0
    max_attempts: int = 5

    def wants(self, notice: Notice) -> bool:
        return notice.trigger in self.triggers


def resolve_targets(notifications: Iterable[Notification], env: Mapping[str, str]) -> tuple[list[Target], list[str]]:
    """Targets of the spec's ``notifications`` (URL and key from ``env``), and what is missing.

    A target whose ``url_env`` or ``secret_env`` is unset is left out (an unsigned post
    to a receiver expecting signatures would be refused anyway); the second list says why."""
    targets: list[Target] = []
    problems: list[str] = []
    for n in notifications:
        url = n.url if n.url is not None else env.get(n.url_env or "", "")
        if not url:
            problems.append(f"notification {n.name}: environment variable {n.url_env} (its URL) is not set; not sending")
            continue
        if not url.startswith(("https://", "http://")):
            problems.append(f"notification {n.name}: {n.url_env} is not an http(s) URL; not sending")
            continue
        secret = None
        if n.secret_env is not None:
            value = env.get(n.secret_env, "")
            if not value:
                problems.append(f"notification {n.name}: environment variable {n.secret_env} (its key) is not set; not sending")
                continue
            secret = value.encode()
        targets.append(Target(name=n.name, url=url, format=n.format, triggers=frozenset(n.triggers),
                              headers=tuple(sorted(n.headers.items())), secret=secret,
                              timeout=float(n.timeout_seconds), max_attempts=n.max_attempts))
    return targets, problems


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_EMOJI = {
    "on-sync-succeeded": ":white_check_mark:",
    "on-sync-failed": ":x:",
    "on-drift-healed": ":wrench:",
    "on-breaker-opened": ":rotating_light:",
    "on-protection-mode": ":shield:",
    "on-agent-expired": ":hourglass:",
}


def _slack_lines(notice: Notice) -> list[str]:
    d = notice.details
    lines: list[str] = []
    if d.get("issues"):
        lines += [str(i["text"]) for i in d["issues"][:10]]
        if int(d.get("issue_count", 0)) > 10:
            lines.append(f"... and {int(d['issue_count']) - 10} more")
    elif d.get("actions"):
        lines += [str(a) for a in d["actions"][:10]]
        if int(d.get("action_count", 0)) > 10:
            lines.append(f"... and {int(d['action_count']) - 10} more")
    elif d.get("error"):
        lines.append(str(d["error"]))
    return lines


def slack_message(notice: Notice) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` (the fallback) and blocks."""
    head = f"[swarm {notice.swarm}] {notice.summary}"
    blocks: list[dict[str, Any]] = [{
        "type": "section",
        "text": {"type": "mrkdwn", "text": _slack_escape(f"{_EMOJI.get(notice.trigger, '')} *{notice.swarm}*: "
                                                         f"{notice.summary}")[:SLACK_TEXT_MAX]},
    }]
    lines = _slack_lines(notice)
    if lines:
        body = "\n".join(lines).replace("```", "'''")
        blocks.append({"type": "section",
                       "text": {"type": "mrkdwn", "text": "```" + _slack_escape(body)[:SLACK_TEXT_MAX] + "```"}})
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": _slack_escape(f"{notice.trigger} · {notice.time}")}]})
    return {"text": _slack_escape(head)[:SLACK_TEXT_MAX], "blocks": blocks}


def json_document(notice: Notice) -> dict[str, Any]:
    return {"version": 1, "trigger": notice.trigger, "swarm": notice.swarm, "time": notice.time,
            "summary": notice.summary, "details": dict(notice.details)}


def render(notice: Notice, target: Target) -> tuple[bytes, dict[str, str]]:
    """The request body and headers of ``notice`` for ``target``."""
    doc = slack_message(notice) if target.format == "slack" else json_document(notice)
    body = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str).encode()
    headers = {**dict(target.headers), "Content-Type": "application/json",
               "X-Swarm-Notification": target.name, "X-Swarm-Trigger": notice.trigger}
    if target.secret is not None:
        headers[SIGNATURE_HEADER] = signature(target.secret, body)
    return body, headers
