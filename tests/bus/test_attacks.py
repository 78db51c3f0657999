"""A hostile agent against the mediated bus: every attack of the threat model, on real processes.

Who: the agent ``worker-a`` of the swarm ``lab``, acting with its OWN Redis user (the
user and password ``swarm bus apply`` gives it: :meth:`SwarmKeys.redis_user`,
:func:`swarm.bus.apply.bus_password`), against a real redis-server with the bus
installed by :func:`apply_bus` and a real router process (``swarm bus route``).
Why: agents run model-written, prompt-injectable code; the rights, the router's
checks, dedup and the breaker exist so that one agent going wrong cannot harm the
others. Each test asserts three things:

(a) the attack is refused (NOPERM from Redis, or a refusal by the router with its
    reason in the ``refused`` stream and in the attacker's receipt), or harms only
    the attacker;
(b) the victims (``planner`` and ``watcher``, which subscribe to what the honest
    ``worker-b`` publishes) receive every message sent before and after the attack
    exactly once, through the router;
(c) Redis stays responsive: a PING from another client answers (no BUSY script).

The honest traffic is plain Redis commands (XADD to the sender's outbox, XREADGROUP
and XACK on the receiver's inbox), as any language's client would do it; receipts
tell when the router has handled an entry, so "exactly once" is checked after the
router is done, not after a sleep.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError, ResponseError

from swarm.bus.apply import apply_bus, bus_password
from swarm.desired import DesiredState, desired_from_spec
from swarm.keys import SwarmKeys
from swarm.spec.models import Spec, SwarmDocument
from tests.bus.conftest import SECRET, SWARM_DOC
from tests.reconcile.test_up import Up
from tests.support.router import RouterProcess
from tests.support.services import RedisServer

REPO = Path(__file__).resolve().parents[2]
SWARM = "lab"
KEYS = SwarmKeys(SWARM)
ATTACKER = "worker-a"
HONEST = "worker-b"
VICTIMS = ("planner", "watcher")
#: published by the attacker and by the honest worker; planner and watcher subscribe to it
TOPIC = "results.research"
#: the worker role permits it, worker-b declares it, the attacker does not
UNDECLARED_BY_ATTACKER = "results.summary"
MAX_ID = "18446744073709551615-18446744073709551615"
MIB = 1024 * 1024
#: how long anything the router should do may take before the test fails (a bound, not a measure)
DEADLINE = 30.0


def _doc() -> dict[str, Any]:
    doc = copy.deepcopy(SWARM_DOC)
    for agent in doc["agents"]:
        if agent["id"] == HONEST:  # the honest worker publishes the attacker's topic too
            agent["publishes"] = [TOPIC, UNDECLARED_BY_ATTACKER]
    return doc


def _desired(doc: dict[str, Any]) -> DesiredState:
    swarm = SwarmDocument.model_validate(doc, strict=False)
    return desired_from_spec(Spec(swarm=swarm, agents=list(swarm.agents)), "sha256:attacks")


def _apply(url: str, desired: DesiredState) -> None:
    async def run() -> None:
        admin = aioredis.Redis.from_url(url)
        try:
            await apply_bus(admin, desired.bus, desired.acl, secret=SECRET)
        finally:
            await admin.aclose()

    asyncio.run(run())


def agent_client(server: RedisServer, agent_id: str, swarm: str = SWARM, **kwargs: Any) -> redis.Redis:
    """A client logged in as the agent's own Redis user (what `swarm token --bus` gives it)."""
    kwargs.setdefault("socket_timeout", 5.0)
    return redis.Redis(
        host="127.0.0.1", port=server.port,
        username=SwarmKeys(swarm).redis_user(agent_id), password=bus_password(SECRET, swarm, agent_id),
        **kwargs,
    )


def _text(value: Any) -> str:
    """Decode, failing the test if the router let invalid UTF-8 through to a reader."""
    assert isinstance(value, bytes), value
    return value.decode("utf-8")


