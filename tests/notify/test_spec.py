"""The ``notifications`` of the Swarm document: structure, checks at file:line:col, the README example."""

from __future__ import annotations

import re

import pytest
import yaml

from swarm.errors import SpecError
from swarm.spec.loader import parse_spec_texts
from tests.reconcile.specdata import REPO

HEAD = """apiVersion: swarm/v1
kind: Swarm
metadata: {name: research}
notifications:
"""


def problems(body: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_spec_texts({"specs/swarm.yaml": (HEAD + body).encode()})
    return [i.format() for i in caught.value.issues]


def test_a_valid_list_loads() -> None:
    loaded = parse_spec_texts({"specs/swarm.yaml": (HEAD + """\
  - {name: ops, url: "https://hooks.example.com/x", triggers: [on-sync-failed]}
  - {name: chat, url_env: SLACK_URL, format: slack, triggers: [on-agent-expired], secret_env: KEY}
""").encode()})
    [ops, chat] = loaded.spec.swarm.notifications
    assert ops.format == "json" and ops.max_attempts == 5 and chat.url is None and chat.url_env == "SLACK_URL"


def test_bad_scheme_and_unknown_trigger_are_errors_at_file_line_col() -> None:
    assert problems("""\
  - name: ops
    url: ftp://hooks.example.com/x
    triggers: [on-sync-failed, on-sync-faild]
""") == [
        "specs/swarm.yaml:6:10: error: notifications[0].url: a notification URL must start with https:// or http://, got 'ftp://'",
        "specs/swarm.yaml:7:32: error: notifications[0].triggers[1]: expected 'on-sync-succeeded', 'on-sync-failed', "
        "'on-drift-healed', 'on-breaker-opened', 'on-protection-mode' or 'on-agent-expired', got 'on-sync-faild'",
    ]


@pytest.mark.parametrize("url, expected", [
    ("https://user:pw@hooks.example.com/x", "may not contain credentials (user:password@)"),
    ("hooks.example.com/x", "must start with https:// or http://"),
    ("https://hooks example.com/x", "not a URL of the form"),
])
def test_other_bad_urls(url: str, expected: str) -> None:
    [line] = problems(f"  - {{name: ops, url: {url!r}, triggers: [on-sync-failed]}}\n")
    assert line.startswith("specs/swarm.yaml:5:") and expected in line, line


def test_semantic_checks_name_every_place() -> None:
    assert problems("""\
  - {name: ops, url: "https://a.example/", triggers: [on-sync-failed]}
  - {name: ops, url: "https://a.example/", url_env: HOOK, triggers: [on-sync-failed], headers: {Content-Type: x}}
  - {name: bare, triggers: [on-sync-failed]}
""") == [
        "specs/swarm.yaml:6:12: error: notifications[1].name: duplicate notification 'ops' (also declared at "
        "specs/swarm.yaml:5:12 as notifications[0].name)",
        "specs/swarm.yaml:6:22: error: notifications[1].url: give exactly one of url (the URL itself) and url_env "
        "(the environment variable holding it)",
        "specs/swarm.yaml:6:111: error: notifications[1].headers.Content-Type: header 'Content-Type' is set by swarm "
        "itself and may not be given here",
        "specs/swarm.yaml:7:12: error: notifications[2].name: a notification needs url or url_env (the environment "
        "variable holding the URL)",
    ]


def test_a_trigger_listed_twice_is_refused() -> None:
    [line] = problems('  - {name: ops, url: "https://a.example/", triggers: [on-sync-failed, on-sync-failed]}\n')
    assert line.startswith("specs/swarm.yaml:5:") and "each trigger may be listed once" in line, line


def test_the_readme_example_is_a_valid_spec() -> None:
    text = (REPO / "README.md").read_text()
    block = re.search(r"^## Notifications\n.*?^```yaml\n(.*?)^```", text, flags=re.M | re.S)
    assert block is not None
    notes = yaml.safe_load(block.group(1))["notifications"]
    loaded = parse_spec_texts({"specs/swarm.yaml": (HEAD.replace("notifications:\n", "") + yaml.safe_dump(
        {"notifications": notes})).encode()})
    assert [n.name for n in loaded.spec.swarm.notifications] == ["ops", "team-slack"]
