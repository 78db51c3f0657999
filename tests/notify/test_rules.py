"""Unit tests of the pure notification rules: which notices, once per state, and their bodies."""

from __future__ import annotations

import hashlib
import hmac
import json

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
    slack_message,
)
from swarm.spec.models import Notification

NOW = "2026-12-02T14:00:00+00:00"
ISSUE = {"file": "specs/swarm.yaml", "line": 12, "column": 5, "severity": "error", "path": "agents[2].role",
         "message": "role 'plnner' is not defined", "related": []}


def synced(digest: str = "sha256:aa", applied: tuple[str, ...] = (), healed: bool = False) -> PassView:
    return PassView(swarm="research", state="synced", digest=digest, attempted_digest=digest,
                    revision="main @ 1a2b3c4d5e", applied=applied, healed=healed)


def failed(state: str = "invalid-spec", error: str = "1 error", digest: str = "sha256:bb") -> PassView:
    return PassView(swarm="research", state=state, digest="sha256:aa", attempted_digest=digest, error=error,
                    issues=(ISSUE,) if state == "invalid-spec" else ())


def run(views: list[PassView]) -> list[str]:
    memory, out = SyncMemory(), []
    for view in views:
        notices, memory = pass_notices(memory, view, NOW)
        out += [n.trigger for n in notices]
    return out


def test_success_is_sent_once_per_applied_digest_not_per_resync() -> None:
    assert run([synced(applied=("push the catalog",)), synced(), synced()]) == ["on-sync-succeeded"]
    assert run([synced("sha256:aa"), synced("sha256:cc", applied=("x",))]) == ["on-sync-succeeded"] * 2


def test_failure_is_sent_once_per_distinct_error_then_recovery_succeeds() -> None:
    views = [synced(), failed(), failed(), failed(), failed(error="2 errors", digest="sha256:dd"), synced()]
    assert run(views) == ["on-sync-succeeded", "on-sync-failed", "on-sync-failed", "on-sync-succeeded"]


def test_retries_of_one_outage_notify_once_and_a_new_outage_again() -> None:
    down = failed("waiting", "Redis unreachable", "sha256:aa")
    assert run([synced(), down, down, down, synced(), down]) == [
        "on-sync-succeeded", "on-sync-failed", "on-sync-succeeded", "on-sync-failed"]


def test_healed_drift_is_its_own_trigger_each_time() -> None:
    heal = synced(applied=("re-create group of web-researcher",), healed=True)
    assert run([synced(), heal, heal]) == ["on-sync-succeeded", "on-drift-healed", "on-drift-healed"]


def test_standby_and_dry_run_states_notify_nothing() -> None:
    assert run([PassView(swarm="research", state="standby"),
                PassView(swarm="research", state="changes-pending")]) == []


def test_invalid_spec_notice_carries_file_line_col() -> None:
    [notice], _ = pass_notices(SyncMemory(), failed(), NOW)
    assert "specs/swarm.yaml:12:5: error: agents[2].role: role 'plnner' is not defined" in notice.summary
    [issue] = notice.details["issues"]
    assert issue["at"] == "specs/swarm.yaml:12:5" and issue["line"] == 12
    assert notice.details["state"] == "invalid-spec" and notice.details["issue_count"] == 1


def test_breaker_opened_once_until_closed_and_expiry_each_time() -> None:
    data = json.dumps({"agent_id": "w", "state": "open", "failures": 4, "cooldown_ms": 30000, "epoch": 2})
    memory, out = EventMemory(), []
    for fields in [{"type": "breaker-opened", "agent": "w", "data": data},
                   {"type": "breaker-opened", "agent": "w", "data": data},  # half-open probe failed: still open
                   {"type": "breaker-closed", "agent": "w", "data": "{}"},
                   {"type": "breaker-opened", "agent": "w", "data": data},
                   {"type": "same", "agent": "w", "data": "{}"},
                   {"type": "expired", "agent": "w", "data": "{}"},
                   {"type": "registered", "agent": "w", "data": "{}"}]:
        notices, memory = event_notices(memory, fields, "research", NOW)
        out += notices
    assert [n.trigger for n in out] == ["on-breaker-opened", "on-breaker-opened", "on-agent-expired"]
    assert out[0].details == {"agent": "w", "failures": 4, "cooldown_ms": 30000, "epoch": 2}
    assert out[0].summary == "circuit breaker of agent w opened after 4 failed health checks (retried after 30s)"


def test_expiry_details_leave_the_registration_metadata_out() -> None:
    data = json.dumps({"agent_id": "w", "role": "worker", "version": "1.0.0", "metadata": {"api_key": "s3cret"}})
    [notice], _ = event_notices(EventMemory(), {"type": "expired", "agent": "w", "data": data}, "research", NOW)
    assert notice.details == {"agent": "w", "role": "worker", "version": "1.0.0"}
    assert "s3cret" not in json.dumps(notice.details)


def test_protection_notifies_changes_and_an_initial_on_only() -> None:
    memory, out = EventMemory(), []
    for active in [False, False, True, True, False, False]:
        notices, memory = protection_notices(memory, active, "research", NOW)
        out += [n.details["active"] for n in notices]
    assert out == [True, False]
    assert [n.details for n in protection_notices(EventMemory(), True, "research", NOW)[0]] == [{"active": True}]


def note(**fields: object) -> Notification:
    return Notification.model_validate({"name": "ops", "triggers": ["on-sync-failed"], **fields})


def test_targets_read_url_and_key_from_the_environment_and_say_what_is_missing() -> None:
    targets, problems = resolve_targets(
        [note(url_env="HOOK"), note(name="b", url="https://x.example/h", secret_env="KEY"), note(name="c", url_env="NOPE")],
        {"HOOK": "https://hooks.slack.com/services/T/B/X", "KEY": "k"})
    assert [(t.name, t.url, t.secret) for t in targets] == [
        ("ops", "https://hooks.slack.com/services/T/B/X", None), ("b", "https://x.example/h", b"k")]
    assert problems == ["notification c: environment variable NOPE (its URL) is not set; not sending"]


def test_json_body_is_the_documented_document_and_is_signed() -> None:
    target = Target(name="ops", url="http://x", format="json", triggers=frozenset({"on-agent-expired"}),
                    headers=(("X-Team", "research"),), secret=b"key")
    notice = Notice("on-agent-expired", "research", NOW, "agent w expired", {"agent": "w"})
    body, headers = render(notice, target)
    assert json.loads(body) == {"version": 1, "trigger": "on-agent-expired", "swarm": "research", "time": NOW,
                                "summary": "agent w expired", "details": {"agent": "w"}}
    assert headers["X-Team"] == "research" and headers["Content-Type"] == "application/json"
    assert headers["X-Swarm-Signature-256"] == "sha256=" + hmac.new(b"key", body, hashlib.sha256).hexdigest()


def test_slack_message_escapes_what_agents_and_specs_write() -> None:
    notice = Notice("on-sync-failed", "research", NOW, "sync error: <!channel> & <http://evil|click>",
                    {"error": "x", "issues": [{"text": "specs/a.yaml:1:2: error: ```<@U1>"}], "issue_count": 1})
    message = slack_message(notice)
    text = json.dumps(message)
    assert "<!channel>" not in text and "<http" not in text and "<@U1>" not in text
    assert message["text"] == "[swarm research] sync error: &lt;!channel&gt; &amp; &lt;http://evil|click&gt;"
    assert [b["type"] for b in message["blocks"]] == ["section", "section", "context"]
    assert message["blocks"][1]["text"]["text"] == "```specs/a.yaml:1:2: error: '''&lt;@U1&gt;```"
