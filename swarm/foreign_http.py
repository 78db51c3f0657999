"""The one translation of httpx errors and registry answers into swarm's error tree.

Connection trouble, 5xx and 429 are transient
(:class:`~swarm.errors.RegistryUnavailableError`, honouring ``Retry-After``, retried with
:mod:`swarm.backoff`); 401/403 :class:`~swarm.errors.AuthError`; 404
:class:`~swarm.errors.NotDeclaredError`; 409 :class:`~swarm.errors.ConflictError`; other
4xx :class:`~swarm.errors.InvalidRequestError`. The registry client, the catalog push
and the reconciler's registry port all call these. Kept apart from the Redis half
(:mod:`swarm.foreign`) because generated agents import the registry client, and it must
not drag redis-py in.
"""

from __future__ import annotations

from typing import Any

import httpx

from swarm.errors import (
    AuthError,
    ConflictError,
    InvalidRequestError,
    NotDeclaredError,
    RegistryUnavailableError,
    SwarmError,
)


def http_transport_error(exc: BaseException, what: str, *, delay: float = 0.5, peer: str = "registry") -> SwarmError:
    """An httpx transport error (connect, read, timeout) while doing ``what``: transient.
    ``peer`` names the server in the message (a notification's receiver is not the registry)."""
    if isinstance(exc, SwarmError):
        return exc
    return RegistryUnavailableError(f"{what}: {peer} unreachable: {type(exc).__name__}: {exc}", delay=delay)


def _error_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {"detail": body}


def response_detail(response: httpx.Response) -> str:
    """The server's explanation of an error response, for error messages (at most 500 characters).

    Understands the registry's ``{"error", "detail", "fields"}`` and the 422
    ``{"detail": [{"loc", "msg"}, ...]}`` shapes; falls back to the raw text.
    """
    body = _error_body(response)
    detail = body.get("detail", body.get("message"))
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict) and "msg" in item:
                loc = ".".join(str(p) for p in item.get("loc", []))
                parts.append(f"{loc}: {item['msg']}" if loc else str(item["msg"]))
            else:
                parts.append(str(item))
        return "; ".join(parts)[:500]
    if detail is not None:
        return str(detail)[:500]
    if "error" in body:
        return str(body["error"])[:500]
    return response.text[:300] or response.reason_phrase


def retry_after(response: httpx.Response, default: float = 1.0) -> float:
    """Seconds the server asked us to wait (``Retry-After``), else ``default``."""
    try:
        return max(0.0, float(response.headers.get("retry-after", default)))
    except ValueError:
        return default


def http_status_error(response: httpx.Response, what: str, *, delay: float = 1.0, peer: str = "registry") -> SwarmError:
    """A registry answer (or ``peer``'s) that is not a success, as a swarm error (see the module docstring)."""
    code = response.status_code
    text = f"{what}: {peer} answered {code}: {response_detail(response)}"
    if code >= 500 or code == 429:
        return RegistryUnavailableError(text, delay=retry_after(response, delay))
    if code in (401, 403):
        return AuthError(text)
    if code == 404:
        return NotDeclaredError(text)
    if code == 409:
        return ConflictError(text)
    return InvalidRequestError(text)
