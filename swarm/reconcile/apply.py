"""Apply a plan through the two ports, in the plan's order.

Called by the reconcile loop after :func:`~swarm.reconcile.plan.plan_actions`.
Every step is idempotent, so a pass killed half-way (SIGKILL) and re-run from a
fresh observation converges without doing anything twice that anyone can see:

* all bus creations are one :meth:`BusPort.apply` with exactly the objects
  the plan names (topic streams, outboxes with group ``router`` and inboxes with
  group ``<id>`` by XGROUP CREATE ... MKSTREAM ignoring BUSYGROUP, ACL SETUSER
  with the bus's own ``user_rules``, the ACL table and bus settings, in one MULTI
  fenced by the reconcile lease) — what ``swarm bus apply`` does, limited to
  what differs;
* the catalog is pushed only when the observed catalog differs, so a re-run
  after a push that landed sends no second push and the registry emits no
  second ``catalog-changed`` event;
* prunes delete by name; deleting something already gone is a no-op;
* before each registry write (catalog push, eviction) ``check_fence`` confirms
  the reconcile lease is still ours: the registry itself does not know it.

Errors are the ports' (``swarm.errors``); a :class:`~swarm.errors.TransientError`
stops the pass and the loop retries the whole pass from a new observation
(level-triggered: no half-remembered progress to get wrong).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from swarm.desired import CatalogDelta, DesiredState
from swarm.errors import PermanentError
from swarm.reconcile.plan import BUS_CREATES, Action, ActionKind, Plan
from swarm.reconcile.state import BusChanges, BusPort, RegistryPort

StepCallback = Callable[[Action], None]


@dataclass(frozen=True)
class CatalogPatch:
    """The catalog push of an incremental pass as a patch: PATCH /catalog with ``delta`` on top
    of the stored catalog whose digest is ``base_digest``, giving ``digest``. The registry
    port raises :class:`~swarm.errors.ConflictError` when the stored one is another."""

    delta: CatalogDelta
    base_digest: str
    digest: str


def apply_plan(
    plan: Plan,
    desired: DesiredState,
    registry: RegistryPort,
    bus: BusPort,
    *,
    revision: str,
    on_applied: StepCallback | None = None,
    check_fence: Callable[[], None] = lambda: None,
    catalog_patch: CatalogPatch | None = None,
) -> list[Action]:
    """Apply ``plan`` and return the actions done, in order.

    ``catalog_patch``: send the catalog push as this patch (incremental passes) when
    the registry port can (``patch_catalog``), else push the whole catalog.

    Raises :class:`PermanentError` for a refused plan (the caller should have
    checked ``plan.refused``; this is the safety net), and whatever the ports raise.
    """
    if plan.refused:
        raise PermanentError(plan.refused)
    done: list[Action] = []

    def mark(actions: list[Action]) -> None:
        for a in actions:
            done.append(a)
            if on_applied is not None:
                on_applied(a)

    creates = [a for a in plan.actions if a.kind in BUS_CREATES]
    if creates:
        bus.apply(desired.bus, desired.acl, bus_changes(creates))
        mark(creates)
    for action in plan.actions:
        if action.kind in BUS_CREATES:
            continue
        if action.kind in (ActionKind.PUSH_CATALOG, ActionKind.EVICT_AGENT):
            check_fence()
        patcher = getattr(registry, "patch_catalog", None)
        if action.kind is ActionKind.PUSH_CATALOG and catalog_patch is not None and patcher is not None:
            patcher(catalog_patch.delta, catalog_patch.base_digest, catalog_patch.digest, revision)
        else:
            _apply_one(action, desired, registry, bus, revision)
        mark([action])
    return done


def bus_changes(actions: list[Action]) -> BusChanges:
    """The bus objects named by the plan's creation actions."""
    return BusChanges(
        streams=tuple(a.target for a in actions if a.kind is ActionKind.CREATE_STREAM),
        mailboxes=tuple((a.target, a.box or "") for a in actions if a.kind is ActionKind.CREATE_MAILBOX),
        documents=any(a.kind in (ActionKind.WRITE_ACL_TABLE, ActionKind.WRITE_BUS_SETTINGS) for a in actions),
        users=tuple(a.target for a in actions if a.kind is ActionKind.PUT_REDIS_USER),
    )


def _apply_one(action: Action, desired: DesiredState, registry: RegistryPort, bus: BusPort, revision: str) -> None:
    kind = action.kind
    if kind is ActionKind.PUSH_CATALOG:
        registry.push_catalog(desired.registry, revision)
    elif kind is ActionKind.EVICT_AGENT:
        registry.evict(action.target)
    elif kind is ActionKind.DELETE_GROUP:
        assert action.group is not None
        bus.delete_group(desired.bus, action.target, action.group)
    elif kind is ActionKind.DELETE_STREAM:
        bus.delete_stream(desired.bus, action.target)
    elif kind is ActionKind.DELETE_LEGACY_USER:
        bus.delete_legacy_user(desired.bus, action.target)
    elif kind is ActionKind.DELETE_MAILBOX:
        bus.delete_mailbox(desired.bus, action.target)
    elif kind is ActionKind.DELETE_REDIS_USER:
        bus.delete_user(desired.bus, action.target)
    else:  # pragma: no cover - every kind is handled above or in BUS_CREATES
        raise AssertionError(f"unhandled action kind {kind}")
