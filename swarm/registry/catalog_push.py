"""Pushing the compiled catalog to a registry: ``swarm registry push`` and the reconciler.

``push_catalog(registry_url, catalog, revision, admin_token)`` PUTs
``{"revision", "catalog"}`` to ``/catalog`` and returns the registry's answer
(:class:`~swarm.registry.models.CatalogPutResult`: digest, and whether anything
changed). The reconciler calls the same function (or :func:`push_catalog_async`
from its event loop), so the CLI and the reconciler can never push differently;
both accept the caller's kept-alive HTTP client (``client=`` / ``http=``).
HTTP trouble becomes a :mod:`swarm.errors` type: connection errors and 5xx are
:class:`RegistryUnavailableError` (retry), 401/403 :class:`AuthError`, 409
:class:`ConflictError` (catalog of another swarm), 422 :class:`InvalidRequestError`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import httpx

from swarm.desired import RegistryCatalog
from swarm.errors import (
    AuthError,
    ConflictError,
    InvalidRequestError,
    RegistryUnavailableError,
    SwarmError,
)
from swarm.registry.auth import admin_token as derived_admin_token
from swarm.registry.config import ADMIN_TOKEN_ENV, SECRET_ENV
from swarm.registry.models import CatalogPutResult


def load_catalog(compiled_dir: Path) -> RegistryCatalog:
    """Read ``<compiled_dir>/registry.json`` (e.g. compiled/research)."""
    path = compiled_dir / "registry.json" if compiled_dir.is_dir() else compiled_dir
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidRequestError(f"{path}: cannot read the compiled catalog: {exc.strerror}") from exc
    try:
        return RegistryCatalog.model_validate_json(raw)
    except ValueError as exc:
        raise InvalidRequestError(f"{path}: not a valid registry.json: {exc}") from exc


def admin_token_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """SWARM_ADMIN_TOKEN, else the token derived from SWARM_REGISTRY_SECRET, else None."""
    env = os.environ if environ is None else environ
    token = env.get(ADMIN_TOKEN_ENV) or None
    if token is None and env.get(SECRET_ENV):
        token = derived_admin_token(env[SECRET_ENV])
    return token


def _request_args(catalog: RegistryCatalog, revision: str | None, admin_token: str | None) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if admin_token:
        headers["Authorization"] = f"Bearer {admin_token}"
    body = {"revision": revision, "catalog": catalog.model_dump(mode="json")}
    return {"content": json.dumps(body).encode(), "headers": headers}


def _result(url: str, response: httpx.Response) -> CatalogPutResult:
    where = f"PUT {url}"
    code = response.status_code
    if code == 200:
        return CatalogPutResult.model_validate_json(response.content)
    detail = response.text[:2000]
    if code >= 500:
        retry = response.headers.get("retry-after", "1")
        raise RegistryUnavailableError(f"{where}: {code} {detail}", delay=float(retry) if retry.isdigit() else 1.0)
    if code in (401, 403):
        raise AuthError(f"{where}: {code} {detail}")
    if code == 409:
        raise ConflictError(f"{where}: {detail}")
    if code in (413, 422):
        raise InvalidRequestError(f"{where}: {code} {detail}")
    raise SwarmError(f"{where}: unexpected answer {code}: {detail}")


def push_catalog(
    registry_url: str,
    catalog: RegistryCatalog,
    revision: str | None,
    admin_token: str | None,
    *,
    timeout: float = 10.0,
    client: httpx.Client | None = None,
) -> CatalogPutResult:
    """PUT the catalog; the registry's answer. Blocking (httpx.Client).

    ``client``: a caller's kept-alive :class:`httpx.Client` (the reconciler pushes
    on every pass), used as is and left open; ``timeout`` then applies per request.
    Without it a one-off request is made.
    """
    url = registry_url.rstrip("/") + "/catalog"
    try:
        if client is None:
            response = httpx.put(url, timeout=timeout, **_request_args(catalog, revision, admin_token))
        else:
            response = client.put(url, timeout=timeout, **_request_args(catalog, revision, admin_token))
    except httpx.HTTPError as exc:
        raise RegistryUnavailableError(f"PUT {url}: {exc}") from exc
    return _result(url, response)


async def push_catalog_async(
    registry_url: str,
    catalog: RegistryCatalog,
    revision: str | None,
    admin_token: str | None,
    *,
    http: httpx.AsyncClient | None = None,
    timeout: float = 10.0,
) -> CatalogPutResult:
    """The same as :func:`push_catalog` for callers inside an event loop."""
    url = registry_url.rstrip("/") + "/catalog"
    client = http or httpx.AsyncClient(timeout=timeout)
    try:
        response = await client.put(url, **_request_args(catalog, revision, admin_token))
    except httpx.HTTPError as exc:
        raise RegistryUnavailableError(f"PUT {url}: {exc}") from exc
    finally:
        if http is None:
            await client.aclose()
    return _result(url, response)
