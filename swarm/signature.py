"""GitHub-style body signatures: ``sha256=<hex HMAC-SHA256 of the body>``. Pure.

One computation for both directions: the notifier signs what it sends
(``X-Swarm-Signature-256``) and the registry checks what a forge sends
(``X-Hub-Signature-256``).
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["signature"]


def signature(secret: bytes, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of body>``: what a receiver recomputes with the shared key."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
