"""The default user's password in URLs (swarm.redis_auth): applied only where no credentials are, never shown."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pytest

from swarm.redis_auth import PASSWORD_ENV, has_credentials, masked, password_from_env, redis_url_from_env, with_password


def test_the_password_goes_into_a_url_without_credentials_percent_encoded() -> None:
    url = with_password("redis://127.0.0.1:6380/0", "a:b@c/d%e")
    parts = urlsplit(url)
    assert parts.username == "" and parts.password is not None and unquote(parts.password) == "a:b@c/d%e"
    assert (parts.hostname, parts.port, parts.path) == ("127.0.0.1", 6380, "/0")


@pytest.mark.parametrize("url", ["redis://:theirs@h:1/0", "redis://swarm.s.a:pw@h:1/0", "redis://someone@h/0",
                                 "unix:///tmp/r.sock?password=theirs"])
def test_credentials_already_in_the_url_win(url: str) -> None:
    assert has_credentials(url) and with_password(url, "mine") == url


def test_no_password_leaves_the_url_alone() -> None:
    assert with_password("redis://h:1/0", None) == with_password("redis://h:1/0", "") == "redis://h:1/0"


def test_a_unix_socket_gets_it_in_the_query() -> None:
    assert with_password("unix:///tmp/r.sock?db=1", "p w") == "unix:///tmp/r.sock?db=1&password=p+w"


@pytest.mark.parametrize("url, shown", [
    ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("redis://swarm.s.a:s3cret@h/0", "redis://swarm.s.a:***@h/0"),
    ("unix:///tmp/r.sock?db=1&password=s3cret", "unix:///tmp/r.sock?db=1&password=***"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
])
def test_masked_never_shows_the_password(url: str, shown: str) -> None:
    assert masked(url) == shown and "s3cret" not in masked(url)


def test_the_environment_variable_empty_counts_as_unset() -> None:
    assert password_from_env({PASSWORD_ENV: ""}) is None
    assert redis_url_from_env("redis://h/0", {PASSWORD_ENV: "pw"}) == "redis://:pw@h/0"
    assert redis_url_from_env("redis://h/0", {}) == "redis://h/0"
