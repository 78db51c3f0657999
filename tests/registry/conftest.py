"""Fixtures that start the real registry: ``python -m swarm registry serve`` under uvicorn.

Shared by the server tests (tests/registry/test_server*.py ...) and the client,
end-to-end and fault tests. Every registry runs as a subprocess on a free port
against a redis-server of the test's own (``redis_factory``), with a known
secret, so tests can compute agent and admin tokens.

    def test_x(registry):                       # started, research catalog pushed
        r = httpx.post(registry.url + "/agents/register", json={"agent_id": "architect"},
                       headers=registry.agent_headers("architect"))

    def test_y(registry_factory, redis_server):
        reg = registry_factory(redis_server, extra_args=["--sweep-interval", "0.1"])
        reg.push(make_catalog(["a", "b"], ttl_seconds=1))

Catalog helpers: :func:`research_catalog` (compiled/research/registry.json) and
:func:`make_catalog` (a small catalog built in code: ids, ttl, allow_undeclared).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import httpx
import pytest

from swarm.desired import DeclaredAgent, RegistryCatalog, RegistryDefaults, TopicRights
from swarm.registry.auth import admin_token, agent_token, read_token
from swarm.registry.catalog_push import push_catalog
from swarm.registry.models import CatalogPutResult
from tests.support.services import ProcessServer, RedisServer, free_port, python_cmd

REPO = Path(__file__).resolve().parents[2]
TEST_SECRET = "test-registry-secret"


def research_catalog() -> RegistryCatalog:
    """The committed catalog of the example spec (swarm ``research``)."""
    return RegistryCatalog.model_validate_json((REPO / "compiled" / "research" / "registry.json").read_text())


def make_catalog(
    ids: Sequence[str] = ("alpha", "beta"),
    *,
    swarm: str = "research",
    ttl_seconds: int = 30,
    heartbeat_interval: int | None = None,
    allow_undeclared: bool = False,
    role: str = "worker",
    capabilities: Sequence[str] = ("research",),
    publish: Sequence[str] = ("results.research",),
    subscribe: Sequence[str] = ("tasks.research",),
) -> RegistryCatalog:
    """A catalog declaring ``ids`` (all alike) with the given registry settings."""
    return RegistryCatalog(
        swarm=swarm,
        spec_digest="test",
        settings=RegistryDefaults(
            url="http://127.0.0.1:8700",
            ttl_seconds=ttl_seconds,
            heartbeat_interval=heartbeat_interval or max(1, ttl_seconds // 3),
            allow_undeclared=allow_undeclared,
        ),
        agents={
            i: DeclaredAgent(
                agent_id=i, agent_name=i.title(), version="1.0.0", role=role,
                capabilities=sorted(capabilities),
                topics=TopicRights(publish=sorted(publish), subscribe=sorted(subscribe)),
                port=9000 + n, runtime="python", registry=True,
            )
            for n, i in enumerate(ids)
        },
    )


@dataclass
class RegistryProcess:
    """A running ``swarm registry serve``; ``url``, tokens, ``push()``, ``restart()``."""

    server: ProcessServer
    redis: RedisServer
    swarm: str
    secret: str | None
    log: Path
    admin: str | None = field(default=None)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    def agent_token(self, agent_id: str) -> str:
        assert self.secret is not None, "insecure registry: no tokens"
        return agent_token(self.secret, self.swarm, agent_id)

    def read_token(self) -> str:
        assert self.secret is not None, "insecure registry: no tokens"
        return read_token(self.secret, self.swarm)

    def read_headers(self) -> dict[str, str]:
        """The read-only token's header (reads need a token unless the catalog says public_reads)."""
        return {"Authorization": f"Bearer {self.read_token()}"} if self.secret else {}

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        """GET ``path`` with the read token (unless ``headers`` are given)."""
        kwargs.setdefault("headers", self.read_headers())
        kwargs.setdefault("timeout", 10)
        return httpx.get(self.url + path, **kwargs)  # type: ignore[arg-type]

    def agent_headers(self, agent_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.agent_token(agent_id)}"} if self.secret else {}

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin}"} if self.admin else {}

    def push(self, catalog: RegistryCatalog | None = None, revision: str | None = "test") -> CatalogPutResult:
        return push_catalog(self.url, catalog or research_catalog(), revision, self.admin)

    def register(self, agent_id: str, **body: object) -> httpx.Response:
        return httpx.post(self.url + "/agents/register", json={"agent_id": agent_id, **body},
                          headers=self.agent_headers(agent_id), timeout=10)

    def start(self) -> "RegistryProcess":
        self.server.start()
        return self

    def stop(self) -> int | None:
        return self.server.stop()

    def kill(self) -> None:
        self.server.kill()

    def restart(self) -> "RegistryProcess":
        self.server.stop()
        self.server.start()
        return self

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


