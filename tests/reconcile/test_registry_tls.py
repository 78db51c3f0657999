"""The registry client of the reconciler (HttpRegistryPort): no CA bundle loaded for a plain-http URL.

Loading the CA bundle cost a no-op ``swarm plan`` a tenth of its time; the context
given instead must fail closed (verification on, no CA), and https keeps httpx's default.
"""

from __future__ import annotations

import ssl

import pytest

from swarm.reconcile.observe import _tls_for


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_a_plain_http_url_gets_a_context_that_trusts_no_one() -> None:
    context = _tls_for("HTTP://127.0.0.1:8700")
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.get_ca_certs() == [] and context.cert_store_stats()["x509_ca"] == 0


@pytest.mark.parametrize("url", ["https://registry.example:8700", "HTTPS://registry.example"])
def test_an_https_url_keeps_the_default_verification(url: str) -> None:
    assert _tls_for(url) is True


@pytest.mark.parametrize("name", ["HTTPS_PROXY", "http_proxy", "ALL_PROXY"])
def test_with_a_proxy_configured_the_default_stays(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "https://proxy.example:3128")  # the proxy itself may speak TLS
    assert _tls_for("http://127.0.0.1:8700") is True