@dataclass
class Lab:
    """The test swarm: Redis with the bus applied, a router, the attacker's own client."""

    server: RedisServer
    router: RouterProcess
    attacker: redis.Redis
    admin: redis.Redis
    clients: dict[str, redis.Redis] = field(default_factory=dict)
    received: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    def client(self, agent_id: str) -> redis.Redis:
        if agent_id not in self.clients:
            self.clients[agent_id] = agent_client(self.server, agent_id)
        return self.clients[agent_id]

    # -- traffic ---------------------------------------------------------------------

    def send(self, sender: str, n: int, topic: str = TOPIC) -> list[tuple[str, str]]:
        """``n`` well-formed messages XADDed to the sender's outbox as the sender: (outbox id, message id)."""
        out = []
        for i in range(n):
            mid = f"{sender}-{uuid.uuid4().hex[:12]}"
            oid = self.client(sender).xadd(KEYS.outbox(sender), {
                "topic": topic, "payload": json.dumps({"i": i, "from": sender}), "message_id": mid,
            })
            out.append((_text(oid), mid))
        return out

    def receipts(self, agent_id: str, outbox_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """The router's receipts of these outbox entries, read by the agent itself; fails after DEADLINE."""
        wanted = set(outbox_ids)
        deadline = time.monotonic() + DEADLINE
        while True:
            got: dict[str, dict[str, str]] = {}
            entries: Any = self.client(agent_id).xrange(KEYS.receipts(agent_id))
            for _, fields in entries:
                row = {_text(k): _text(v) for k, v in fields.items()}
                if row.get("outbox_id") in wanted:
                    got[row["outbox_id"]] = row
            if set(got) == wanted:
                return got
            self.check_router()
            if time.monotonic() > deadline:
                raise AssertionError(f"no receipt for {sorted(wanted - set(got))} after {DEADLINE}s\n"
                                     f"{self.router.log_text()[-3000:]}")
            time.sleep(0.05)

    def drain(self, agent_id: str) -> list[dict[str, str]]:
        """Everything new in the agent's inbox, read and acked by the agent itself (its group)."""
        me = self.client(agent_id)
        inbox = KEYS.inbox(agent_id)
        while True:
            reply: Any = me.xreadgroup(agent_id, "test", {inbox: ">"}, count=500)
            if not reply:
                return self.received.setdefault(agent_id, [])
            entries = reply[0][1]
            for eid, fields in entries:
                self.received.setdefault(agent_id, []).append({_text(k): _text(v) for k, v in fields.items()})
            me.xack(inbox, agent_id, *[eid for eid, _ in entries])

    # -- the three assertions -----------------------------------------------------------

    def assert_responsive(self) -> None:
        probe = redis.Redis(host="127.0.0.1", port=self.server.port, socket_timeout=2.0)
        try:
            assert probe.ping() is True  # a BUSY script would answer an error here
        finally:
            probe.close()

    def assert_delivered_once(self, sent: Sequence[tuple[str, str]], sender: str = HONEST) -> None:
        receipts = self.receipts(sender, [oid for oid, _ in sent])
        assert {r["status"] for r in receipts.values()} == {"routed"}, receipts
        wanted = Counter(mid for _, mid in sent)
        for victim in VICTIMS:
            got = Counter(m["message_id"] for m in self.drain(victim) if m.get("sender") == sender
                          and m["message_id"] in wanted)
            assert got == wanted, f"{victim} got {got}, expected each of {sorted(wanted)} once"

    @contextmanager
    def victims_unharmed(self) -> Iterator[None]:
        """Honest traffic before and after the attack; then (b) and (c)."""
        before = self.send(HONEST, 3)
        self.receipts(HONEST, [oid for oid, _ in before])  # routed before the attack starts
        yield
        self.assert_responsive()
        after = self.send(HONEST, 3)
        self.assert_delivered_once(before + after)
        self.assert_responsive()
        self.check_router()

    def check_router(self) -> None:
        proc = self.router.proc
        assert proc is not None and proc.poll() is None, f"the router exited:\n{self.router.log_text()[-3000:]}"

    # -- what the router said about the attacker's entries --------------------------------

    def refused(self, outbox_id: str) -> dict[str, str]:
        """The `refused` entry of one of the attacker's outbox entries (valid UTF-8, small)."""
        self.receipts(ATTACKER, [outbox_id])
        rows = []
        entries: Any = self.admin.xrange(KEYS.refused)
        for _, fields in entries:
            assert sum(len(k) + len(v) for k, v in fields.items()) < 16 * 1024, "a refused record must be cut"
            row = {_text(k): _text(v) for k, v in fields.items()}
            if row.get("outbox_id") == outbox_id:
                rows.append(row)
        assert len(rows) == 1, rows
        return rows[0]


@contextmanager
def running_lab(server: RedisServer, log: Path) -> Iterator[Lab]:
    """Install the bus on ``server``, start a router, and yield the lab; stop the router after."""
    _apply(server.url, _desired(_doc()))
    admin = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=10.0)
    admin.script_load(EVIL_LOOP)  # loaded by someone else: EVALSHA must still be refused
    admin.function_load(EVIL_LIBRARY)
    router = RouterProcess(redis_url=server.url, swarm=SWARM, log=log).start()
    the_lab = Lab(server=server, router=router, attacker=agent_client(server, ATTACKER), admin=admin)
    the_lab.clients[ATTACKER] = the_lab.attacker
    try:
        yield the_lab
    finally:
        router.stop()
        for c in the_lab.clients.values():
            c.close()
        admin.close()


