"""The git webhook (``POST /hooks/git``): who may tell the reconciler to fetch. Pure.

A push to the followed branch should reach the swarm in seconds, not at the next
fetch interval, so the registry accepts the webhooks GitHub and GitLab send and
bumps the counter ``swarm:{N}:git-hook``; the reconciler following a remote
branch (``swarm reconcile --watch --rev origin/main``) sees the counter move and
fetches at once. The body is never parsed or trusted: which branch moved is what
the fetch finds. A delivery is accepted only with the shared secret
(``SWARM_GIT_WEBHOOK_SECRET`` of the registry, the "secret" / "secret token" set
in the forge's webhook settings), in either form:

* GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``;
* GitLab: ``X-Gitlab-Token: <the secret>``.

Both are compared in constant time. Without a configured secret the endpoint
answers 404: an unauthenticated hook would let anyone make the reconciler fetch
in a loop.
"""

from __future__ import annotations

import hmac
from typing import Mapping

from swarm.signature import signature as body_signature

#: Webhook bodies above this are refused (GitHub caps deliveries at 25 MB; a push's is far smaller).
MAX_HOOK_BYTES = 5 * 1024 * 1024
SECRET_ENV = "SWARM_GIT_WEBHOOK_SECRET"


class HookRefused(Exception):
    """The delivery is not authentic (401)."""


def verify_git_webhook(headers: Mapping[str, str], body: bytes, secret: str) -> str:
    """``"github"`` or ``"gitlab"`` for an authentic delivery; raises :class:`HookRefused`."""
    signature = headers.get("x-hub-signature-256")
    if signature is not None:
        expected = body_signature(secret.encode(), body)
        if hmac.compare_digest(signature.strip().lower().encode(), expected.encode()):
            return "github"
        raise HookRefused("X-Hub-Signature-256 does not match the body and the webhook secret")
    token = headers.get("x-gitlab-token")
    if token is not None:
        if hmac.compare_digest(token.encode(), secret.encode()):
            return "gitlab"
        raise HookRefused("X-Gitlab-Token is not the webhook secret")
    raise HookRefused("no X-Hub-Signature-256 (GitHub) or X-Gitlab-Token (GitLab) header")


def is_ping(headers: Mapping[str, str]) -> bool:
    """GitHub's test delivery when a hook is created: authentic, but no push."""
    return headers.get("x-github-event", "").lower() == "ping"
