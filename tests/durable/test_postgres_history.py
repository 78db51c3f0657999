"""The PostgreSQL history store: ``swarm archive`` copies every registry event and
reconcile pass, resumes after a kill -9 with no gap and no duplicate, records what
trimming lost, and ``swarm history`` reads it. Real redis-server, registry,
reconciler and PostgreSQL (started by the test on a free port)."""

from __future__ import annotations

import pytest
import json
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from swarm.durable import HistoryFollower, PostgresHistory
from tests.reconcile.conftest import cli_env, run_cli
from tests.registry.conftest import RegistryProcess
from tests.support.postgres import PostgresServer
from tests.support.services import python_cmd, stop_process
from tests.support.wait import wait_until

EVENTS = "swarm:{research}:events"


def _ids(client: Any, key: str) -> list[str]:
    return [entry_id for entry_id, _ in client.xrange(key)]


def _archive(spec: Path, live: RegistryProcess, postgres: PostgresServer, log: Path) -> "subprocess.Popen[bytes]":
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(python_cmd("-m", "swarm", "archive", str(spec), "--redis-url", live.redis.url,
                                           "--postgres-url", postgres.url), env=cli_env(), stdout=out, stderr=out)


def test_events_and_passes_are_copied_and_history_reads_them(
    live: RegistryProcess, spec_dir: Path, postgres: PostgresServer, tmp_path: Path
) -> None:
    urls = ("--registry-url", live.url, "--redis-url", live.redis.url)
    assert run_cli("reconcile", str(spec_dir), "--once", *urls, "--compiled-dir", "", cwd=tmp_path).returncode == 0
    assert live.register("web-researcher").status_code == 201
    httpx.delete(live.url + "/agents/web-researcher", headers=live.agent_headers("web-researcher"), timeout=10)
    archive = _archive(spec_dir, live, postgres, tmp_path / "archive.log")
    client: Any = live.redis.client(decode_responses=True)
    store = PostgresHistory(postgres.url, "research")
    try:
        wait_until(lambda: store.event_ids() == _ids(client, EVENTS) and len(store.passes(10)) == 1, what="copied")
        kinds = [f["type"] for _, f in client.xrange(EVENTS)]
        assert {"catalog-changed", "registered", "deregistered"} <= set(kinds)
        (entry_id, fields), = store.passes(10)
        assert (entry_id, fields["digest"]) == (_ids(client, "swarm:{research}:history")[0],
                                               client.xrange("swarm:{research}:history")[0][1]["digest"])
        client.delete("swarm:{research}:history")  # the store outlives the capped stream
        done = run_cli("history", str(spec_dir), "--redis-url", live.redis.url, "--postgres-url", postgres.url,
                       "-o", "json", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert [h["id"] for h in json.loads(done.stdout)] == [entry_id]
        fallback = run_cli("history", str(spec_dir), "--redis-url", live.redis.url, "-o", "json", cwd=tmp_path)
        assert json.loads(fallback.stdout) == []  # without the store: the (now empty) stream
    finally:
        stop_process(archive)
        store.close()
        client.close()


@pytest.mark.slow  # moved out of the quick suite (CI time budget)
def test_kill_9_of_the_archiver_loses_no_event_and_stores_none_twice(
    live: RegistryProcess, spec_dir: Path, postgres: PostgresServer, tmp_path: Path
) -> None:
    client: Any = live.redis.client(decode_responses=True)
    stop = threading.Event()

    def produce() -> None:  # a steady stream of events while the archiver dies and restarts
        writer: Any = live.redis.client(decode_responses=True)
        n = 0
        while not stop.is_set() and n < 4000:
            writer.xadd(EVENTS, {"type": "updated", "agent": f"a{n % 50}", "data": json.dumps({"n": n})})
            n += 1
            if n % 100 == 0:
                time.sleep(0.01)
        writer.close()

    producer = threading.Thread(target=produce)
    producer.start()
    store = PostgresHistory(postgres.url, "research")
    try:
        for round_ in range(3):
            archive = _archive(spec_dir, live, postgres, tmp_path / f"archive{round_}.log")
            wait_until(lambda: len(store.event_ids()) > 0 if round_ == 0 else True, what="first rows")
            time.sleep(0.3)
            archive.send_signal(signal.SIGKILL)
            archive.wait(10)
        producer.join(60)
        archive = _archive(spec_dir, live, postgres, tmp_path / "archive-final.log")
        try:
            wait_until(lambda: store.event_ids() == _ids(client, EVENTS), timeout=60, what="caught up")
        finally:
            stop_process(archive)
        stored = store.event_ids()
        assert len(stored) == len(set(stored)) == len(_ids(client, EVENTS)) == 4000
        assert store.gaps() == []
    finally:
        stop.set()
        producer.join(10)
        store.close()
        client.close()


@pytest.mark.slow  # moved out of the quick suite (CI time budget)
def test_what_trimming_lost_while_stopped_is_recorded_as_a_gap(
    live: RegistryProcess, postgres: PostgresServer
) -> None:
    client: Any = live.redis.client(decode_responses=True)
    store = PostgresHistory(postgres.url, "research")
    follower = HistoryFollower(client, store)
    try:
        for n in range(5):
            client.xadd(EVENTS, {"type": "updated", "agent": "a", "data": "{}"})
        follower.start()
        while follower.step(block_ms=50):
            pass
        last = store.event_ids()[-1]
        for n in range(100):  # while the follower is away, the capped stream moves on
            client.xadd(EVENTS, {"type": "updated", "agent": "a", "data": json.dumps({"n": n})})
        client.xtrim(EVENTS, maxlen=10, approximate=False)
        again = HistoryFollower(client, store)
        again.start()
        while again.step(block_ms=50):
            pass
        (gap,) = store.gaps()
        assert gap[0] == "events" and gap[1] == last and gap[2] == _ids(client, EVENTS)[0]
        assert store.event_ids()[-10:] == _ids(client, EVENTS)
    finally:
        store.close()
        client.close()
