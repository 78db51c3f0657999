"""The one translation of redis-py and httpx errors (swarm.foreign): one policy for every adapter."""

from __future__ import annotations

import httpx
import pytest
from redis import exceptions as rexc

from swarm.errors import (
    AuthError,
    ConflictError,
    InvalidRequestError,
    NotDeclaredError,
    PermanentError,
    RedisRefusedError,
    RedisUnavailableError,
    RegistryUnavailableError,
    TransientError,
)
from swarm.foreign import (
    http_status_error,
    http_transport_error,
    is_transient_redis,
    redis_error,
    redis_error_code,
)


@pytest.mark.parametrize(
    "exc",
    [
        rexc.ConnectionError("Connection refused"),
        rexc.TimeoutError("Timeout reading from socket"),
        ConnectionResetError(104, "reset"),
        rexc.ResponseError("OOM command not allowed when used memory > 'maxmemory'."),
        rexc.ReadOnlyError("You can't write against a read only replica."),
        rexc.BusyLoadingError("Redis is loading the dataset in memory"),
        rexc.ResponseError("BUSY Redis is busy running a script."),
        rexc.ResponseError("CLUSTERDOWN The cluster is down"),
        rexc.ResponseError("TRYAGAIN Multiple keys request during rehashing of slot"),
        rexc.ResponseError("MISCONF Redis is configured to save RDB snapshots"),
    ],
)
def test_passing_states_are_transient(exc: Exception) -> None:
    err = redis_error(exc, "publish")
    assert isinstance(err, RedisUnavailableError) and isinstance(err, TransientError)
    assert is_transient_redis(exc)
    assert str(err).startswith("publish: ")


@pytest.mark.parametrize(
    "exc, code",
    [
        (rexc.NoPermissionError("this user has no permissions to run the 'eval' command"), "NOPERM"),
        (rexc.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), "WRONGTYPE"),
        (rexc.ResponseError("NOGROUP No such key 'x' or consumer group 'y'"), "NOGROUP"),
        (rexc.ResponseError("unknown command 'FOO'"), ""),
        (rexc.DataError("Invalid input of type: 'dict'"), ""),
    ],
)
def test_refusals_that_stay_are_permanent(exc: Exception, code: str) -> None:
    err = redis_error(exc, "apply")
    assert isinstance(err, RedisRefusedError) and isinstance(err, PermanentError)
    assert not isinstance(err, TransientError)
    assert err.code == code == redis_error_code(exc)
    assert not is_transient_redis(exc)


def test_a_missing_password_is_permanent_and_says_where_the_password_comes_from() -> None:
    """NOAUTH (redis-py drops the word; redis-py 8 says it about HELLO): a retry cannot cure it."""
    exc = rexc.AuthenticationError("HELLO must be called with the client already authenticated, otherwise ...")
    err = redis_error(exc, "read status")
    assert isinstance(err, RedisRefusedError) and err.code == "NOAUTH" and not is_transient_redis(exc)
    assert "SWARM_REDIS_PASSWORD" in str(err) and "--redis-url" in str(err)


def test_a_wrong_password_stays_transient() -> None:
    """WRONGPASS: an agent's user is re-created by the reconciler after a Redis restart."""
    exc = rexc.AuthenticationError("invalid username-password pair or user is disabled.")
    err = redis_error(exc, "consume")
    assert isinstance(err, RedisUnavailableError) and is_transient_redis(exc)
    assert "SWARM_REDIS_PASSWORD" in str(err)


def test_a_swarm_error_passes_through_unchanged() -> None:
    original = InvalidRequestError("bad")
    assert redis_error(original, "x") is original
    assert http_transport_error(original, "x") is original


def _response(status: int, body: object = None, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body if body is not None else {"detail": f"status {status}"}, headers=headers)


@pytest.mark.parametrize(
    "status, kind",
    [
        (500, RegistryUnavailableError),
        (503, RegistryUnavailableError),
        (429, RegistryUnavailableError),
        (401, AuthError),
        (403, AuthError),
        (404, NotDeclaredError),
        (409, ConflictError),
        (413, InvalidRequestError),
        (422, InvalidRequestError),
    ],
)
def test_http_statuses(status: int, kind: type) -> None:
    err = http_status_error(_response(status), "register architect")
    assert type(err) is kind
    assert f"answered {status}" in str(err) and f"status {status}" in str(err)


def test_retry_after_sets_the_delay() -> None:
    err = http_status_error(_response(503, headers={"Retry-After": "7"}), "push")
    assert isinstance(err, RegistryUnavailableError) and err.delay == 7.0
    bad = http_status_error(_response(503, headers={"Retry-After": "soon"}), "push", delay=2.0)
    assert isinstance(bad, RegistryUnavailableError) and bad.delay == 2.0


def test_transport_errors_are_transient() -> None:
    err = http_transport_error(httpx.ConnectError("refused"), "heartbeat")
    assert isinstance(err, RegistryUnavailableError)
    assert "heartbeat" in str(err)


def test_non_json_body_is_quoted_cut() -> None:
    err = http_status_error(httpx.Response(502, text="<html>" + "x" * 1000), "status")
    assert "<html>" in str(err) and len(str(err)) < 400
