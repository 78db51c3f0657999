"""The one exception tree of swarm.

Every error that leaves the package is a :class:`SwarmError`; library errors
(redis, httpx, yaml, pydantic) are wrapped with ``raise ... from exc`` so callers
never have to catch a third-party exception from us. Retry meaning lives in the
type: the reconcile loop retries :class:`TransientError` with backoff and reports
:class:`PermanentError` without retrying.

    SwarmError
    ├── SpecError                  invalid spec; carries every SpecIssue at once
    ├── CompileError               output could not be written where asked
    ├── PermanentError             retrying will not help
    │   ├── InvalidRequestError    bad argument, or a body the registry rejected (422)
    │   ├── AuthError              bad or missing token
    │   ├── NotDeclaredError       agent/topic not in the catalog
    │   ├── ConflictError          immutable field changed at the same version
    │   ├── BusError
    │   │   ├── UndeclaredTopicError
    │   │   ├── AclDeniedError
    │   │   ├── BreakerOpenError
    │   │   └── PayloadTooLargeError
    │   ├── RedisRefusedError      Redis refused a command a retry will not change (NOPERM ...)
    │   └── EngineError            a container engine (docker, podman) or pip command failed
    └── TransientError             retry later (carries delay)
        ├── RedisUnavailableError
        ├── RegistryUnavailableError
        └── RouterUnavailableError  no receipt from the bus router in time
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class Position:
    """A place in a spec file; line and column are one-based."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a spec: where, which field, what, and other places involved."""

    position: Position | None
    path: str
    message: str
    related: tuple[Position, ...] = field(default=())
    severity: str = "error"

    def format(self) -> str:
        """Compiler form: ``file:line:col: error: path: message``."""
        where = str(self.position) if self.position else "<spec>"
        text = f"{where}: {self.severity}: "
        if self.path:
            text += f"{self.path}: "
        text += self.message
        return text

    def to_dict(self) -> dict[str, object]:
        pos = self.position
        return {
            "file": pos.file if pos else None,
            "line": pos.line if pos else None,
            "column": pos.column if pos else None,
            "severity": self.severity,
            "path": self.path,
            "message": self.message,
            "related": [
                {"file": r.file, "line": r.line, "column": r.column} for r in self.related
            ],
        }


class SwarmError(Exception):
    """Base of every error raised by swarm."""


class SpecError(SwarmError):
    """The spec is invalid; ``issues`` holds every problem found, sorted by position."""

    def __init__(self, issues: list[SpecIssue]) -> None:
        self.issues = sorted(
            issues,
            key=lambda i: (
                i.position or Position("", 0, 0),
                i.path,
                i.message,
            ),
        )
        super().__init__("\n".join(i.format() for i in self.issues))


class CompileError(SwarmError):
    """Compiled output could not be produced or written where asked."""


class PermanentError(SwarmError):
    """An error that retrying will not fix."""


class InvalidRequestError(PermanentError, ValueError):
    """An argument is malformed or out of range, or a service rejected a request body (422)."""


class AuthError(PermanentError):
    """A bearer token is missing or does not grant the action."""


class NotDeclaredError(PermanentError):
    """An agent or topic is not declared in the catalog."""


class ConflictError(PermanentError):
    """An immutable field changed without a version change."""


class BusError(PermanentError):
    """A bus operation was refused."""


class UndeclaredTopicError(BusError):
    """The topic is not declared in the swarm spec."""


class AclDeniedError(BusError):
    """The agent's role may not publish/subscribe to the topic."""


class BreakerOpenError(BusError):
    """The sender's circuit breaker is open; publishing is blocked."""


class PayloadTooLargeError(BusError):
    """The payload is over the configured limit."""


class RedisRefusedError(PermanentError):
    """Redis refused a command for a reason a retry will not change (``code``: NOPERM, WRONGTYPE ...)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class EngineError(PermanentError):
    """A container engine (docker, podman) or pip command failed; the message carries its last output lines."""


class TransientError(SwarmError):
    """A temporary failure; retry after ``delay`` seconds."""

    def __init__(self, message: str, delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay


class RedisUnavailableError(TransientError):
    """Redis could not be reached or answered with a connection error."""


class RegistryUnavailableError(TransientError):
    """The registry HTTP service could not be reached or answered 5xx."""


class RouterUnavailableError(TransientError):
    """No bus router sent a receipt in time: the entry waits in the outbox until one runs."""