@pytest.fixture
def lab(redis_server: RedisServer, tmp_path: Path) -> Iterator[Lab]:
    """A lab of this test's own."""
    with running_lab(redis_server, tmp_path / "router.log") as the_lab:
        yield the_lab


class LabPool:
    """One lab shared by the many small attacks that change nothing when refused (a lab
    starts a redis-server and a router process); a test whose attack was NOT refused
    discards it, so the next test starts clean and the failures name each hole."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0
        self._stack: Any = None
        self.lab: Lab | None = None

    def get(self) -> Lab:
        if self.lab is None:
            self.count += 1
            self._stack = ExitStack()
            server = RedisServer(self.directory / f"redis{self.count}", appendonly=False).start()
            self._stack.callback(server.stop)
            self.lab = self._stack.enter_context(running_lab(server, self.directory / f"router{self.count}.log"))
        return self.lab

    def discard(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack, self.lab = None, None

    @contextmanager
    def use(self) -> Iterator[Lab]:
        try:
            yield self.get()
        except BaseException:
            self.discard()
            raise


@pytest.fixture(scope="module")
def lab_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabPool]:
    pool = LabPool(tmp_path_factory.mktemp("attacks"))
    yield pool
    pool.discard()


# -- Redis refuses: scripts, topic streams, other agents' keys, dedup marks, the breaker, admin ----

EVIL_LOOP = "while true do end"
EVIL_LIBRARY = "#!lua name=evil\nredis.register_function('spin', function() while true do end end)"
#: big enough to show the point (a script builds strings without limit), small enough not to
#: hurt the machine if the rights ever let it through (the issue saw Lua pass 1 GB)
EVIL_MEMORY = "return #string.rep('x', 64 * 1024 * 1024)"


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


T = KEYS.topic(TOPIC)
V = "planner"  # a victim
FIELDS = ("message_id", "forged", "sender", HONEST, "payload", "{}")

REFUSED_BY_REDIS: dict[str, tuple[Any, ...]] = {
    # scripts and functions: an infinite loop freezes every client, string.rep eats memory
    "eval-infinite-loop": ("EVAL", EVIL_LOOP, "0"),
    "eval-string-rep": ("EVAL", EVIL_MEMORY, "0"),
    "eval-ro": ("EVAL_RO", EVIL_LOOP, "0"),
    "evalsha": ("EVALSHA", _sha(EVIL_LOOP), "0"),
    "evalsha-ro": ("EVALSHA_RO", _sha(EVIL_LOOP), "0"),
    "fcall": ("FCALL", "spin", "0"),
    "fcall-ro": ("FCALL_RO", "spin", "0"),
    "script-load": ("SCRIPT", "LOAD", EVIL_LOOP),
    "script-flush": ("SCRIPT", "FLUSH"),
    "script-kill": ("SCRIPT", "KILL"),
    "function-load": ("FUNCTION", "LOAD", "REPLACE", EVIL_LIBRARY),
    "function-flush": ("FUNCTION", "FLUSH"),
    "function-delete": ("FUNCTION", "DELETE", "evil"),
    # raw writes to a topic's log (the router's alone)
    "xadd-topic-maxlen-0": ("XADD", T, "MAXLEN", "0", "*", *FIELDS),
    "xadd-topic-maximal-id": ("XADD", T, "18446744073709551615-18446744073709551614", *FIELDS),
    "xadd-topic-20mib": ("XADD", T, "*", "message_id", "big", "sender", ATTACKER, "payload", "x" * (20 * MIB)),
    "xtrim-topic": ("XTRIM", T, "MAXLEN", "0"),
    "xdel-topic": ("XDEL", T, "0-1"),
    "xsetid-topic": ("XSETID", T, MAX_ID),
    "del-topic": ("DEL", T),
    "xgroup-create-topic": ("XGROUP", "CREATE", T, ATTACKER, "0"),
    "xrange-topic": ("XRANGE", T, "-", "+"),
    "xreadgroup-topic": ("XREADGROUP", "GROUP", V, "thief", "STREAMS", T, ">"),
    "xack-topic": ("XACK", T, V, "0-1"),
    "xautoclaim-topic": ("XAUTOCLAIM", T, V, "thief", "0", "0-0"),
    # another agent's inbox, receipts, outbox and breaker
    "xreadgroup-victim-inbox": ("XREADGROUP", "GROUP", V, "thief", "STREAMS", KEYS.inbox(V), ">"),
    "xack-victim-inbox": ("XACK", KEYS.inbox(V), V, "0-1"),
    "xdel-victim-inbox": ("XDEL", KEYS.inbox(V), "0-1"),  # XDEL is granted on its own inbox only
    "xautoclaim-victim-inbox": ("XAUTOCLAIM", KEYS.inbox(V), V, "thief", "0", "0-0"),
    "xpending-victim-inbox": ("XPENDING", KEYS.inbox(V), V),
    "xread-victim-inbox": ("XREAD", "STREAMS", KEYS.inbox(V), "0"),
    "xrange-victim-inbox": ("XRANGE", KEYS.inbox(V), "-", "+"),
    "xadd-victim-inbox": ("XADD", KEYS.inbox(V), "MAXLEN", "0", "*", "topic", TOPIC, *FIELDS),
    "xgroup-setid-victim-inbox": ("XGROUP", "SETID", KEYS.inbox(V), V, "$"),
    "xrange-victim-receipts": ("XRANGE", KEYS.receipts(V), "-", "+"),
    "xread-victim-receipts": ("XREAD", "STREAMS", KEYS.receipts(V), "0"),
    "xadd-victim-outbox": ("XADD", KEYS.outbox(HONEST), "*", "topic", TOPIC, "payload", "{}"),
    "hgetall-victim-breaker": ("HGETALL", KEYS.breaker(V)),
    # its own keys beyond XADD outbox / inbox consumption
    "xreadgroup-own-outbox-as-router": ("XREADGROUP", "GROUP", "router", "thief", "STREAMS", KEYS.outbox(ATTACKER), ">"),
    "xgroup-destroy-own-outbox": ("XGROUP", "DESTROY", KEYS.outbox(ATTACKER), "router"),
    "xsetid-own-outbox": ("XSETID", KEYS.outbox(ATTACKER), MAX_ID),
    "del-own-outbox": ("DEL", KEYS.outbox(ATTACKER)),
    "xtrim-own-inbox": ("XTRIM", KEYS.inbox(ATTACKER), "MAXLEN", "0"),
    "xadd-own-receipts": ("XADD", KEYS.receipts(ATTACKER), "*", "outbox_id", "0-1", "status", "routed"),
    "xadd-refused": ("XADD", KEYS.refused, "MAXLEN", "0", "*", "sender", V),
    # dedup marks and the breaker: the router's and the prober's
    "set-dedup-mark": ("SET", KEYS.dedup(TOPIC, HONEST, "future-id"), "1-1"),
    "set-own-dedup-mark": ("SET", KEYS.dedup(TOPIC, ATTACKER, "future-id"), "1-1"),
    "del-dedup-mark": ("DEL", KEYS.dedup(TOPIC, HONEST, "future-id")),
    "get-dedup-mark": ("GET", KEYS.dedup(TOPIC, HONEST, "future-id")),
    "hset-own-breaker": ("HSET", KEYS.breaker(ATTACKER), "state", "closed"),
    "del-own-breaker": ("DEL", KEYS.breaker(ATTACKER)),
    "hset-victim-breaker": ("HSET", KEYS.breaker(V), "state", "open"),
    "set-acl-table": ("SET", KEYS.acl, "{}"),
    "set-bus-settings": ("SET", KEYS.bus, "{}"),
    # dead letters of others, and the registry's and reconciler's keys (forged events, registrations)
    "xadd-topic-dlq": ("XADD", KEYS.dead_letter(TOPIC), "*", "reason", "forged"),
    "xadd-victim-dlq": ("XADD", KEYS.agent_dead_letter(V), "MAXLEN", "0", "*", "reason", "forged"),
    "xadd-registry-events": ("XADD", KEYS.events, "*", "type", "deregistered", "agent_id", V),
    "hset-registration": ("HSET", KEYS.agent(V), "health_url", "http://169.254.169.254/"),
    "zadd-leases": ("ZADD", KEYS.leases, "0", V),
    "set-catalog": ("SET", KEYS.catalog, "{}"),
    "set-reconcile-lease": ("SET", KEYS.lease, "{}"),
    "set-protection": ("SET", KEYS.protection, "1"),
    # the server itself
    "keys": ("KEYS", "*"),
    "scan": ("SCAN", "0"),
    "randomkey": ("RANDOMKEY",),
    "flushall": ("FLUSHALL",),
    "flushdb": ("FLUSHDB",),
    "config-set": ("CONFIG", "SET", "proto-max-bulk-len", "1073741824"),
    "config-get": ("CONFIG", "GET", "*"),
    "acl-setuser": ("ACL", "SETUSER", KEYS.redis_user(ATTACKER), "+@all", "~*"),
    "acl-deluser": ("ACL", "DELUSER", KEYS.redis_user(V)),
    "acl-list": ("ACL", "LIST"),
    "acl-getuser": ("ACL", "GETUSER", KEYS.redis_user(V)),
    "debug-sleep": ("DEBUG", "SLEEP", "30"),
    "client-kill": ("CLIENT", "KILL", "USER", "default"),
    "client-kill-type": ("CLIENT", "KILL", "TYPE", "normal"),
    "client-pause": ("CLIENT", "PAUSE", "60000", "WRITE"),
    "client-list": ("CLIENT", "LIST"),
    "monitor": ("MONITOR",),
    "shutdown": ("SHUTDOWN", "NOSAVE"),
    "bgsave": ("BGSAVE",),
    "bgrewriteaof": ("BGREWRITEAOF",),
    "replicaof": ("REPLICAOF", "127.0.0.1", "1"),
    "swapdb": ("SWAPDB", "0", "1"),
    "publish": ("PUBLISH", "anything", "x"),
    "subscribe-keyspace": ("PSUBSCRIBE", "__keyspace@0__:*"),
}


@pytest.mark.parametrize("command", REFUSED_BY_REDIS.values(), ids=REFUSED_BY_REDIS.keys())
def test_redis_refuses_the_attackers_command(lab_pool: LabPool, command: tuple[Any, ...]) -> None:
    with lab_pool.use() as lab, lab.victims_unharmed():
        # DEBUG is also off by configuration in Redis 7 (enable-debug-command no), which answers first
        refusal = ResponseError if command[0] == "DEBUG" else NoPermissionError
        with pytest.raises(refusal, match=r"(?i)no permissions|DEBUG command not allowed"):
            lab.attacker.execute_command(*command)  # type: ignore[no-untyped-call]
        lab.attacker.ping()  # the attacker is still connected: refused, not disconnected


# -- the router refuses: what Redis lets an agent write into its own outbox ------------------------

ROLE_DENIED = "tasks.research"  # declared in the swarm, the worker role may not publish it


def _ok(**extra: Any) -> dict[Any, Any]:
    return {"topic": TOPIC, "payload": json.dumps({"ok": True}), **extra}


OUTBOX_REFUSALS: dict[str, tuple[dict[Any, Any], set[str]]] = {
    "20-mib-payload": ({"topic": TOPIC, "payload": json.dumps("x" * (20 * MIB))}, {"too_large"}),
    "non-utf8-payload": ({"topic": TOPIC, "payload": b'"\xff\xfe\xc3("'}, {"invalid_utf8"}),
    "non-utf8-topic": ({"topic": b"results.\xff", "payload": b"{}"}, {"invalid_utf8"}),
    "non-utf8-message-id": (_ok(message_id=b"m-\xc3\x28"), {"invalid_utf8"}),
    "non-utf8-field-name": ({**_ok(), b"\xff\xfe": b"x"}, {"invalid_utf8", "unknown_field"}),
    "invalid-json": ({"topic": TOPIC, "payload": "{not json"}, {"invalid_json"}),
    "nan-json": ({"topic": TOPIC, "payload": "NaN"}, {"invalid_json"}),
    "missing-topic": ({"payload": "{}"}, {"missing_field"}),
    "missing-payload": ({"topic": TOPIC}, {"missing_field"}),
    "spoofed-sender": (_ok(sender=HONEST), {"sender_mismatch"}),
    "unknown-field": (_ok(priority="high"), {"unknown_field"}),
    "bad-content-type": (_ok(content_type="text/html"), {"invalid_content_type"}),
    "message-id-with-space": (_ok(message_id="a b"), {"invalid_message_id"}),
    "message-id-too-long": (_ok(message_id="m" * 201), {"invalid_message_id"}),
    "ten-thousand-fields": ({**_ok(), **{f"f{i}": "x" for i in range(10000)}}, {"unknown_field"}),
    "topic-with-trailing-newline": ({"topic": TOPIC + "\n", "payload": "{}"}, {"undeclared_topic"}),
    "topic-pattern": ({"topic": "results.*", "payload": "{}"}, {"undeclared_topic"}),
    "message-id-with-newline": (_ok(message_id="m\n"), {"invalid_message_id"}),
    "empty-message-id": (_ok(message_id=""), {"invalid_message_id"}),
    "topic-not-in-swarm": ({"topic": "results.nope", "payload": "{}"}, {"undeclared_topic"}),
    "topic-role-denies": ({"topic": ROLE_DENIED, "payload": "{}"}, {"acl_denied"}),
    "topic-role-allows-but-undeclared": ({"topic": UNDECLARED_BY_ATTACKER, "payload": "{}"}, {"acl_denied"}),
}


@pytest.mark.parametrize(("fields", "reasons"), OUTBOX_REFUSALS.values(), ids=OUTBOX_REFUSALS.keys())
def test_router_refuses_a_bad_outbox_entry_and_keeps_routing(
    lab_pool: LabPool, fields: dict[Any, Any], reasons: set[str]
) -> None:
    with lab_pool.use() as lab:
        _refused_and_harmless(lab, fields, reasons)


def _refused_and_harmless(lab: Lab, fields: dict[Any, Any], reasons: set[str]) -> None:
    with lab.victims_unharmed():
        oid = _text(lab.attacker.xadd(KEYS.outbox(ATTACKER), fields))
        receipt = lab.receipts(ATTACKER, [oid])[oid]
        assert receipt["status"] == "refused"
        assert receipt.get("reason") in reasons, receipt
        record = lab.refused(oid)
        assert record["sender"] == ATTACKER and record["reason"] == receipt["reason"]
    for victim in VICTIMS:  # nothing of the refused entry reached anyone
        assert not [m for m in lab.drain(victim) if m.get("sender") != HONEST], lab.received[victim]


def test_a_well_formed_entry_of_the_attacker_is_routed_with_its_true_sender(lab: Lab) -> None:
    """The control case of the refusals above: the same client, one valid entry, delivered once."""
    with lab.victims_unharmed():
        sent = lab.send(ATTACKER, 2)
        explicit = _text(lab.attacker.xadd(KEYS.outbox(ATTACKER), _ok(
            sender=ATTACKER, content_type="application/json", message_id="own-name")))
        lab.assert_delivered_once([*sent, (explicit, "own-name")], sender=ATTACKER)


def test_maxlen_0_on_its_own_outbox_loses_only_the_attackers_entries(lab: Lab) -> None:
    with lab.victims_unharmed():
        mine = lab.send(ATTACKER, 5)
        lab.attacker.execute_command("XADD", KEYS.outbox(ATTACKER), "MAXLEN", "0", "*",
                                     "topic", TOPIC, "payload", "{}", "message_id", "wiper")  # type: ignore[no-untyped-call]
        assert lab.admin.xlen(KEYS.outbox(ATTACKER)) == 0  # Redis let it empty its own outbox
        later = lab.send(ATTACKER, 1)
        lab.assert_delivered_once(later, sender=ATTACKER)  # the attacker's outbox still works
    for victim in VICTIMS:  # whatever of the wiped entries the router had taken, it came at most once
        counts = Counter(m["message_id"] for m in lab.drain(victim) if m.get("sender") == ATTACKER)
        assert set(counts.values()) <= {1}, counts
        assert set(counts) <= {mid for _, mid in mine + later} | {"wiper"}


def test_a_maximal_outbox_id_is_routed_once_and_does_not_kill_the_topic(lab: Lab) -> None:
    """The topic log gets ids of its own: the outbox id never reaches the topic stream."""
    with lab.victims_unharmed():
        lab.attacker.xadd(KEYS.outbox(ATTACKER), _ok(message_id="at-the-end"), id=MAX_ID)
        lab.assert_delivered_once([(MAX_ID, "at-the-end")], sender=ATTACKER)
        # it harms the attacker alone: its outbox cannot take another entry
        with pytest.raises(ResponseError):
            lab.attacker.xadd(KEYS.outbox(ATTACKER), _ok())


def test_a_victims_future_message_id_published_first_by_the_attacker_is_no_duplicate(lab: Lab) -> None:
    """Dedup marks are scoped by sender: the attacker cannot make worker-b's next id a duplicate."""
    future = f"{HONEST}-future-{uuid.uuid4().hex[:8]}"
    with lab.victims_unharmed():
        oid = _text(lab.attacker.xadd(KEYS.outbox(ATTACKER), _ok(message_id=future)))
        assert lab.receipts(ATTACKER, [oid])[oid]["status"] == "routed"
        again = _text(lab.attacker.xadd(KEYS.outbox(ATTACKER), _ok(message_id=future)))
        assert lab.receipts(ATTACKER, [again])[again]["status"] == "duplicate"  # its own id: a duplicate
        honest = _text(lab.client(HONEST).xadd(KEYS.outbox(HONEST), {
            "topic": TOPIC, "payload": "{}", "message_id": future}))
        lab.assert_delivered_once([(honest, future)], sender=HONEST)
    for victim in VICTIMS:
        assert Counter(m["message_id"] for m in lab.received[victim] if m["sender"] == ATTACKER)[future] == 1


