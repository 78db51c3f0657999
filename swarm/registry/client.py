"""AgentRegistryClient: how an agent registers itself and keeps its lease alive.

Who calls it: every generated agent server (``compiled/<swarm>/agents/<id>/server.py``)
in its lifespan, and anyone writing an agent by hand. It is used like this::

    client = AgentRegistryClient("http://127.0.0.1:8700", "architect", ttl_seconds=30,
                                 heartbeat_interval=10, token=token)
    await client.register({"version": "1.0.0", "capabilities": ["planning"]})
    await client.start_heartbeat_loop()
    ...
    await client.deregister()          # cancels the loop, sends DELETE

Why it is built this way:

* The heartbeat loop must survive anything the network or the registry does, because
  a dead loop means the agent silently drops out of the swarm. Transient failures
  (connection errors, timeouts, 5xx) are retried with :mod:`swarm.backoff` (capped
  exponential, full jitter, a small floor so it can never become a hot loop); the cap is at
  most :data:`MAX_RETRY_DELAY` seconds so an agent is back within ~2 s of the registry
  (or its Redis) recovering. Permanent refusals (401/403/409/422) are logged and
  retried on the slow ``heartbeat_interval`` cadence: the catalog may change.
* A 404 on heartbeat means the registry no longer knows us (evicted, deleted, Redis
  lost its data): the loop registers again with the metadata remembered from the
  last :meth:`register` call instead of retrying the heartbeat forever.
* ``register(metadata)`` posts agent_id, agent_name (``metadata["agent_name"]`` or
  ``metadata["name"]`` or the id), host, port, ttl_seconds and metadata. The register
  fields ``version``, ``role``, ``capabilities``, ``topics`` and ``health_url`` are
  lifted out of ``metadata`` to the top level of the body (the generated server passes
  them that way, and the registry checks them against the catalog only there); every
  other key stays in ``metadata``. Fields left out are filled from the catalog.
* If the agent starts while the registry is down, ``register()`` raises
  :class:`~swarm.errors.RegistryUnavailableError`; the caller may still start the
  loop, which registers first and so brings the agent up when the registry returns.
* The module imports only httpx and the standard library (plus ``swarm.errors`` and
  ``swarm.backoff``): generated agents import it, so it must stay light
  (``tests/test_layers.py``). That is why it maps HTTP answers itself instead of
  through :mod:`swarm.foreign` (which imports redis-py), and because a 403 here has
  two meanings the agent handles differently (a catalog refusal is
  :class:`NotDeclaredError`, a token refusal :class:`AuthError`).

Errors are :mod:`swarm.errors` types, never httpx exceptions:
connection errors and 5xx → :class:`RegistryUnavailableError` (``delay`` from
Retry-After), 401 and token-related 403 → :class:`AuthError`, 403 for an agent the
catalog does not declare (or declares differently) → :class:`NotDeclaredError`,
409 → :class:`ConflictError`, 422 and bad arguments → :class:`InvalidRequestError`.

Context manager: ``async with AgentRegistryClient(...) as client:`` does no network
I/O on entry (so entering never fails because the registry is down); on exit it
deregisters if the client registered or started its loop, and closes the HTTP client.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
from types import TracebackType
from typing import Any, Mapping

import httpx

from swarm.backoff import backoff_delay as _backoff_delay
from swarm.errors import (
    InvalidRequestError,
    NotDeclaredError,
    PermanentError,
    RegistryUnavailableError,
    SwarmError,
)
from swarm.foreign_http import http_status_error, http_transport_error, response_detail

log = logging.getLogger("swarm.registry.client")

#: Agent ids: same rule as ``swarm.spec.models.NAME_PATTERN`` (kept here so that
#: importing the client does not import pydantic; a test keeps the two equal).
AGENT_ID_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
AGENT_ID_MAX = 63
_AGENT_ID = re.compile(AGENT_ID_PATTERN)

#: Register body fields that a caller may pass inside ``metadata``; they are lifted
#: to the top level of the body (the generated server passes them this way).
LIFTED_FIELDS: tuple[str, ...] = ("version", "role", "capabilities", "topics", "health_url")
#: Aliases of ``agent_name`` looked up in metadata, in order; consumed, not sent twice.
NAME_KEYS: tuple[str, ...] = ("agent_name", "name")

DEFAULT_PORT = 8000
#: First retry waits up to this long; each failure doubles the window.
BASE_RETRY_DELAY = 0.2
#: Lower bound of every retry wait: full jitter may draw ~0, a loop must never spin.
MIN_RETRY_DELAY = 0.05
#: Upper bound of the retry window for transient errors (also capped by heartbeat_interval).
MAX_RETRY_DELAY = 1.5
#: Shortest heartbeat interval adopted from the registry's answers.
MIN_ADOPTED_INTERVAL = 0.1
#: Environment variable the token is read from when ``token`` is not given.
TOKEN_ENV = "SWARM_AGENT_TOKEN"


#: The one backoff of swarm (:func:`swarm.backoff.backoff_delay`); its defaults are the
#: constants above. Kept under this name for callers that imported it from here.
backoff_delay = _backoff_delay


def _is_declaration_refusal(response: httpx.Response) -> bool:
    """403 means either "your token may not do this" or "the catalog says no".

    The registry says which in its ``error`` field (``not_declared``, or e.g.
    ``role_mismatch``/``topics_not_declared``); any kind that is not about tokens is
    a catalog refusal.
    """
    try:
        body = response.json()
    except ValueError:
        body = {}
    kind = str(body.get("error", "") if isinstance(body, dict) else "").lower()
    if kind:
        return not any(word in kind for word in ("auth", "token", "forbidden"))
    text = response_detail(response).lower()
    return any(word in text for word in ("declared", "catalog", "role", "topic"))


class AgentRegistryClient:
    """Registers one agent with the swarm registry and keeps its lease alive."""

    def __init__(
        self,
        registry_url: str,
        agent_id: str,
        ttl_seconds: int = 60,
        heartbeat_interval: float = 20,
        *,
        token: str | None = None,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not isinstance(registry_url, str) or not re.match(r"^https?://[^\s/]+", registry_url):
            raise InvalidRequestError(f"registry_url must be an http(s) URL, got {registry_url!r}")
        if not isinstance(agent_id, str) or len(agent_id) > AGENT_ID_MAX or not _AGENT_ID.fullmatch(agent_id):
            raise InvalidRequestError(
                f"agent_id {agent_id!r} must match {AGENT_ID_PATTERN} and be at most {AGENT_ID_MAX} characters"
            )
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds < 1:
            raise InvalidRequestError(f"ttl_seconds must be a positive integer, got {ttl_seconds!r}")
        if isinstance(heartbeat_interval, bool) or not isinstance(heartbeat_interval, (int, float)):
            raise InvalidRequestError(f"heartbeat_interval must be a number, got {heartbeat_interval!r}")
        if not 0 < heartbeat_interval < ttl_seconds:
            raise InvalidRequestError(
                f"heartbeat_interval ({heartbeat_interval}) must be > 0 and < ttl_seconds ({ttl_seconds}),"
                " or the lease lapses between heartbeats"
            )
        if timeout <= 0:
            raise InvalidRequestError(f"timeout must be > 0, got {timeout!r}")
        self.registry_url = registry_url.rstrip("/")
        self.agent_id = agent_id
        self.ttl_seconds = ttl_seconds
        self.heartbeat_interval = heartbeat_interval
        self._token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        self._http = httpx.AsyncClient(
            base_url=self.registry_url,
            headers=headers,
            timeout=httpx.Timeout(timeout),
            transport=transport,
        )
        self._metadata: dict[str, Any] | None = None
        self._registered = False
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._effective_interval: float = float(heartbeat_interval)
        #: Times the loop had to register (again) since construction; useful for tests.
        self.registrations = 0

    # -- public API -----------------------------------------------------------------

    @property
    def registered(self) -> bool:
        """True while the last register/heartbeat succeeded (the registry knows us)."""
        return self._registered

    @property
    def effective_heartbeat_interval(self) -> float:
        """Seconds the loop waits between heartbeats.

        ``heartbeat_interval``, or shorter when the registry asks for it: it caps the
        lease at its catalog's TTL, and a client heartbeating slower than that lease
        would be evicted between heartbeats and flap.
        """
        return self._effective_interval

    def build_register_body(self, metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The JSON body :meth:`register` posts (pure apart from host/port lookup).

        ``agent_name`` is ``metadata["agent_name"]`` or ``metadata["name"]`` or the id;
        :data:`LIFTED_FIELDS` found in metadata go to the top level; everything else
        stays under ``metadata``. Fields left out are filled by the registry from the
        declared catalog.
        """
        meta = dict(metadata or {})
        name: Any = None
        for key in NAME_KEYS:
            value = meta.pop(key, None)
            if name is None and value:
                name = value
        host, port = self._get_host_port()
        body: dict[str, Any] = {
            "agent_id": self.agent_id,
            "agent_name": str(name) if name else self.agent_id,
            "host": host,
            "port": port,
            "ttl_seconds": self.ttl_seconds,
        }
        for key in LIFTED_FIELDS:
            if key in meta:
                body[key] = meta.pop(key)
        body["metadata"] = meta
        return body

    async def register(self, metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Register (or re-register) this agent; returns the registry's answer.

        Remembers ``metadata`` so the heartbeat loop can register again after a 404.
        """
        self._metadata = dict(metadata or {})
        body = self.build_register_body(self._metadata)
        response = await self._request("POST", "/agents/register", json=body)
        if response.status_code in (200, 201):
            self._registered = True
            self.registrations += 1
            log.info(
                "registered %s at %s:%s (%s)",
                self.agent_id,
                body["host"],
                body["port"],
                "new" if response.status_code == 201 else "unchanged",
            )
            try:
                answer = response.json()
            except ValueError:
                answer = {}
            answer = answer if isinstance(answer, dict) else {"result": answer}
            self._adopt_interval(answer)
            return answer
        self._raise_for(response, "register")
        raise AssertionError("unreachable")  # pragma: no cover

    async def heartbeat(self) -> bool:
        """Renew the lease once. False when the registry does not know us (404)."""
        response = await self._request("POST", f"/agents/{self.agent_id}/heartbeat")
        if response.status_code == 200:
            self._registered = True
            try:
                answer = response.json()
            except ValueError:
                answer = None
            if isinstance(answer, dict):
                self._adopt_interval(answer)
            return True
        if response.status_code == 404:
            self._registered = False
            return False
        self._raise_for(response, "heartbeat")
        raise AssertionError("unreachable")  # pragma: no cover

    async def start_heartbeat_loop(self) -> None:
        """Start :meth:`_heartbeat` as a task (kept in ``_heartbeat_task``); idempotent."""
        if self._heartbeat_task is not None and not self._heartbeat_task.done():
            return
        self._heartbeat_task = asyncio.create_task(
            self._heartbeat(), name=f"swarm-registry-heartbeat-{self.agent_id}"
        )

    async def stop_heartbeat_loop(self) -> None:
        """Cancel the heartbeat loop and wait for it to end."""
        task, self._heartbeat_task = self._heartbeat_task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are being cancelled ourselves, not just our loop

    async def deregister(self) -> bool:
        """Stop the loop and DELETE the registration; True if the registry removed it.

        Never raises for registry trouble (this runs at shutdown): 404 counts as
        done, connection errors and refusals are logged.
        """
        await self.stop_heartbeat_loop()
        was_registered, self._registered = self._registered, False
        try:
            response = await self._request("DELETE", f"/agents/{self.agent_id}")
        except RegistryUnavailableError as exc:
            log.warning("could not deregister %s: %s", self.agent_id, exc)
            return False
        if response.status_code in (200, 202, 204):
            log.info("deregistered %s", self.agent_id)
            return True
        if response.status_code == 404:
            log.info("deregister %s: registry did not know it (registered=%s)", self.agent_id, was_registered)
            return False
        log.error(
            "deregister %s refused: %s %s", self.agent_id, response.status_code, response_detail(response)
        )
        return False

    async def aclose(self) -> None:
        """Stop the loop (without deregistering) and close the HTTP client."""
        await self.stop_heartbeat_loop()
        await self._http.aclose()

    async def __aenter__(self) -> "AgentRegistryClient":
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._registered or self._heartbeat_task is not None:
                await self.deregister()
        finally:
            await self.aclose()

    # -- internals ------------------------------------------------------------------

    def _get_host_port(self) -> tuple[str, int]:
        """AGENT_HOST / AGENT_PORT, falling back to the hostname and 8000."""
        host = os.environ.get("AGENT_HOST") or socket.gethostname()
        raw = os.environ.get("AGENT_PORT")
        if not raw:
            return host, DEFAULT_PORT
        try:
            port = int(raw)
        except ValueError:
            raise InvalidRequestError(f"environment AGENT_PORT={raw!r} is not an integer") from None
        if not 1 <= port <= 65535:
            raise InvalidRequestError(f"environment AGENT_PORT={raw!r} is outside 1..65535")
        return host, port

    def _adopt_interval(self, answer: Mapping[str, Any]) -> None:
        """Heartbeat at the registry's pace when it is faster than ours (never slower)."""
        asked = answer.get("heartbeat_interval")
        if isinstance(asked, bool) or not isinstance(asked, (int, float)) or asked <= 0:
            return
        # floor: a registry asking for absurdly fast heartbeats must not make us spin
        interval = max(MIN_ADOPTED_INTERVAL, min(float(self.heartbeat_interval), float(asked)))
        if interval != self._effective_interval:
            log.info(
                "%s heartbeats every %.3gs (registry asks %.3gs, configured %.3gs)",
                self.agent_id, interval, asked, self.heartbeat_interval,
            )
            self._effective_interval = interval

    async def _heartbeat(self) -> None:
        """Loop forever: (register if needed,) wait, renew. Ends only by cancellation."""
        try:
            while True:
                if self._registered:
                    await asyncio.sleep(self._effective_interval)
                await self._renew_or_register()
        except asyncio.CancelledError:
            log.debug("heartbeat loop of %s stopped", self.agent_id)
            raise

    async def _renew_or_register(self) -> None:
        """One renewal, retried until it succeeds: heartbeat, or register when unknown."""
        failures = 0
        while True:
            try:
                if not self._registered:
                    await self.register(self._metadata)
                    return
                if await self.heartbeat():
                    return
                log.warning("registry does not know %s (404 on heartbeat); registering again", self.agent_id)
                continue
            except RegistryUnavailableError as exc:
                # The server's Retry-After (exc.delay) is deliberately not obeyed here:
                # the jittered window already spreads a fleet, and a short cap is what
                # brings agents back within ~2 s of the registry recovering.
                delay = backoff_delay(failures, cap=min(MAX_RETRY_DELAY, self._effective_interval))
                log.warning("registry unavailable for %s (%s); retrying in %.2fs", self.agent_id, exc, delay)
            except PermanentError as exc:
                delay = max(MIN_RETRY_DELAY, self._effective_interval)
                log.error("registry refused %s: %s; retrying in %.1fs", self.agent_id, exc, delay)
            except SwarmError as exc:
                delay = backoff_delay(failures, cap=self._effective_interval)
                log.error("registry error for %s: %s; retrying in %.2fs", self.agent_id, exc, delay)
            except Exception:  # a bug must not kill the agent's lease keeping
                delay = backoff_delay(failures, cap=self._effective_interval)
                log.exception("unexpected error in heartbeat loop of %s; retrying in %.2fs", self.agent_id, delay)
            failures += 1
            await asyncio.sleep(delay)

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise http_transport_error(exc, f"{method} {self.registry_url}{path}", delay=1.0) from exc
        if response.status_code >= 500:
            raise http_status_error(response, f"{method} {self.registry_url}{path}")
        return response

    def _raise_for(self, response: httpx.Response, action: str) -> None:
        where = f"{action} {self.agent_id} at {self.registry_url}"
        if response.status_code == 403 and _is_declaration_refusal(response):
            # a 403 of the catalog ("not declared", "role differs"), not of the token
            raise NotDeclaredError(f"{where}: registry answered 403: {response_detail(response)}")
        raise http_status_error(response, where)