RegistryFactory = Callable[..., RegistryProcess]


@pytest.fixture
def registry_factory(redis_factory: Callable[..., RedisServer], tmp_path: Path) -> Iterator[RegistryFactory]:
    """Start registries: ``registry_factory(redis=None, *, swarm, secret, insecure, extra_args, env, start)``.

    ``redis`` None starts a fresh redis-server. All registries stop after the test.
    """
    started: list[RegistryProcess] = []

    def make(
        redis: RedisServer | None = None,
        *,
        swarm: str = "research",
        secret: str | None = TEST_SECRET,
        insecure: bool = False,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        start: bool = True,
        port: int | None = None,
    ) -> RegistryProcess:
        redis = redis or redis_factory()
        port = port or free_port()
        log = tmp_path / f"registry{len(started)}.log"
        args = python_cmd("-m", "swarm", "registry", "serve", "--port", str(port), "--redis-url", redis.url,
                          "--swarm", swarm, "--log-level", "warning", *extra_args)
        if insecure:
            args.append("--insecure")
        run_env = {"SWARM_REGISTRY_SECRET": secret or "", "SWARM_ADMIN_TOKEN": "", **(env or {})}
        server = ProcessServer(args, port=port, env=run_env, cwd=REPO, log=log)
        proc = RegistryProcess(server=server, redis=redis, swarm=swarm, secret=secret if not insecure or secret else None,
                               log=log, admin=admin_token(secret, swarm) if secret else None)
        started.append(proc)
        return proc.start() if start else proc

    yield make
    for proc in started:
        proc.stop()


@pytest.fixture
def registry(registry_factory: RegistryFactory) -> RegistryProcess:
    """A registry for swarm ``research`` with the compiled research catalog pushed."""
    reg = registry_factory()
    reg.push()
    return reg


# -- SSE reading ----------------------------------------------------------------------


@dataclass
class SSEEvent:
    id: str | None
    event: str
    data: str

    def json(self) -> object:
        import json

        return json.loads(self.data)


class SSEReader:
    """Parse an httpx streaming response into events; comments (keep-alives) are kept.

        async with httpx.AsyncClient() as http:
            async with http.stream("GET", url + "/agents/watch") as resp:
                reader = SSEReader(resp)
                event = await reader.next_event(timeout=5)
    """

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()
        self.comments: list[str] = []

    async def next_event(self, timeout: float = 5.0) -> SSEEvent:
        import asyncio

        return await asyncio.wait_for(self._next(), timeout)

    async def next_comment(self, timeout: float = 5.0) -> str:
        """Read until a comment line arrives (events in between are dropped)."""
        import asyncio

        async def find() -> str:
            seen = len(self.comments)
            while len(self.comments) == seen:
                await self._next(stop_on_comment=True)
            return self.comments[-1]

        return await asyncio.wait_for(find(), timeout)

    async def _next(self, stop_on_comment: bool = False) -> SSEEvent:
        fields: dict[str, list[str]] = {}
        async for line in self.lines:
            if line == "":
                if fields:
                    return SSEEvent(
                        id=fields.get("id", [None])[-1],
                        event=fields.get("event", ["message"])[-1],
                        data="\n".join(fields.get("data", [])),
                    )
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                if stop_on_comment:
                    return SSEEvent(id=None, event="comment", data=line[1:].strip())
                continue
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)
        raise EOFError("event stream ended")
