"""PATCH /catalog against a real registry (uvicorn subprocess) on a real redis-server.

A patch upserts and removes agents on top of the stored catalog whose digest is
``base_digest``; the result must have ``digest`` (computed as PUT computes it).
Covered: the happy path (GET /catalog equals the catalog built locally, one
``catalog-changed`` event, a no-op patch emits none), 409 ``base_digest_mismatch``
(stale base, no catalog at all, concurrent patches on one base: exactly one wins),
422 for duplicates, bad ids, removing an undeclared id and a wrong digest (the
stored catalog is unchanged after each), and hostile callers (no token, an
agent's or the read token, an oversized body by header and by stream, malformed
JSON, unknown fields).
"""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest
import redis

from swarm.desired import CatalogDelta, RegistryCatalog, catalog_delta, patched_catalog
from swarm.keys import SwarmKeys
from swarm.registry.catalog_push import BaseDigestMismatch, patch_body, patch_catalog
from swarm.registry.models import catalog_digest
from tests.registry.conftest import RegistryFactory, RegistryProcess, make_catalog

KEYS = SwarmKeys("research")


def _stored(registry: RegistryProcess) -> dict[str, Any]:
    r = registry.get("/catalog", headers=registry.admin_headers())
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _events(registry: RegistryProcess) -> list[str]:
    client: Any = redis.Redis.from_url(registry.redis.url, decode_responses=True)
    try:
        return [fields["type"] for _, fields in client.xrange(KEYS.events)]
    finally:
        client.close()


