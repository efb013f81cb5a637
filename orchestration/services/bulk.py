"""Acting on many rows at once: one service call (one transaction) per row, counted.

The console's queue page and the admin's actions share this loop, so a double click, a
second tab or two operators at once give the same answer everywhere: each service is
idempotent and reports whether it changed anything, a refusal (WhimError) is counted, and
the first few refusals are named.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import TypeVar
from uuid import UUID

from django.db import models

from orchestration.errors import WhimError
from orchestration.services.work_items import work_item_cancel, work_item_requeue

K = TypeVar("K")

REFUSALS_NAMED = 5


@dataclasses.dataclass
class BulkOutcome:
    changed: int = 0
    unchanged: int = 0  # already so: a repeat that had no effect
    refused: int = 0
    refusals: list[str] = dataclasses.field(default_factory=list)  # "<id>: why", the first few


def bulk_apply(*, ids: Iterable[K], apply: Callable[[K], bool]) -> BulkOutcome:
    """Run ``apply(id)`` (a service call returning whether it changed something) on each id."""
    outcome = BulkOutcome()
    for pk in ids:
        try:
            changed = apply(pk)
        except WhimError as exc:
            outcome.refused += 1
            if len(outcome.refusals) < REFUSALS_NAMED:
                outcome.refusals.append(f"{pk}: {exc.message}")
        else:
            outcome.changed += 1 if changed else 0
            outcome.unchanged += 0 if changed else 1
    return outcome


class WorkItemAction(models.TextChoices):
    """What the console's queue page and the admin can do to many work items at once."""

    CANCEL = "cancel", "Cancel"
    REQUEUE = "requeue", "Requeue"
    REQUEUE_RESET = "requeue_reset", "Requeue (reset retries)"


def work_item_act(*, action: str, work_item_id: UUID, actor: str, reason: str = "") -> bool:
    """One console action on one item; True when it changed the item.

    A requeue from the console leaves a queued item alone (``leave_queued``), whatever it
    asks: a second click on a list the first click requeued changes nothing, and an item
    waiting for its next retry keeps its retry count.
    """
    if action == WorkItemAction.CANCEL:
        return work_item_cancel(work_item_id=work_item_id, actor=actor, reason=reason)
    return work_item_requeue(
        work_item_id=work_item_id,
        reset_retries=action == WorkItemAction.REQUEUE_RESET,
        actor=actor,
        reason=reason,
        leave_queued=True,
    )


def work_items_bulk(
    *, action: str, work_item_ids: Iterable[UUID], actor: str, reason: str = ""
) -> BulkOutcome:
    """``work_item_act`` on each item, counted."""
    return bulk_apply(
        ids=work_item_ids,
        apply=lambda pk: work_item_act(action=action, work_item_id=pk, actor=actor, reason=reason),
    )