def test_an_open_breaker_stops_raw_xadds_of_the_attacker_too(lab: Lab) -> None:
    """The breaker is the router's check: a raw XADD no longer skips it (and the attacker
    cannot close its own breaker: hset-own-breaker above)."""
    from swarm.bus.breaker_store import BreakerStore, policy_from_settings

    async def trip() -> None:
        client = aioredis.Redis.from_url(lab.server.url)
        store = BreakerStore(client, SWARM, policy_from_settings(_desired(_doc()).bus.settings.breaker))
        try:
            for _ in range(4):  # failure_threshold 3 in the test spec: open after the 4th failure
                await store.record_failure(ATTACKER, await store.acquire(ATTACKER) or 0)
        finally:
            await client.aclose()

    with lab.victims_unharmed():
        asyncio.run(trip())
        oid = _text(lab.attacker.xadd(KEYS.outbox(ATTACKER), _ok()))
        receipt = lab.receipts(ATTACKER, [oid])[oid]
        assert receipt["status"] == "refused" and receipt["reason"].startswith("breaker_"), receipt
    for victim in VICTIMS:
        assert not [m for m in lab.drain(victim) if m.get("sender") == ATTACKER]


def test_refused_entries_never_reach_a_reader_as_invalid_utf8(lab: Lab) -> None:
    """The preview of a non-UTF-8 entry is escaped: the refused stream stays readable by any client."""
    oid = _text(lab.attacker.xadd(KEYS.outbox(ATTACKER), {"topic": TOPIC, "payload": b"\xff" * 100 + b"\x00\n"}))
    lab.receipts(ATTACKER, [oid])
    decoded = redis.Redis(host="127.0.0.1", port=lab.server.port, decode_responses=True)
    try:
        assert decoded.xrange(KEYS.refused)  # raises UnicodeDecodeError if raw bytes were copied
    finally:
        decoded.close()


