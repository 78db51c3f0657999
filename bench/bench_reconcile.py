"""Benchmark: save-to-live latency of ``swarm reconcile --watch`` on a 100-agent spec.

Run from the repository root::

    .venv/bin/python -m bench.bench_reconcile [--agents 100] [--edits 50]

Starts a redis-server and a registry (``swarm registry serve``) of its own, then
``swarm reconcile SPEC --watch --prune`` as a subprocess, and makes ``--edits``
edits in rotation:

* **add an agent** (a new Agent document) — live when the registry's catalog
  lists it and Redis holds its consumer group and its Redis user; counted until
  the body of a ``GET /catalog`` that lists it has arrived (the bench's own
  ``json.loads`` of that body, ~30 ms at 10,000 agents, is reported apart, and the
  latency counted to its end too);
* **change an ACL rule** (role ``worker`` gains / loses publish on a topic) —
  live when the ACL table in Redis says so and a worker's Redis user has (or
  lacks) the write right on that stream;
* **change one role's ACL rule touching 10% of agents** (role ``planner``, every tenth
  agent, gains / loses publish on ``results.r0``) — live when the ACL table in Redis says so
  (the planners' Redis users are rewritten in the same MULTI);
* **remove a topic** (``--prune``) — live when its stream is gone from Redis.

``--no-compiled`` runs the daemon with ``--compiled-dir ''`` (no background compile
between edits: at 10,000 agents rendering every agent's files takes ~15 s a save; without
the option the daemon writes ``compiled/`` in its working directory).

Each latency is measured from just before the file write until the poll sees
the change (polling Redis and the registry every ~2 ms). Between edits the
benchmark waits until the daemon has also rewritten ``compiled/`` (it does so in
a background thread after the apply), as between a person's saves. In the same run the
floor is measured: the time watchfiles' ``awatch`` itself takes to report a
write with the daemon's settings (debounce 80 ms, step 15 ms). Prints p50/p99
of both and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import redis

from swarm.keys import SwarmKeys
from swarm.registry.auth import admin_token
from tests.support.services import ProcessServer, RedisServer, free_port, python_cmd

SECRET = "bench-secret"
TOPICS = 20  # used topics
SPARE = 30  # declared, unused topics: the ones removed with --prune
DEBOUNCE_MS, STEP_MS = 80, 15
KEYS = SwarmKeys("bench")


def swarm_yaml(spare: list[int], worker_extra: bool, redis_url: str, registry_url: str,
               planner_extra: bool = False) -> str:
    topics = [f"  - name: work.t{i}\n    max_len: 1000" for i in range(TOPICS)]
    topics += [f"  - name: spare.s{i}\n    max_len: 1000" for i in spare]
    worker_publish = '["results.>"' + (', "work.t0"' if worker_extra else "") + "]"
    return "\n".join(
        [
            "apiVersion: swarm/v1",
            "kind: Swarm",
            "metadata:",
            "  name: bench",
            "registry:",
            f"  url: {registry_url}",
            "  ttl_seconds: 60",
            "bus:",
            f"  redis_url: {redis_url}",
            "topics:",
            *topics,
            *[f"  - name: results.r{i}\n    max_len: 1000" for i in range(TOPICS)],
            "roles:",
            "  worker:",
            f"    publish: {worker_publish}",
            '    subscribe: ["work.*"]',
            "  planner:",
            '    publish: ["work.>"' + (', "results.r0"' if planner_extra else "") + "]",
            '    subscribe: ["results.*", "spare.>"]',
            "",
        ]
    )


def agent_doc(i: int) -> str:
    role = "planner" if i % 10 == 0 else "worker"
    if role == "planner":
        pub, sub = f"[work.t{i % TOPICS}]", f"[results.r{i % TOPICS}]"
    else:
        pub, sub = f"[results.r{i % TOPICS}]", f"[work.t{i % TOPICS}]"
    return (
        f"apiVersion: swarm/v1\nkind: Agent\nid: agent-{i:03d}\nrole: {role}\nport: {10000 + i}\n"
        f"capabilities: [c{i % 7}]\npublishes: {pub}\nsubscribes: {sub}\n"
    )


def write_agents(spec: Path, agents: int) -> None:
    (spec / "agents").mkdir(parents=True, exist_ok=True)
    for f in range(10):
        docs = [agent_doc(i) for i in range(agents) if i % 10 == f]
        (spec / "agents" / f"group{f}.yaml").write_text("---\n".join(docs))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def wait_until(check: Callable[[], bool], timeout: float = 60.0, every: float = 0.002) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.TimeoutException:
            pass  # a registry busy with a first push of 10,000 agents
        time.sleep(every)
    raise TimeoutError("change never became visible")


def measure_floor(folder: Path, n: int) -> list[float]:
    """Write -> awatch yield, with the daemon's debounce and step."""
    from watchfiles import awatch

    folder.mkdir(parents=True, exist_ok=True)
    results: list[float] = []

    async def run() -> None:
        stop = asyncio.Event()
        started: list[float] = []
        ready = asyncio.Event()

        async def writer() -> None:
            await ready.wait()
            for i in range(n):
                await asyncio.sleep(0.15)
                started.append(time.perf_counter())
                await asyncio.to_thread((folder / "spec.yaml").write_text, f"n: {i}\n")
                while len(results) <= i:
                    await asyncio.sleep(0.001)
            stop.set()

        task = asyncio.create_task(writer())
        gen = awatch(folder, debounce=DEBOUNCE_MS, step=STEP_MS, stop_event=stop)
        ready.set()
        async for _ in gen:
            if len(results) < len(started):
                results.append(time.perf_counter() - started[len(results)])
        await task

    asyncio.run(run())
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--edits", type=int, default=50)
    parser.add_argument("--no-compiled", action="store_true", help="run the daemon with --compiled-dir '' (no compile)")
    parser.add_argument("--lease-ttl", type=float, default=None, help="the daemon's --lease-ttl (its default: 10 s)")
    parser.add_argument("--no-route", action="store_true",
                        help="run the registry without its bus router (a diagnostic: what the router's upkeep costs)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as tmp:
        root = Path(tmp)
        rs = RedisServer(root / "redis").start()
        reg_port = free_port()
        env = {**os.environ, "SWARM_REGISTRY_SECRET": SECRET, "SWARM_ADMIN_TOKEN": admin_token(SECRET, "bench")}
        registry = ProcessServer(
            python_cmd("-m", "swarm", "registry", "serve", "--port", str(reg_port), "--redis-url", rs.url,
                       "--swarm", "bench", "--no-probe", "--log-level", "warning",
                       *(["--no-route"] if args.no_route else [])),
            port=reg_port, env=env, log=root / "registry.log",
        ).start()
        spec = root / "specs"
        spec.mkdir()
        spare = list(range(SPARE))
        worker_extra = planner_extra = False

        def swarm_text() -> str:
            return swarm_yaml(spare, worker_extra, rs.url, registry.url, planner_extra)

        (spec / "swarm.yaml").write_text(swarm_text())
        write_agents(spec, args.agents)
        log = open(root / "daemon.log", "wb")
        daemon = subprocess.Popen(
            python_cmd("-m", "swarm", "reconcile", str(spec), "--watch", "--prune", "--resync", "600",
                       "--compiled-dir", "" if args.no_compiled else str(root / "compiled"),
                       *([] if args.lease_ttl is None else ["--lease-ttl", str(args.lease_ttl)]), "-o", "json"),
            cwd=root, env=env, stdout=log, stderr=log,
        )
        r: Any = redis.Redis.from_url(rs.url, decode_responses=True)
        http = httpx.Client(base_url=registry.url, timeout=30,
                            headers={"Authorization": f"Bearer {admin_token(SECRET, 'bench')}"})

        def catalog_agents() -> set[str]:
            resp = http.get("/catalog")
            return set(resp.json()["catalog"]["agents"]) if resp.status_code == 200 else set()

        manifest = root / "compiled" / "bench" / "manifest.json"

        def when_rewritten(key: str, check: Callable[[str], bool]) -> Callable[[], bool]:
            """``check`` of the value at ``key``, read only after its head changed: polling a
            10,000-agent acl.json (0.8 MB) or catalog (4 MB) whole every 2 ms would load the
            Redis, and the cores, of the daemon being measured. Both heads hold the spec digest,
            which every apply changes."""
            seen = [r.getrange(key, 0, 199)]

            def poll() -> bool:
                head = r.getrange(key, 0, 199)
                if head == seen[0]:
                    return False
                seen[0] = head
                return check(r.get(key) or "")
            return poll

        def acl_live(role: str, topic: str, want: bool) -> Callable[[], bool]:
            def check(raw: str) -> bool:
                table = json.loads(raw or "{}")
                row = next((x for x in table.get("table", []) if x["role"] == role and x["topic"] == topic), None)
                # agents' rights are declared AND permitted, and their Redis users name no
                # topic (the router enforces them): the role change shows in the table
                return row is not None and row["publish"]["allow"] is want
            return when_rewritten(KEYS.acl, check)

        def status_state() -> str:
            raw = r.get(KEYS.status)
            return json.loads(raw)["state"] if raw else ""

        latencies: dict[str, list[float]] = {}
        confirms: list[float] = []  # add agent: from the catalog stored in Redis to GET /catalog listing it
        parses: list[float] = []  # add agent: the bench's own json.loads of the GET /catalog body
        after_parse: list[float] = []  # add agent: save -> that body parsed (the method before 2026-12-04)
        try:
            wait_until(lambda: status_state() == "synced" and len(catalog_agents()) == args.agents, timeout=900,
                       every=0.5)
            if not args.no_compiled:
                wait_until(manifest.exists, timeout=600)  # the first compile
            time.sleep(0.5)
            floor = measure_floor(root / "floor", args.edits)

            kinds = ("add agent", "acl rule", "role 10%", "remove topic")
            latencies: dict[str, list[float]] = {k: [] for k in kinds}
            next_agent = args.agents
            for n in range(args.edits):
                kind = kinds[n % len(kinds)]
                if kind == "add agent":
                    aid = f"agent-{next_agent:03d}"
                    listed = when_rewritten(KEYS.catalog, lambda raw: f'"{aid}":' in raw)
                    t0 = time.perf_counter()
                    (spec / "agents" / f"new-{next_agent}.yaml").write_text(agent_doc(next_agent))
                    # the stored catalog is polled in Redis (its head, then a substring), then GET
                    # /catalog confirms once: polling a 10,000-agent GET /catalog (4 MB) every 2 ms
                    # would load the very registry the daemon patches
                    wait_until(lambda: r.exists(KEYS.inbox(aid)) and r.exists(KEYS.outbox(aid))
                               and r.acl_getuser(KEYS.redis_user(aid)) is not None and listed())
                    t_stored = time.perf_counter()
                    got: list[float] = []

                    def served() -> bool:
                        # the moment GET /catalog's body has arrived, then whether it lists the agent:
                        # parsing 3 MB of JSON (~30 ms) is this client's work, not the system's
                        resp = http.get("/catalog")
                        got.append(time.perf_counter())
                        return resp.status_code == 200 and aid in resp.json()["catalog"]["agents"]
                    wait_until(served, every=0.01)
                    parsed = time.perf_counter()
                    confirms.append(got[-1] - t_stored)
                    parses.append(parsed - got[-1])
                    next_agent += 1
                    latencies[kind].append(got[-1] - t0)
                    after_parse.append(parsed - t0)
                elif kind == "acl rule":
                    worker_extra = not worker_extra
                    live = acl_live("worker", "work.t0", worker_extra)
                    t0 = time.perf_counter()
                    (spec / "swarm.yaml").write_text(swarm_text())
                    wait_until(live)
                elif kind == "role 10%":
                    planner_extra = not planner_extra
                    live = acl_live("planner", "results.r0", planner_extra)
                    t0 = time.perf_counter()
                    (spec / "swarm.yaml").write_text(swarm_text())
                    wait_until(live)
                else:
                    gone = spare.pop(0)
                    t0 = time.perf_counter()
                    (spec / "swarm.yaml").write_text(swarm_text())
                    wait_until(lambda: not r.exists(KEYS.topic(f"spare.s{gone}")))
                if kind != "add agent":
                    latencies[kind].append(time.perf_counter() - t0)
                wait_until(lambda: status_state() == "synced")
                # Quiet before the next edit, as between a person's saves: the daemon
                # writes compiled/ after the apply, in a background thread.
                if not args.no_compiled:
                    digest = json.loads(r.get(KEYS.status))["last_applied"]["digest"]
                    wait_until(lambda: digest in manifest.read_text(errors="replace") if manifest.exists() else False,
                               timeout=120)
                time.sleep(1.0 if args.no_compiled else 0.05)  # as between a person's saves
        except Exception:
            kept = Path(tempfile.gettempdir()) / "bench_reconcile_daemon.log"
            kept.write_bytes((root / "daemon.log").read_bytes())
            sys.stderr.write(f"daemon log kept in {kept}\n")
            for kind, values in latencies.items():  # what was measured before the failure
                sys.stderr.write(f"  {kind}: {[round(v * 1000, 1) for v in values]} ms\n")
            raise
        finally:
            daemon.terminate()
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:  # at 10,000 agents a pass or a heap collection may be running
                daemon.kill()
                daemon.wait(timeout=20)
            log.close()
            http.close()
            r.close()
            registry.stop()
            rs.stop()

    all_ms = [v * 1000 for vs in latencies.values() for v in vs]
    floor_ms = [v * 1000 for v in floor]
    f50, f99 = percentile(floor_ms, 50), percentile(floor_ms, 99)
    p50, p99 = percentile(all_ms, 50), percentile(all_ms, 99)
    print(f"spec: {args.agents} agents, {2 * TOPICS + SPARE} topics; {len(all_ms)} edits; python {sys.version.split()[0]}")
    print(f"floor (watchfiles write->event, debounce {DEBOUNCE_MS} ms, step {STEP_MS} ms): p50 {f50:.1f} ms  p99 {f99:.1f} ms")
    for kind, values in latencies.items():
        ms = [v * 1000 for v in values]
        if not ms:
            continue
        print(f"  {kind:13} n={len(ms):2}  p50 {percentile(ms, 50):6.1f} ms  p99 {percentile(ms, 99):6.1f} ms  mean {statistics.mean(ms):6.1f} ms"
              f"  (each: {', '.join(f'{v:.0f}' for v in ms)})")
    if confirms:
        ms = [v * 1000 for v in confirms]
        print(f"  of add agent, the confirming GET /catalog ({args.agents} agents): p50 {percentile(ms, 50):.1f} ms"
              f"  p99 {percentile(ms, 99):.1f} ms")
        ms = [v * 1000 for v in parses]
        print(f"  after it, the bench's json.loads of that body: p50 {percentile(ms, 50):.1f} ms"
              f"  p99 {percentile(ms, 99):.1f} ms")
        ms = [v * 1000 for v in after_parse]
        print(f"  add agent counted to the parsed body: p50 {percentile(ms, 50):.1f} ms  p99 {percentile(ms, 99):.1f} ms")
    print(f"save -> live: p50 {p50:.1f} ms  p99 {p99:.1f} ms")
    print(f"ratio to floor: p50 {p50 / f50:.2f}x  p99 {p99 / f99:.2f}x")


if __name__ == "__main__":
    main()
