"""Applied revisions (``swarm history``) and rollback pins (``swarm rollback``): formats. Pure.

Every pass that applies a new revision (or heals drift) appends one entry to the
capped stream ``swarm:{N}:history`` (:attr:`swarm.keys.SwarmKeys.history`, newest
:data:`HISTORY_MAX_LEN` kept) with these fields, all text:

* ``at`` (ISO time), ``trigger`` (``file``, ``git``, ``fetch``, ``rollback``, ...),
  ``digest`` (the spec digest), ``revision`` (JSON of
  :class:`~swarm.reconcile.status.Revision`);
* ``actions``: JSON list of the applied actions' descriptions;
* ``files``: JSON list of the spec files changed since the previous entry's commit
  (``M path``, ``A path``, ``D path``; empty without git or for the first entry);
* ``result``: ``applied`` (a new revision), ``drift-healed`` (the same revision, hand-made
  drift undone), or the state of a pass that did not converge (``invalid-spec``,
  ``refused``, ``error``, ``waiting``; recorded once while the same failure lasts), with
  ``error`` its message (empty for applied passes).

A rollback pin (``swarm:{N}:pin``) is JSON of :class:`~swarm.reconcile.status.PinInfo`:
the reconciler following a branch enforces ``commit`` instead of the branch while
the branch stays at ``branch_commit``, like Argo CD's rollback, which lasts until
the next sync: the next commit on the branch (or a fetch that moves it) applies the
branch again, unless the change is reverted in git.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, ValidationError

from swarm.reconcile.status import Applied, PinInfo, Revision

#: Entries kept in the history stream (MAXLEN ~).
HISTORY_MAX_LEN = 1000


class HistoryEntry(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    at: str
    trigger: str
    digest: str
    revision: Revision
    actions: list[str]
    files: list[str]
    result: str = "applied"
    error: str = ""

    def render(self) -> str:
        digest = self.digest.split(":", 1)[-1][:12] or "-"
        head = f"{self.at}  {self.result:12s}  {self.revision.label()}  digest {digest}  ({self.trigger})"
        lines = [head]
        if self.error:
            lines.append(f"    error: {self.error}")
            return "\n".join(lines)
        lines += [f"    changed {f}" for f in self.files]
        lines += [f"    - {a}" for a in self.actions] or ["    (no changes to the live system)"]
        return "\n".join(lines)


def history_fields(applied: Applied, files: list[str], *, result: str = "applied", error: str = "") -> dict[str, str]:
    """The stream fields of one pass (an applied revision, or a failure: see the module docstring)."""
    return {
        "result": result,
        "error": error,
        "at": applied.at,
        "trigger": applied.trigger,
        "digest": applied.digest or "",
        "revision": applied.revision.model_dump_json(),
        "actions": json.dumps([str(a.get("description", "")) for a in applied.actions]),
        "files": json.dumps(files),
    }


def parse_history_entry(entry_id: str, fields: Mapping[str, Any]) -> HistoryEntry | None:
    """A stream entry as a :class:`HistoryEntry`; None when it is not one."""
    try:
        return HistoryEntry(
            id=entry_id,
            at=str(fields["at"]),
            trigger=str(fields["trigger"]),
            digest=str(fields["digest"]),
            revision=Revision.model_validate_json(fields["revision"]),
            actions=json.loads(fields["actions"]),
            files=json.loads(fields["files"]),
            result=str(fields.get("result", "applied")),
            error=str(fields.get("error", "")),
        )
    except (KeyError, TypeError, ValueError, ValidationError):
        return None


def parse_pin(raw: str | bytes | None) -> PinInfo | None:
    if raw is None:
        return None
    try:
        return PinInfo.model_validate_json(raw)
    except ValidationError:
        return None