def test_a_flood_of_refused_entries_is_capped_and_the_victims_get_through(lab: Lab) -> None:
    """Entries the router refuses cost the attacker's own outbox and the capped refused stream."""
    settings = _desired(_doc()).bus.settings
    n = settings.refused_max_len + 2000
    with lab.victims_unharmed():
        pipe = lab.attacker.pipeline(transaction=False)
        for i in range(n):
            pipe.xadd(KEYS.outbox(ATTACKER), {"topic": "results.nope", "payload": str(i)})
        ids = [_text(i) for i in pipe.execute()]
        lab.receipts(ATTACKER, ids[-1:])  # the router got to the end of the flood
    assert lab.admin.xlen(KEYS.refused) <= settings.refused_max_len * 1.5
    assert lab.admin.xlen(KEYS.receipts(ATTACKER)) <= settings.receipts_max_len * 1.5
    assert lab.admin.xlen(KEYS.outbox(ATTACKER)) <= settings.outbox_max_len * 1.5


def test_a_flood_of_allowed_messages_does_not_push_unread_messages_out_of_a_victims_inbox(lab: Lab) -> None:
    """Valid messages are delivered, but an inbox trimmed by length would let a flood evict
    what the victims have not read yet: the honest messages sent before it must survive."""
    n = 2 * _desired(_doc()).bus.topics[TOPIC].max_len + 500
    with lab.victims_unharmed():  # the victims read nothing until the end
        pipe = lab.attacker.pipeline(transaction=False)
        for i in range(n):
            pipe.xadd(KEYS.outbox(ATTACKER), {"topic": TOPIC, "payload": str(i)})
        ids = [_text(i) for i in pipe.execute()]
        lab.receipts(ATTACKER, ids[-1:])


