"""Every semantic check both ways: a spec that trips it, and the fixed spec that does not."""

from __future__ import annotations

from swarm.errors import SpecIssue
from swarm.spec.checks import check_spec
from tests.spec.specdata import AGENT, SWARM, SWARM_FILE, agent_file, at, issues, load, one


def _clean(**texts: str) -> None:
    loaded = load(**texts)
    assert check_spec(loaded.spec, loaded.sources) == []


def test_base_spec_is_clean() -> None:
    _clean(swarm=SWARM, w1=AGENT)


def test_duplicate_agent_id_across_files_names_both_places() -> None:
    dup = AGENT.replace("id: w1", "id: boss").replace("8002", "8003")
    issue = one(issues(swarm=SWARM, w1=dup), "duplicate agent id 'boss'")
    assert issue.position == at(agent_file("w1"), dup, "boss")
    first = at(SWARM_FILE, SWARM, "boss")
    assert issue.related == (first,)
    assert str(first) in issue.message and "agents[0].id" in issue.message
    assert issue.path == "agents[1].id"
    _clean(swarm=SWARM, w1=dup.replace("id: boss", "id: w7"))


def test_duplicate_topic_names_both_places() -> None:
    text = SWARM.replace("  - name: results.a\n", "  - name: results.a\n  - name: tasks.a\n")
    issue = one(issues(swarm=text), "duplicate topic 'tasks.a'")
    assert issue.position == at(SWARM_FILE, text, "tasks.a\n", 1)
    assert issue.related == (at(SWARM_FILE, text, "tasks.a\n", 0),)
    assert issue.path == "topics[3].name"
    _clean(swarm=SWARM.replace("  - name: results.a\n", "  - name: results.a\n  - name: tasks.b\n"))


def test_unknown_role_with_did_you_mean() -> None:
    text = AGENT.replace("role: worker", "role: wroker")
    issue = one(issues(swarm=SWARM, w1=text), "role 'wroker' is not defined")
    assert issue.format() == (
        f"{at(agent_file('w1'), text, 'wroker')}: error: agents[1].role: "
        "role 'wroker' is not defined (did you mean 'worker'?)"
    )
    _clean(swarm=SWARM, w1=AGENT)


def test_unknown_role_without_close_match_lists_roles() -> None:
    text = AGENT.replace("role: worker", "role: zebra")
    issue = one(issues(swarm=SWARM, w1=text), "role 'zebra' is not defined")
    assert "(defined roles: planner, worker)" in issue.message


def test_undeclared_topic() -> None:
    text = AGENT.replace("publishes: [results.a]", "publishes: [results.b]")
    issue = one(issues(swarm=SWARM, w1=text), "topic 'results.b' is not declared")
    assert "did you mean 'results.a'?" in issue.message
    assert issue.position == at(agent_file("w1"), text, "results.b")
    assert issue.path == "agents[1].publishes[0]"
    _clean(swarm=SWARM.replace("  - name: results.a\n", "  - name: results.a\n  - name: results.b\n"), w1=text)


def test_topic_not_permitted_by_role_default_deny() -> None:
    text = AGENT.replace("publishes: [results.a]", "publishes: [results.a, tasks.a]")
    issue = one(issues(swarm=SWARM, w1=text), "may not publish to 'tasks.a'")
    assert "no publish rule of role 'worker' matches (default deny)" in issue.message
    assert issue.path == "agents[1].publishes[1]"
    assert issue.related == (at(SWARM_FILE, SWARM, 'publish: ["results.*"]'),)  # the role
    fixed = SWARM.replace('    publish: ["results.*"]', '    publish: ["results.*", "tasks.a"]')
    _clean(swarm=fixed, w1=text)


def test_topic_denied_names_the_deny_rule() -> None:
    text = SWARM.replace("publishes: [tasks.a]", "publishes: [tasks.a, tasks.admin.reset]")
    issue = one(issues(swarm=text), "may not publish to 'tasks.admin.reset'")
    assert "denied by deny.publish: tasks.admin.>" in issue.message
    _clean(swarm=text.replace('      publish: ["tasks.admin.>"]', '      publish: ["tasks.other.>"]'))


def test_publish_and_subscribe_are_checked_separately() -> None:
    # the worker may subscribe to tasks.* but not publish there: the action matters
    text = AGENT.replace("subscribes: [tasks.a]", "subscribes: [tasks.a, results.a]")
    issue = one(issues(swarm=SWARM, w1=text), "may not subscribe to 'results.a'")
    assert issue.path == "agents[1].subscribes[1]"