def _patch(registry: RegistryProcess, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.patch(registry.url + "/catalog", content=json.dumps(body).encode(), timeout=10,
                       headers={"Content-Type": "application/json",
                                **(registry.admin_headers() if headers is None else headers)})


def _body(old: RegistryCatalog, new: RegistryCatalog) -> dict[str, Any]:
    delta = catalog_delta(old, new)
    assert delta is not None
    out: dict[str, Any] = json.loads(patch_body(delta, catalog_digest(old), catalog_digest(new), "r2"))
    return out


@pytest.fixture
def pushed(registry_factory: RegistryFactory) -> tuple[RegistryProcess, RegistryCatalog]:
    registry = registry_factory()
    base = make_catalog(["alpha", "beta", "gamma"])
    registry.push(base, revision="r1")
    return registry, base


def test_a_patch_gives_the_catalog_a_full_push_would(pushed: tuple[RegistryProcess, RegistryCatalog]) -> None:
    registry, base = pushed
    target = make_catalog(["beta", "delta", "gamma"], ttl_seconds=60, role="planner")  # beta changes, alpha goes
    target = target.model_copy(update={"spec_digest": "next"})
    delta = catalog_delta(base, target)
    assert delta is not None and delta.remove == ["alpha"] and {a.agent_id for a in delta.upsert} == {"beta", "delta", "gamma"}
    before = _events(registry)
    result = patch_catalog(registry.url, delta, catalog_digest(base), catalog_digest(target), "r2", registry.admin)
    assert result.changed and result.digest == catalog_digest(target) and result.revision == "r2"
    stored = _stored(registry)
    assert stored["digest"] == catalog_digest(target) and stored["revision"] == "r2"
    assert RegistryCatalog.model_validate(stored["catalog"]) == target
    assert _events(registry)[len(before):] == ["catalog-changed"]
    # the same catalog re-patched (an empty delta on the new base): stored as is, no second event
    again = patch_catalog(registry.url, CatalogDelta(), catalog_digest(target), catalog_digest(target), "r2",
                          registry.admin)
    assert again.changed is False
    assert _events(registry)[len(before):] == ["catalog-changed"]
    # and a full push of the same catalog agrees that nothing changed
    assert registry.push(target, revision="r2").changed is False


def test_a_stale_base_is_409_and_changes_nothing(pushed: tuple[RegistryProcess, RegistryCatalog]) -> None:
    registry, base = pushed
    target = make_catalog(["alpha", "beta"])
    body = _body(base, target)
    registry.push(make_catalog(["zeta"]), revision="other")  # someone else pushed meanwhile
    r = _patch(registry, body)
    assert r.status_code == 409 and r.json()["error"] == "base_digest_mismatch"
    assert "PUT /catalog" in r.json()["detail"]
    assert set(_stored(registry)["catalog"]["agents"]) == {"zeta"}
    with pytest.raises(BaseDigestMismatch):
        patch_catalog(registry.url, CatalogDelta(), body["base_digest"], body["digest"], None, registry.admin)


def test_no_catalog_at_all_is_409(registry_factory: RegistryFactory) -> None:
    registry = registry_factory()
    base, target = make_catalog(["a"]), make_catalog(["a", "b"])
    r = _patch(registry, _body(base, target))
    assert r.status_code == 409 and r.json()["error"] == "base_digest_mismatch"
    assert registry.get("/catalog", headers=registry.admin_headers()).status_code == 404


def test_concurrent_patches_on_one_base_one_wins(pushed: tuple[RegistryProcess, RegistryCatalog]) -> None:
    registry, base = pushed
    codes: list[int] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        target = make_catalog(["alpha", "beta", "gamma", f"new-{i}"])
        r = _patch(registry, _body(base, target))
        with lock:
            codes.append(r.status_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200] + [409] * 7, codes
    agents = set(_stored(registry)["catalog"]["agents"])
    assert len(agents) == 4 and {"alpha", "beta", "gamma"} <= agents


@pytest.mark.parametrize("case", ["twice-upserted", "twice-removed", "upserted-and-removed", "bad-id",
                                  "not-declared", "wrong-digest"])
def test_bad_patches_are_422_with_where_and_what(pushed: tuple[RegistryProcess, RegistryCatalog], case: str) -> None:
    registry, base = pushed
    target = make_catalog(["alpha", "beta", "gamma", "delta"])
    body = _body(base, target)
    delta_agent = body["upsert"][0]
    want_loc: list[object]
    if case == "twice-upserted":
        body["upsert"] = [delta_agent, delta_agent]
        want_loc, word = ["body", "upsert", 1, "agent_id"], "duplicate agent id 'delta'"
    elif case == "twice-removed":
        body["remove"] = ["alpha", "alpha"]
        want_loc, word = ["body", "remove", 1], "duplicate agent id 'alpha'"
    elif case == "upserted-and-removed":
        body["remove"] = ["delta"]
        want_loc, word = ["body", "remove", 0], "both upserted"
    elif case == "bad-id":
        body["upsert"] = [{**delta_agent, "agent_id": "Not An Id"}]
        want_loc, word = ["body", "upsert", 0, "agent_id"], "not an agent id"
    elif case == "not-declared":
        body["remove"] = ["omega"]
        want_loc, word = ["body", "remove", 0], "not declared"
    else:
        body["digest"] = "0" * 64
        want_loc, word = ["body", "digest"], "digest is " + catalog_digest(target)
    r = _patch(registry, body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert any(d["loc"] == want_loc and word in d["msg"] for d in detail), detail
    assert _stored(registry)["digest"] == catalog_digest(base)


def test_hostile_callers_are_refused(pushed: tuple[RegistryProcess, RegistryCatalog]) -> None:
    registry, base = pushed
    body = _body(base, make_catalog(["alpha", "beta", "gamma", "mallory"]))
    assert _patch(registry, body, headers={}).status_code == 401
    agent = _patch(registry, body, headers=registry.agent_headers("alpha"))
    assert agent.status_code == 403 and agent.json()["error"] == "forbidden"
    reader = _patch(registry, body, headers={"Authorization": f"Bearer {registry.read_token()}"})
    assert reader.status_code == 403
    forged = _patch(registry, body, headers={"Authorization": "Bearer " + "x" * 64})
    assert forged.status_code in (401, 403)
    h = {"Content-Type": "application/json", **registry.admin_headers()}
    big = b'{"base_digest": "' + b"a" * (17 * 1024 * 1024) + b'"}'
    over = httpx.patch(registry.url + "/catalog", content=big, headers=h, timeout=30)
    assert over.status_code == 413 and over.json()["error"] == "too_large"

    def chunks() -> Any:  # no Content-Length: counted as it streams
        for i in range(0, len(big), 1 << 20):
            yield big[i:i + (1 << 20)]

    assert httpx.request("PATCH", registry.url + "/catalog", content=chunks(), headers=h, timeout=30).status_code == 413
    for bad in (b"{not json", b"[]", b'{"base_digest": "abc", "digest": "def"}',
                json.dumps({**body, "colour": 1}).encode(), json.dumps({**body, "upsert": [{"agent_id": "x"}]}).encode()):
        r = httpx.patch(registry.url + "/catalog", content=bad, headers=h, timeout=10)
        assert r.status_code == 422 and r.json()["error"] == "invalid", (bad[:60], r.text)
    assert _stored(registry)["digest"] == catalog_digest(base)  # none of it landed
    assert "Traceback" not in registry.log_text()


def test_patched_catalog_is_pure_and_matches_the_delta() -> None:
    """The server's half (patched_catalog) undoes the client's half (catalog_delta) exactly."""
    old = make_catalog(["a", "b", "c"])
    new = make_catalog(["b", "c", "d"], ttl_seconds=90).model_copy(update={"spec_digest": "x"})
    delta = catalog_delta(old, new)
    assert delta is not None
    out, problems = patched_catalog(old, delta, lambda s: s.isalnum())
    assert problems == [] and out == new and catalog_digest(out) == catalog_digest(new)
    assert catalog_delta(old, old) == CatalogDelta() and CatalogDelta().empty
    assert catalog_delta(old, make_catalog(["a"], swarm="other")) is None


def test_catalog_text_is_the_whole_dump_byte_for_byte() -> None:
    """The agent-by-agent canonical JSON (reused between calls) equals dumping the whole catalog."""
    from swarm.desired import CatalogText
    from swarm.registry.models import canonical_json

    text = CatalogText()
    one = make_catalog(["a", "b", "c"])
    assert text.text(one) == canonical_json(one.model_dump(mode="json"))
    two = make_catalog(["a", "b", "c", "z"], ttl_seconds=9)
    two = two.model_copy(update={"agents": {**two.agents, "a": one.agents["a"], "b": one.agents["b"]},
                                 "spec_digest": "é-ünïcode"})
    assert text.text(two) == canonical_json(two.model_dump(mode="json"))
    assert text.digest(two) == catalog_digest(two)
    assert text.digest(make_catalog([])) == catalog_digest(make_catalog([]))