# -- in process: EventBus refuses what the router would refuse -------------------------------

async def test_eventbus_refuses_a_topic_the_role_allows_but_the_agent_did_not_declare(lab: Lab) -> None:
    from swarm.bus import EventBus
    from swarm.bus.apply import agent_redis_url
    from swarm.errors import AclDeniedError

    url = agent_redis_url(lab.server.url, SWARM, ATTACKER, SECRET)
    async with EventBus(redis_url=url, swarm=SWARM, agent_id=ATTACKER) as bus:
        assert bus.can_publish("worker", UNDECLARED_BY_ATTACKER)  # the role alone would allow it
        with pytest.raises(AclDeniedError, match=UNDECLARED_BY_ATTACKER):
            await bus.publish(UNDECLARED_BY_ATTACKER, {"x": 1})
    assert lab.admin.xlen(KEYS.outbox(ATTACKER)) == 0  # refused before anything was sent
    # and the router refuses the same entry written raw (the OUTBOX_REFUSALS case checks the reason)
    assert not lab.admin.exists(KEYS.topic(UNDECLARED_BY_ATTACKER)) or \
        lab.admin.xlen(KEYS.topic(UNDECLARED_BY_ATTACKER)) == 0


# -- the rights an agent does get (so the refusals above are not a user that can do nothing) ----