def test_malformed_patterns() -> None:
    text = SWARM.replace('publish: ["results.*"]', 'publish: ["results.>.x", "results..a", "res*"]')
    found = issues(swarm=text)
    assert one(found, "'>' must be the last token").path == "roles.worker.publish[0]"
    empty = one(found, "empty token")
    assert empty.path == "roles.worker.publish[1]"
    assert empty.position == at(SWARM_FILE, text, '"results..a"')
    assert one(found, "outside [a-z0-9_-]").path == "roles.worker.publish[2]"
    # the broken role is not used for permission checks: no cascade of denials
    assert not [i for i in found if "may not" in i.message]


def test_malformed_deny_pattern() -> None:
    text = SWARM.replace('      publish: ["tasks.admin.>"]', '      publish: ["tasks.>.admin"]')
    issue = one(issues(swarm=text), "malformed ACL pattern")
    assert issue.path == "roles.planner.deny.publish[0]"


def test_port_collision_names_both_agents() -> None:
    text = AGENT.replace("8002", "8001")
    issue = one(issues(swarm=SWARM, w1=text), "port 8001")
    assert "agent 'w1' is also used by agent 'boss'" in issue.message
    assert issue.position == at(agent_file("w1"), text, "8001")
    assert issue.related == (at(SWARM_FILE, SWARM, "8001"),)
    _clean(swarm=SWARM, w1=AGENT)


def test_heartbeat_must_be_shorter_than_ttl() -> None:
    text = SWARM.replace("heartbeat_interval: 10", "heartbeat_interval: 30")
    issue = one(issues(swarm=text), "must be less than ttl_seconds (30)")
    assert issue.path == "registry.heartbeat_interval"
    assert issue.position == at(SWARM_FILE, text, "30", 1)
    assert issue.related == (at(SWARM_FILE, text, "30", 0),)  # ttl_seconds
    _clean(swarm=SWARM.replace("heartbeat_interval: 10", "heartbeat_interval: 29"))


def test_default_heartbeat_with_tiny_ttl_is_reported_at_ttl() -> None:
    text = SWARM.replace("  ttl_seconds: 30\n  heartbeat_interval: 10\n", "  ttl_seconds: 1\n")
    issue = one(issues(swarm=text), "default heartbeat_interval")
    assert issue.path == "registry.ttl_seconds"
    _clean(swarm=SWARM.replace("  ttl_seconds: 30\n  heartbeat_interval: 10\n", "  ttl_seconds: 2\n"))


def test_structural_and_semantic_issues_come_together() -> None:
    bad = AGENT.replace("port: 8002", "port: [1]")
    sem = SWARM.replace("heartbeat_interval: 10", "heartbeat_interval: 99")
    found: list[SpecIssue] = issues(swarm=sem, w1=bad)
    assert {i.path for i in found} == {"agents[1].port", "registry.heartbeat_interval"}


def test_handler_may_not_live_in_a_module_the_image_reserves() -> None:
    for handler, what in (("server:handle", "the generated server.py"), ("swarm.ext:handle", "the swarm package")):
        text = AGENT + f"handler: {handler}\n"
        issue = one(issues(swarm=SWARM, w1=text), f"handler {handler!r}")
        assert what in issue.message
        assert issue.path == "agents[1].handler"
        assert issue.position == at(agent_file("w1"), text, handler)
    _clean(swarm=SWARM, w1=AGENT + "handler: servers.swarm:handle\n")


def test_requirements_may_not_repeat_a_generated_pin_or_themselves() -> None:
    text = AGENT + "requirements: [anthropic, Uvicorn>=0.30, 'httpx-sse>=0.4', ANTHROPIC==1]\n"
    found = issues(swarm=SWARM, w1=text)
    pinned = one(found, "'uvicorn' is pinned by the generated requirements.txt")
    assert pinned.path == "agents[1].requirements[1]" and pinned.position == at(agent_file("w1"), text, "Uvicorn")
    twice = one(found, "requirement 'anthropic' is listed twice")
    assert twice.path == "agents[1].requirements[3]"
    assert twice.related == (at(agent_file("w1"), text, "anthropic"),)
    _clean(swarm=SWARM, w1=AGENT + "requirements: [anthropic, 'httpx-sse>=0.4']\n")


def test_generated_requirement_names_match_the_compiler() -> None:
    from swarm.runtimes.python.runtime import DISTRIBUTION, REQUIREMENT_RANGES
    from swarm.spec.checks import GENERATED_REQUIREMENTS

    assert set(GENERATED_REQUIREMENTS) == {*REQUIREMENT_RANGES, DISTRIBUTION}
