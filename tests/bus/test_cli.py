"""``swarm bus apply|publish|read|breaker`` end to end on the example spec (specs/) against a
real redis-server and a real router process (``swarm bus route``), through the real
``swarm`` entry point."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from swarm.cli import main
from swarm.desired import desired_from_spec
from swarm.spec.loader import load_spec_full
from tests.support.router import RouterFactory
from tests.support.services import RedisServer


@pytest.fixture
def compiled(tmp_path: Path, repo_root: Path) -> Path:
    loaded = load_spec_full(repo_root / "specs")
    desired = desired_from_spec(loaded.spec, loaded.digest)
    out = tmp_path / "compiled" / "research"
    out.mkdir(parents=True)
    (out / "bus.json").write_text(desired.bus.model_dump_json(indent=2))
    (out / "acl.json").write_text(desired.acl.model_dump_json(indent=2))
    return out


@pytest.fixture
def bare_cli(redis_server: RedisServer, repo_root: Path, compiled: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """`swarm bus ARGV... --spec specs/ --redis-url <test redis>` with the bus applied, no router."""
    monkeypatch.setenv("SWARM_BUS_SECRET", "cli-secret")
    common = ["--spec", str(repo_root / "specs"), "--redis-url", redis_server.url]

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["bus", *argv, *common])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = run("apply", str(compiled))
    assert code == 0 and "created consumer group swarm:{research}:inbox:web-researcher/web-researcher" in out
    return run


@pytest.fixture
def cli(bare_cli, redis_server: RedisServer, router_factory: RouterFactory):  # type: ignore[no-untyped-def]
    """The same, with a router routing the swarm."""
    router_factory(redis_url=redis_server.url, swarm="research")
    return bare_cli


def test_apply_twice_says_up_to_date(cli, compiled: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = cli("apply", str(compiled))
    assert code == 0 and out.strip() == "bus of swarm 'research' is up to date"


def test_apply_of_a_missing_directory_is_usage_error(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = cli("apply", str(tmp_path / "nope"))
    assert code == 2 and "swarm compile" in err


def test_publish_prints_the_topic_entry_id_then_duplicate(cli, redis_server: RedisServer) -> None:  # type: ignore[no-untyped-def]
    code, first, _ = cli("publish", "tasks.research", '{"q": "bees"}', "--as", "architect", "--id", "m-1")
    assert code == 0 and first.strip().endswith("-0")
    code, again, _ = cli("publish", "tasks.research", '{"q": "bees"}', "--as", "architect", "--id", "m-1")
    assert code == 0 and again.strip() == f"{first.strip()} duplicate"
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    log = r.xrange("swarm:{research}:topic:tasks.research")
    assert [e[0] for e in log] == [first.strip()] and log[0][1]["sender"] == "architect"
    # through the agent's outbox: the router authenticated it as the architect's and deleted it
    assert r.xlen("swarm:{research}:outbox:architect") == 0
    assert [f["status"] for _, f in r.xrange("swarm:{research}:receipts:architect")] == ["routed", "duplicate"]
    r.close()


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["tasks.admin.reset", "{}", "--as", "architect"], 1, "deny.publish: tasks.admin.>"),
        (["tasks.nope", "{}", "--as", "architect"], 1, "not declared"),
        (["results.research", "{}", "--as", "architect"], 1, "default deny"),
        # the role (worker: results.*) allows it, the agent does not declare it: least privilege
        (["results.summary", "{}", "--as", "paper-researcher"], 1, "does not declare it in its publishes"),
        (["tasks.research", json.dumps({"x": "y" * (1 << 20)}), "--as", "architect"], 1, "over the limit of 1048576"),
        (["tasks.research", "{not json", "--as", "architect"], 2, "not valid JSON"),
        (["tasks.research", "{}", "--as", "ghost"], 2, "'ghost' is not declared"),
        (["tasks.research", "{}", "--as", "architect", "--id", "two words"], 2, "message id"),
        (["tasks.research", "{}", "--as", "architect", "--id", ""], 2, "message id"),
        (["tasks.research", "{}", "--as", "architect", "--id", "x" * 201], 2, "message id"),
    ],
)
def test_publish_refusals_and_usage_errors(cli, redis_server: RedisServer, argv: list[str], code: int, needle: str) -> None:  # type: ignore[no-untyped-def]
    got, out, err = cli("publish", *argv)
    assert got == code and needle in err and out == ""
    r = redis.Redis.from_url(redis_server.url)
    assert r.xlen("swarm:{research}:outbox:architect") == 0 and not r.exists("swarm:{research}:refused")
    r.close()


def test_publish_without_a_router_exits_1_and_says_to_run_one(bare_cli, redis_server: RedisServer) -> None:  # type: ignore[no-untyped-def]
    code, out, err = bare_cli("publish", "tasks.research", "{}", "--as", "architect", "--timeout", "0.3")
    assert code == 1 and out == "" and "swarm bus route" in err and "Traceback" not in err
    r = redis.Redis.from_url(redis_server.url)
    assert r.xlen("swarm:{research}:outbox:architect") == 1  # waiting for a router, not lost
    r.close()


def test_publish_reads_the_payload_from_stdin(cli, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO('{"from": "stdin"}'))
    code, entry, _ = cli("publish", "tasks.research", "-", "--as", "architect")
    assert code == 0
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    assert json.loads(r.xrange("swarm:{research}:topic:tasks.research")[0][1]["payload"]) == {"from": "stdin"}
    assert r.xrange("swarm:{research}:topic:tasks.research")[0][0] == entry.strip()
    r.close()


def test_breaker_show_and_reset_and_refused_publish(cli, redis_server: RedisServer) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = cli("breaker", "architect")
    assert code == 0 and out.startswith("architect: closed, failures 0")
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    now = int(r.time()[0]) * 1000
    r.hset("swarm:{research}:breaker:architect", mapping={
        "state": "open", "failures": "4", "epoch": "1", "opened_at_ms": str(now), "cooldown_ms": "30000", "probe": "0"})
    code, out, _ = cli("breaker", "architect")
    assert code == 0 and "open, failures 4" in out and "cooldown left" in out
    code, _, err = cli("publish", "tasks.research", "{}", "--as", "architect")
    assert code == 1 and "circuit breaker is open" in err
    code, out, _ = cli("breaker", "architect", "--reset")
    assert code == 0 and out.startswith("reset: architect: closed")
    assert cli("publish", "tasks.research", "{}", "--as", "architect")[0] == 0
    events = r.xrange("swarm:{research}:events")
    assert [e[1]["type"] for e in events] == ["breaker-closed"]
    r.close()


def test_read_shows_the_topic_log_without_touching_any_inbox_and_checks_rights(cli, redis_server: RedisServer) -> None:  # type: ignore[no-untyped-def]
    for i in range(3):
        cli("publish", "tasks.research", json.dumps({"i": i}), "--as", "architect", "--id", f"r-{i}")
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    inbox = "swarm:{research}:inbox:web-researcher"
    before = r.xinfo_groups(inbox)
    code, out, _ = cli("read", "tasks.research", "--as", "web-researcher", "--count", "2")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [x["payload"] for x in lines] == [{"i": 1}, {"i": 2}]
    assert {x["sender"] for x in lines} == {"architect"} and lines[0]["message_id"] == "r-1"
    assert r.xinfo_groups(inbox) == before and before[0]["last-delivered-id"] == "0-0"
    r.close()
    code, _, err = cli("read", "tasks.research", "--as", "architect")
    assert code == 1 and "may not subscribe" in err
    code, _, err = cli("read", "tasks.nope", "--as", "auditor")
    assert code == 1 and "'tasks.nope' is not declared" in err


def test_read_shows_non_utf8_and_non_json_entries_escaped_never_a_traceback(cli, redis_server: RedisServer) -> None:  # type: ignore[no-untyped-def]
    r = redis.Redis.from_url(redis_server.url)
    stream = "swarm:{research}:topic:tasks.research"
    r.xadd(stream, {b"message_id": b"bad-\xff", b"sender": b"\xfe\x1b[31m", b"payload": b'{"x": "\xff"}'})
    r.xadd(stream, {b"message_id": b"text", b"sender": b"architect", b"payload": b"not json"})
    r.xadd(stream, {b"junk": b"only"})
    r.close()
    code, out, err = cli("read", "tasks.research", "--as", "auditor")
    assert code == 0 and "Traceback" not in err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["message_id"] == "bad-\\xff" and lines[0]["payload"] == '{"x": "\\xff"}'
    assert lines[0]["sender"] == "\\xfe\x1b[31m"
    assert lines[1]["payload"] == "not json"
    assert lines[2]["payload"] is None and lines[2]["message_id"] is None


def test_read_follow_prints_new_entries(cli, redis_server: RedisServer, repo_root: Path) -> None:  # type: ignore[no-untyped-def]
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarm", "bus", "read", "tasks.research", "--as", "auditor", "--follow",
         "--spec", str(repo_root / "specs"), "--redis-url", redis_server.url],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        import time

        time.sleep(0.8)  # let it start blocking; an entry published earlier would show anyway via XRANGE
        cli("publish", "tasks.research", '{"late": true}', "--as", "architect")
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["payload"] == {"late": True}
        redis_server.stop()  # down longer than redis-py's own retries: the follower must wait it out
        time.sleep(1.5)
        redis_server.start()
        assert cli("publish", "tasks.research", '{"after": "restart"}', "--as", "architect")[0] == 0
        assert json.loads(proc.stdout.readline())["payload"] == {"after": "restart"}
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_breaker_of_an_unknown_agent_is_a_usage_error_and_resets_nothing(cli, redis_server: RedisServer) -> None:  # type: ignore[no-untyped-def]
    for argv in (["breaker", "ghost"], ["breaker", "ghost", "--reset"]):
        code, _, err = cli(*argv)
        assert code == 2 and "'ghost' is not declared" in err
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    assert not r.exists("swarm:{research}:breaker:ghost")
    r.close()


# -- --spec finds the swarm and its Redis; --redis-url overrides it ---------------------------

UNREACHABLE = "redis://127.0.0.1:1/0"


def spec_copy(repo_root: Path, where: Path, *, redis_url: str, name: str = "research", extra: str = "") -> Path:
    """specs/ copied to ``where`` with another bus.redis_url (and swarm name, description)."""
    shutil.copytree(repo_root / "specs", where)
    text = (where / "swarm.yaml").read_text()
    text = text.replace("redis_url: redis://127.0.0.1:6379/0", f"redis_url: {redis_url}", 1)
    text = text.replace("  name: research\n", f"  name: {name}\n", 1)
    text = text.replace("  description: Plans", f"  description: {extra}Plans", 1)
    (where / "swarm.yaml").write_text(text)
    assert load_spec_full(where).spec.swarm.bus.redis_url == redis_url
    return where


def compile_spec(spec: Path, out: Path) -> Path:
    loaded = load_spec_full(spec)
    desired = desired_from_spec(loaded.spec, loaded.digest)
    out.mkdir(parents=True)
    (out / "bus.json").write_text(desired.bus.model_dump_json(indent=2))
    (out / "acl.json").write_text(desired.acl.model_dump_json(indent=2))
    return out


@pytest.fixture
def swarm_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    """`swarm ARGV...` in-process, from an empty working directory (no specs/ to fall back on)."""
    monkeypatch.setenv("SWARM_BUS_SECRET", "cli-secret")
    monkeypatch.chdir(tmp_path)

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_every_bus_command_takes_the_redis_url_from_the_spec(swarm_cli, repo_root: Path, tmp_path: Path, redis_server: RedisServer, router_factory: RouterFactory) -> None:  # type: ignore[no-untyped-def]
    spec = str(spec_copy(repo_root, tmp_path / "spec", redis_url=redis_server.url))
    code, out, _ = swarm_cli("bus", "apply", "--spec", spec)  # no COMPILED_DIR: the spec's desired state
    assert code == 0 and "created consumer group swarm:{research}:inbox:web-researcher/web-researcher" in out
    assert "created Redis user swarm.research.architect" in out
    router_factory(redis_url=redis_server.url, swarm="research")
    assert swarm_cli("bus", "apply", "--spec", spec)[1].strip() == "bus of swarm 'research' is up to date"
    code, entry, _ = swarm_cli("bus", "publish", "tasks.research", '{"q": 1}', "--as", "architect", "--spec", spec)
    assert code == 0 and entry.strip().endswith("-0")
    code, out, _ = swarm_cli("bus", "read", "tasks.research", "--as", "auditor", "--spec", spec)
    assert code == 0 and json.loads(out)["entry_id"] == entry.strip()
    code, out, _ = swarm_cli("bus", "breaker", "architect", "--spec", spec)
    assert code == 0 and out.startswith("architect: closed")
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    assert r.xlen("swarm:{research}:topic:tasks.research") == 1
    # the reconciler builds the same desired state: what apply wrote is what it would write
    loaded = load_spec_full(spec)
    assert r.get("swarm:{research}:bus") == desired_from_spec(loaded.spec, loaded.digest).bus.model_dump_json()
    r.close()


def test_the_spec_url_is_really_used_and_redis_url_overrides_it(swarm_cli, repo_root: Path, tmp_path: Path, redis_server: RedisServer, router_factory: RouterFactory) -> None:  # type: ignore[no-untyped-def]
    spec = str(spec_copy(repo_root, tmp_path / "spec", redis_url=UNREACHABLE))
    commands = [
        ["apply"],
        ["publish", "tasks.research", "{}", "--as", "architect"],
        ["read", "tasks.research", "--as", "auditor"],
        ["breaker", "architect"],
    ]
    for argv in commands:
        code, _, err = swarm_cli("bus", *argv, "--spec", spec)
        assert code == 2 and "unreachable" in err and "127.0.0.1:1" in err, (argv, err)
    for argv in commands:
        code, _, err = swarm_cli("bus", *argv, "--spec", spec, "--redis-url", redis_server.url)
        assert code == 0, (argv, err)
        if argv == ["apply"]:
            router_factory(redis_url=redis_server.url, swarm="research")


def test_apply_of_a_compiled_directory(swarm_cli, repo_root: Path, tmp_path: Path, redis_server: RedisServer) -> None:  # type: ignore[no-untyped-def]
    spec = spec_copy(repo_root, tmp_path / "spec", redis_url=redis_server.url)
    compiled = str(compile_spec(spec, tmp_path / "compiled" / "research"))
    # without --spec (and no specs/ here) the URL compiled into bus.json is used
    code, out, err = swarm_cli("bus", "apply", compiled)
    assert code == 0 and "created consumer group swarm:{research}:inbox:web-researcher/web-researcher" in out and err == ""
    code, out, err = swarm_cli("bus", "apply", compiled, "--spec", str(spec))
    assert code == 0 and out.strip() == "bus of swarm 'research' is up to date" and err == ""
    # an explicit --spec gives the URL, and must be the same swarm
    unreachable = spec_copy(repo_root, tmp_path / "spec-down", redis_url=UNREACHABLE)
    code, _, err = swarm_cli("bus", "apply", compiled, "--spec", str(unreachable))
    assert code == 2 and "127.0.0.1:1" in err and "another revision" in err
    other = spec_copy(repo_root, tmp_path / "spec-other", redis_url=redis_server.url, name="other")
    code, _, err = swarm_cli("bus", "apply", compiled, "--spec", str(other))
    assert code == 2 and "is swarm 'research' but the spec" in err and "'other'" in err
    # a newer revision of the spec than the compiled directory: applied, with a warning
    newer = spec_copy(repo_root, tmp_path / "spec-newer", redis_url=redis_server.url, extra="Edited. ")
    code, out, err = swarm_cli("bus", "apply", compiled, "--spec", str(newer))
    assert code == 0 and "up to date" in out and "compiled from another revision" in err


def test_apply_prune_of_most_topics_exits_1_until_forced(cli, compiled: Path, redis_server: RedisServer) -> None:  # type: ignore[no-untyped-def]
    from swarm.desired import BusPlan

    plan = BusPlan.model_validate_json((compiled / "bus.json").read_text())
    keep = {"tasks.research": plan.topics["tasks.research"]}
    (compiled / "bus.json").write_text(plan.model_copy(update={"topics": keep}).model_dump_json())
    code, _, err = cli("apply", str(compiled), "--prune")
    assert code == 1 and "more than half" in err and "--force-prune" in err
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    assert r.exists("swarm:{research}:topic:results.research") == 1
    code, out, _ = cli("apply", str(compiled), "--prune", "--force-prune")
    assert code == 0 and "pruned stream swarm:{research}:topic:results.research" in out
    assert r.exists("swarm:{research}:topic:results.research") == 0
    r.close()


def test_publish_and_breaker_under_o_json(cli, redis_server: RedisServer) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = cli("publish", "tasks.research", '{"q": "ants"}', "--as", "architect", "--id", "j-1", "-o", "json")
    first = json.loads(out)
    assert code == 0 and first["duplicate"] is False and first["topic"] == "tasks.research"
    code, out, _ = cli("publish", "tasks.research", '{"q": "ants"}', "--as", "architect", "--id", "j-1", "-o", "json")
    assert code == 0 and json.loads(out) == {**first, "duplicate": True}
    code, out, _ = cli("breaker", "architect", "-o", "json")
    shown = json.loads(out)
    assert code == 0 and shown["agent"] == "architect" and shown["state"] == "closed" and shown["reset"] is False
    # errors are one JSON object on stderr, the exit code unchanged
    code, out, err = cli("breaker", "ghost", "-o", "json")
    assert code == 2 and out == "" and json.loads(err)["error"]["kind"] == "invalid" and "ghost" in err
    code, out, err = cli("publish", "tasks.research", "{not json", "--as", "architect", "-o", "json")
    assert code == 2 and json.loads(err)["error"]["message"].startswith("JSON argument is not valid JSON")
    # a refusal (the worker role may not publish tasks) is kind "refused", exit 1
    code, out, err = cli("publish", "tasks.research", "{}", "--as", "web-researcher", "-o", "json")
    assert code == 1 and json.loads(err)["error"]["kind"] == "refused"