def test_the_attacker_keeps_exactly_its_own_rights(lab: Lab) -> None:
    me = lab.attacker
    assert me.hgetall(KEYS.breaker(ATTACKER)) == {}
    assert me.get(KEYS.bus) is not None and me.get(KEYS.acl) is not None
    assert me.xadd(KEYS.agent_dead_letter(ATTACKER), {"reason": "test"})
    assert me.xrange(KEYS.receipts(ATTACKER)) == []
    assert me.xpending(KEYS.inbox(ATTACKER), ATTACKER)["pending"] == 0
    assert me.xdel(KEYS.inbox(ATTACKER), "0-1") == 0  # its ack deletes its own deliveries
    assert me.xautoclaim(KEYS.inbox(ATTACKER), ATTACKER, "me", 0, "0-0")[1] == []


# -- user names -----------------------------------------------------------------------------

def _swarm_doc(name: str, agent_id: str) -> dict[str, Any]:
    return {
        "apiVersion": "swarm/v1", "kind": "Swarm", "metadata": {"name": name},
        "topics": [{"name": "t.a"}],
        "roles": {"r": {"publish": ["t.a"], "subscribe": ["t.a"]}},
        "agents": [{"id": agent_id, "role": "r", "port": 9001, "publishes": ["t.a"], "subscribes": ["t.a"]}],
    }


