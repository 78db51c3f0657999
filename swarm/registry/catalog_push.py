"""Pushing the compiled catalog to a registry: ``swarm registry push`` and the reconciler.

``push_catalog(registry_url, catalog, revision, admin_token)`` PUTs
``{"revision", "catalog"}`` to ``/catalog`` and returns the registry's answer
(:class:`~swarm.registry.models.CatalogPutResult`: digest, and whether anything
changed). The reconciler calls the same function (or :func:`push_catalog_async`
from its event loop), so the CLI and the reconciler can never push differently;
both accept the caller's kept-alive HTTP client (``client=`` / ``http=``).
``patch_catalog(registry_url, delta, base_digest, digest, revision, admin_token)``
PATCHes ``/catalog`` with only what changed (:class:`~swarm.desired.CatalogDelta`,
from :func:`~swarm.desired.catalog_delta`): the registry applies it on top of the
stored catalog only while that one's digest is ``base_digest``, else it answers 409
``base_digest_mismatch`` (:class:`BaseDigestMismatch`): the caller pushes the whole
catalog then. HTTP trouble becomes a :mod:`swarm.errors` type through :mod:`swarm.foreign`
(``http_transport_error`` / ``http_status_error``): connection errors, 429 and 5xx
are :class:`~swarm.errors.RegistryUnavailableError` (retry, honouring
Retry-After), 401/403 :class:`~swarm.errors.AuthError`, 409
:class:`~swarm.errors.ConflictError` (catalog of another swarm), 413/422
:class:`~swarm.errors.InvalidRequestError`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from swarm.desired import CatalogDelta, RegistryCatalog
from swarm.errors import ConflictError, InvalidRequestError
from swarm.foreign import http_status_error, http_transport_error
from swarm.foreign_http import _error_body
from swarm.registry import auth
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


admin_token_from_env = auth.admin_token_from_env  # one definition, light for `swarm token`


def _request_args(content: bytes, admin_token: str | None) -> dict[str, Any]:
    """The body and headers of a PUT or PATCH to ``/catalog``."""
    headers = {"Content-Type": "application/json"}
    if admin_token:
        headers["Authorization"] = f"Bearer {admin_token}"
    return {"content": content, "headers": headers}


def _put_body(catalog: RegistryCatalog, revision: str | None) -> bytes:
    return json.dumps({"revision": revision, "catalog": catalog.model_dump(mode="json")}).encode()


def _send(method: str, url: str, args: dict[str, Any], timeout: float, client: httpx.Client | None) -> httpx.Response:
    """One blocking request: on ``client`` (kept alive, left open) or a one-off one."""
    try:
        if client is None:
            return httpx.request(method, url, timeout=timeout, **args)
        return client.request(method, url, timeout=timeout, **args)
    except httpx.HTTPError as exc:
        raise http_transport_error(exc, f"{method} {url}") from exc


def _result(method: str, url: str, response: httpx.Response) -> CatalogPutResult:
    if response.status_code == 200:
        return CatalogPutResult.model_validate_json(response.content)
    raise http_status_error(response, f"{method} {url}")


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
    response = _send("PUT", url, _request_args(_put_body(catalog, revision), admin_token), timeout, client)
    return _result("PUT", url, response)


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
        response = await client.put(url, **_request_args(_put_body(catalog, revision), admin_token))
    except httpx.HTTPError as exc:
        raise http_transport_error(exc, f"PUT {url}") from exc
    finally:
        if http is None:
            await client.aclose()
    return _result("PUT", url, response)


class BaseDigestMismatch(ConflictError):
    """PATCH /catalog was refused: the stored catalog is not the one the patch was made against."""


def patch_body(delta: CatalogDelta, base_digest: str, digest: str, revision: str | None) -> bytes:
    body: dict[str, Any] = {"base_digest": base_digest, "digest": digest, "revision": revision,
                            "upsert": [a.model_dump(mode="json") for a in delta.upsert], "remove": list(delta.remove)}
    if delta.spec_digest is not None:
        body["spec_digest"] = delta.spec_digest
    if delta.settings is not None:
        body["settings"] = delta.settings.model_dump(mode="json")
    return json.dumps(body).encode()


def patch_catalog(
    registry_url: str,
    delta: CatalogDelta,
    base_digest: str,
    digest: str,
    revision: str | None,
    admin_token: str | None,
    *,
    timeout: float = 10.0,
    client: httpx.Client | None = None,
) -> CatalogPutResult:
    """PATCH the catalog; the registry's answer. :class:`BaseDigestMismatch` on 409
    ``base_digest_mismatch`` (push the whole catalog then); other errors as :func:`push_catalog`."""
    url = registry_url.rstrip("/") + "/catalog"
    args = _request_args(patch_body(delta, base_digest, digest, revision), admin_token)
    response = _send("PATCH", url, args, timeout, client)
    if response.status_code == 409 and _error_kind(response) == "base_digest_mismatch":
        raise BaseDigestMismatch(str(http_status_error(response, f"PATCH {url}")))
    return _result("PATCH", url, response)


def _error_kind(response: httpx.Response) -> str | None:
    kind = _error_body(response).get("error")
    return kind if isinstance(kind, str) else None
