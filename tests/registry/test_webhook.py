"""The git webhook's authentication (pure): GitHub's HMAC signature, GitLab's token."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from swarm.registry.webhook import HookRefused, is_ping, verify_git_webhook

SECRET = "s3cret"
BODY = b'{"ref": "refs/heads/main"}'


def github(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"x-hub-signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


def test_authentic_deliveries_in_both_forms() -> None:
    assert verify_git_webhook(github(BODY), BODY, SECRET) == "github"
    assert verify_git_webhook({"x-gitlab-token": SECRET}, BODY, SECRET) == "gitlab"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        github(BODY, "other"),
        github(BODY + b" "),  # signed another body
        {"x-hub-signature-256": "sha1=" + hashlib.sha1(BODY).hexdigest()},
        {"x-gitlab-token": SECRET + "x"},
        {"x-gitlab-token": ""},
    ],
)
def test_forgeries_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(HookRefused):
        verify_git_webhook(headers, BODY, SECRET)


def test_a_ping_is_recognised() -> None:
    assert is_ping({"x-github-event": "ping"}) and not is_ping({"x-github-event": "push"}) and not is_ping({})