def test_user_names_of_look_alike_swarms_differ_and_one_apply_never_touches_the_other(redis_server: RedisServer) -> None:
    """``research``/``x-w`` and ``research-x``/``w`` shared ``swarm-research-x-w`` when ``-`` was the separator."""
    a, b = SwarmKeys("research").redis_user("x-w"), SwarmKeys("research-x").redis_user("w")
    assert a != b
    first, second = _desired(_swarm_doc("research", "x-w")), _desired(_swarm_doc("research-x", "w"))
    admin = redis.Redis(host="127.0.0.1", port=redis_server.port)

    async def apply(d: DesiredState, prune: bool = False) -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            await apply_bus(client, d.bus, d.acl, secret=SECRET, prune=prune, force_prune=True)
        finally:
            await client.aclose()

    try:
        asyncio.run(apply(second))
        before = admin.acl_getuser(b)
        asyncio.run(apply(first, prune=True))  # a prune of "research" must not take "research-x"'s user
        assert admin.acl_getuser(b) == before
        assert admin.acl_getuser(a) is not None
        for swarm, agent in (("research", "x-w"), ("research-x", "w")):
            me = agent_client(redis_server, agent, swarm=swarm)
            try:  # each logs in with its own password and reaches only its own swarm's keys
                me.xadd(SwarmKeys(swarm).outbox(agent), {"topic": "t.a", "payload": "{}"})
                other = "research-x" if swarm == "research" else "research"
                with pytest.raises(NoPermissionError):
                    me.xadd(SwarmKeys(other).outbox("w" if other == "research-x" else "x-w"),
                            {"topic": "t.a", "payload": "{}"})
            finally:
                me.close()
        asyncio.run(apply(second, prune=True))
        assert admin.acl_getuser(a) is not None and admin.acl_getuser(b) == before
    finally:
        admin.close()



# -- the Redis `swarm up` starts: an agent must not simply skip its own user ------------------

@pytest.mark.slow  # a whole `swarm up`
def test_the_redis_of_swarm_up_refuses_an_agent_that_ignores_its_own_user(tmp_path: Path) -> None:
    """An agent given its own user could connect as ``default`` instead: on the Redis
    ``swarm up`` starts, that needs a password the agents are not given."""
    spec = tmp_path / "specs"
    shutil.copytree(REPO / "specs", spec)
    env = {**os.environ, "SWARM_REGISTRY_SECRET": "", "SWARM_ADMIN_TOKEN": "", "SWARM_BUS_SECRET": ""}
    up = Up(tmp_path, str(spec), env=env)
    try:
        up.wait_until(lambda: "  redis " in up.text(), "swarm up's Redis")
        port = int(up.url("redis").rsplit(":", 1)[1].split("/")[0])
        anonymous = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
        try:
            with pytest.raises(redis.exceptions.AuthenticationError):
                anonymous.execute_command("EVAL", "return 1", "0")  # type: ignore[no-untyped-call]
        finally:
            anonymous.close()
    finally:
        if up.proc.poll() is None:
            up.interrupt()
        up.kill()



def test_the_readme_lists_exactly_the_rights_bus_apply_grants() -> None:
    """The threat model's list of an agent's Redis rights is the one user_rules writes."""
    from swarm.bus.apply import user_rules

    text = (REPO / "README.md").read_text()
    section = text[text.index("## Threat model"):]
    listed = section[section.index("gets exactly"):section.index("What Redis cannot bound")]
    documented = {(cmd, key) for line in listed.splitlines() if line.startswith("- ")
                  for cmd in re.findall(r"`([A-Z]+)`", line)
                  for key in ([k for k in re.findall(r"`([a-z@:<>]+)`", line) if k != "<id>"] or [""])}
    keys = SwarmKeys("N")
    granted: set[tuple[str, str]] = set()
    for rule in user_rules(keys, "ID", ["t"], ["t"], "pw"):
        words = rule.strip("()").split()
        commands = [w[1:].upper() for w in words if w.startswith("+")]
        patterns = [w.split("~", 1)[1] for w in words if "~" in w] or [""]
        granted |= {(c, p.removeprefix(keys.prefix).replace("ID", "<id>")) for c in commands for p in patterns}
    assert documented == granted
