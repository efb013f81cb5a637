"""Client-side transitions of a work item: submit, cancel, requeue, priority, continue.

Spec generation lives in ``services.specs`` (``work_item_generate_spec`` is re-exported here).
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from orchestration.choices import ErrorCategory, EventKind
from orchestration.clock import advisory_xact_lock, db_now
from orchestration.errors import InvalidState, NotFound, QueueFull, ValidationFailed
from orchestration.fleet import node_queue
from orchestration.forms.branches import derive_branch
from orchestration.models import (
    PRIORITY_RANK,
    Priority,
    Worker,
    WorkerStatus,
    WorkItem,
    WorkItemStatus,
    WorkItemType,
)
from orchestration.nudge import TaskName, send_on_commit
from orchestration.rows import row_get
from orchestration.services.costs import item_cost_cap, usd, usd_text
from orchestration.services.events import event_record
from orchestration.services.locks import locks_release_all
from orchestration.services.specs import spec_nudge
from orchestration.services.specs import work_item_generate_spec as work_item_generate_spec
from orchestration.services.workers.lifecycle import beats_settled

logger = logging.getLogger(__name__)


def work_item_get(*, work_item_id: UUID | str) -> WorkItem:
    return row_get(WorkItem, work_item_id, "Work item")


def work_item_submit(
    *,
    repo: str,
    spec: str = "",
    description: str = "",
    branch: str = "",
    priority: str = Priority.MEDIUM,
    max_iterations: int = 50,
    source: str = "",
    source_ref: str = "",
    metadata: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    actor: str = "system",
    type: str = WorkItemType.EXECUTION,
    pr_number: int | None = None,
    commit_sha: str = "",
    parent: WorkItem | None = None,
    message: str = "",
) -> tuple[WorkItem, bool]:
    """Create a work item from validated input; returns ``(item, created)``. Clients submit
    changes; the review bot submits reviews of a pull request's head (``type``, ``pr_number``,
    ``commit_sha``) and fix-ups of one (``parent``); ``message`` goes on its first event.

    1. Under one advisory lock (so two submits cannot both take the last queue slot):
    2. an idempotency key seen before returns the first item, unchanged;
    3. the queue bounds (MAX_QUEUED, MAX_QUEUED_PER_REPO) refuse with QueueFull, writing nothing;
    4. the row is inserted — ``queued`` with a spec, ``generating`` with only a description —
       and dispatch (or spec generation) is nudged after commit.
    """
    with transaction.atomic():
        advisory_xact_lock("whim.submit")
        if idempotency_key:
            existing = WorkItem.objects.filter(idempotency_key=idempotency_key).first()
            if existing is not None:
                return existing, False
        queue_bounds_check(repo=repo)
        # Only a change needs a spec written first; a review judges the pull request as it is.
        waits = type == WorkItemType.EXECUTION and not spec
        status = WorkItemStatus.GENERATING if waits else WorkItemStatus.QUEUED
        item = WorkItem.objects.create(
            type=type,
            pr_number=pr_number,
            commit_sha=commit_sha,
            parent_work_item=parent,
            repo=repo,
            spec=spec,
            description=description,
            branch=branch or (derive_branch(spec) if spec else ""),
            priority=priority,
            priority_rank=PRIORITY_RANK[Priority(priority)],
            max_iterations=max_iterations,
            source=source,
            source_ref=source_ref,
            metadata=metadata or {},
            idempotency_key=idempotency_key,
            status=status,
        )
        event_record(
            work_item=item, kind=EventKind.SUBMITTED, to_status=status, actor=actor, message=message
        )
        _nudge_after_commit(item)
    logger.info("work item %s submitted to %s by %s", item.pk, repo, actor)
    return item, True


def queue_bounds_check(*, repo: str) -> None:
    """Refuse (QueueFull) when MAX_QUEUED items wait, or MAX_QUEUED_PER_REPO for ``repo``.

    Call under the ``whim.submit`` advisory lock, so two callers cannot both take the last slot.
    """
    pending = WorkItem.objects.filter(status__in=WorkItem.PENDING)
    queued_total = pending.count()
    if queued_total >= settings.MAX_QUEUED:
        raise QueueFull(
            f"The queue is full ({queued_total} of {settings.MAX_QUEUED} items waiting)",
            details={"limit": settings.MAX_QUEUED, "queued": queued_total},
        )
    queued_repo = pending.filter(repo=repo).count()
    if queued_repo >= settings.MAX_QUEUED_PER_REPO:
        raise QueueFull(
            f"The queue for {repo} is full ({queued_repo} of "
            f"{settings.MAX_QUEUED_PER_REPO} items waiting)",
            details={
                "repo": repo,
                "limit": settings.MAX_QUEUED_PER_REPO,
                "queued": queued_repo,
            },
        )


def _nudge_after_commit(item: WorkItem) -> None:
    if item.status == WorkItemStatus.GENERATING:
        spec_nudge(item)
    else:
        send_on_commit(TaskName.DISPATCH)


def work_item_cancel(*, work_item_id: UUID | str, actor: str = "system", reason: str = "") -> bool:
    """Cancel an item that has not finished. A running attempt is killed and its locks freed.

    Returns True when this call cancelled it, False when it was already cancelled (a repeat).
    Raises InvalidState for a completed or failed item.
    """
    with transaction.atomic():
        item = WorkItem.objects.select_for_update().filter(pk=work_item_id).first()
        if item is None:
            raise NotFound("Work item not found")
        if item.status == WorkItemStatus.CANCELLED:
            return False
        if item.is_terminal:
            raise InvalidState(f"Work item is already {item.status}; it cannot be cancelled")
        now = db_now()
        live = list(
            Worker.objects.select_for_update().filter(work_item=item, status__in=Worker.ACTIVE)
        )
        for worker in live:
            beats_settled(item, worker)
            Worker.objects.filter(pk=worker.pk, status__in=Worker.ACTIVE).update(
                status=WorkerStatus.KILLED,
                completed_at=now,
                error="cancelled",
                error_category=ErrorCategory.CANCELLED,
            )
            locks_release_all(worker_id=worker.pk)
            if worker.container_id:
                queue = node_queue(worker.node_id) if worker.node_id else None
                send_on_commit(TaskName.STOP_CONTAINER, str(worker.pk), queue=queue)
        WorkItem.objects.filter(pk=item.pk, status=item.status).update(
            status=WorkItemStatus.CANCELLED,
            completed_at=now,
            updated_at=now,
            error=reason[:10_000] or "cancelled",
            error_category=ErrorCategory.CANCELLED,
            next_retry_at=None,
        )
        event_record(
            work_item=item,
            kind=EventKind.CANCELLED,
            from_status=item.status,
            to_status=WorkItemStatus.CANCELLED,
            actor=actor,
            message=reason,
        )
    logger.info("work item %s cancelled by %s", work_item_id, actor)
    return True


def work_item_requeue(
    *,
    work_item_id: UUID | str,
    reset_retries: bool = False,
    actor: str = "system",
    reason: str = "",
    leave_queued: bool = False,
) -> bool:
    """Put a finished item back in the queue (now, not after a backoff); True if it moved.

    Queued already: a no-op (False) — unless ``reset_retries`` finds retries to reset (the
    API's meaning: an item waiting for its next retry starts over, now). ``leave_queued``
    (the console) leaves every queued item alone. Assigned or running: InvalidState — cancel
    it first. ``reason`` goes on the event.
    """
    with transaction.atomic():
        item = WorkItem.objects.select_for_update().filter(pk=work_item_id).first()
        if item is None:
            raise NotFound("Work item not found")
        if item.status == WorkItemStatus.QUEUED and (
            leave_queued or not (reset_retries and item.retry_count)
        ):
            return False  # already waiting (and nothing to reset): a repeat, no second event
        if item.status not in (*WorkItem.REQUEUEABLE, WorkItemStatus.QUEUED):
            hint = "; continue it with a raised cost cap" if item.status in WorkItem.HELD else ""
            raise InvalidState(
                f"Work item is {item.status}; only failed, cancelled or completed items "
                f"can be requeued{hint}"
            )
        if item.status != WorkItemStatus.QUEUED:  # it joins the queue: the bounds apply
            advisory_xact_lock("whim.submit")
            queue_bounds_check(repo=item.repo)
        now = db_now()
        # A change whose spec was never written waits for it again (its tries start over).
        to = item.waiting_status
        fields: dict[str, Any] = {
            "status": to,
            "next_retry_at": None,
            "completed_at": None,
            "worker": None,
            "updated_at": now,
        }
        if reset_retries or to == WorkItemStatus.GENERATING:
            fields["retry_count"] = 0
        WorkItem.objects.filter(Q(pk=item.pk), Q(status=item.status)).update(**fields)
        event_record(
            work_item=item,
            kind=EventKind.REQUEUED,
            from_status=item.status,
            to_status=to,
            actor=actor,
            message=reason,
            data={"resetRetries": reset_retries},
        )
        if to == WorkItemStatus.GENERATING:
            spec_nudge(item)
        else:
            send_on_commit(TaskName.DISPATCH)
    return True


def work_item_set_priority(
    *, work_item_id: UUID | str, priority: str, actor: str, reason: str = ""
) -> bool:
    """Set an unfinished item's priority (a conditional UPDATE plus an event, with ``reason``).

    Setting the priority it already has changes nothing and returns False, so a double click
    has one effect. Finished items are refused: their priority no longer matters.
    """
    with transaction.atomic():
        item = WorkItem.objects.select_for_update().filter(pk=work_item_id).first()
        if item is None:
            raise NotFound("Work item not found")
        if item.priority == priority:
            return False
        if item.is_terminal:
            raise InvalidState(f"Work item is {item.status}; its priority no longer matters")
        WorkItem.objects.filter(pk=item.pk, priority=item.priority).update(
            priority=priority, priority_rank=PRIORITY_RANK[Priority(priority)]
        )
        event_record(
            work_item=item,
            kind=EventKind.PRIORITY_CHANGED,
            from_status=item.status,
            to_status=item.status,
            actor=actor,
            message=f"priority {item.priority} → {priority}" + (f": {reason}" if reason else ""),
            data={"from": item.priority, "to": priority},
        )
    return True


def work_item_continue(
    *, work_item_id: UUID | str, max_cost_usd: Decimal, actor: str, reason: str = ""
) -> bool:
    """Continue an item paused at its cost cap, with the raised cap ``max_cost_usd``.

    1. Lock the item. Queued already with this very cap: a repeat (False), no second event.
    2. Not paused: InvalidState. A cap (other than 0, no cap) not above what the item has
       spent already: ValidationFailed, since the next attempt could not spend anything.
    3. ``metadata.maxCostUsd`` = the cap; the item → ``queued`` now (no backoff, no retry
       charged: the attempt did not fail, it ran out of money); the queue bounds apply.
    4. An event names who, the old and new cap, and ``reason``; dispatch is nudged.
    """
    with transaction.atomic():
        item = WorkItem.objects.select_for_update().filter(pk=work_item_id).first()
        if item is None:
            raise NotFound("Work item not found")
        cap = usd(max_cost_usd)
        if item.status == WorkItemStatus.QUEUED and item_cost_cap(item) == (cap or None):
            return False
        if item.status not in WorkItem.HELD:
            raise InvalidState(f"Work item is {item.status}; only a paused item can be continued")
        if cap and cap <= item.cost_usd:
            raise ValidationFailed(
                "Invalid request",
                details={
                    "maxCostUsd": f"must be more than the ${usd_text(item.cost_usd)} "
                    "the item has spent already (or 0 for no cap)"
                },
            )
        advisory_xact_lock("whim.submit")
        queue_bounds_check(repo=item.repo)
        before = item_cost_cap(item)
        metadata = dict(item.metadata) if isinstance(item.metadata, dict) else {}
        metadata["maxCostUsd"] = float(cap)
        now = db_now()
        to = item.waiting_status  # a paused item has its spec; never queue one without
        WorkItem.objects.filter(pk=item.pk, status=item.status).update(
            status=to,
            metadata=metadata,
            next_retry_at=None,
            worker=None,
            error="",
            error_category="",
            updated_at=now,
        )
        new_cap = f"${usd_text(cap)}" if cap else "no cap"
        old_cap = f"${usd_text(before)}" if before is not None else "no cap"
        event_record(
            work_item=item,
            kind=EventKind.CONTINUED,
            from_status=item.status,
            to_status=to,
            actor=actor,
            message=f"cost cap {old_cap} → {new_cap}" + (f": {reason}" if reason else ""),
            data={"maxCostUsd": str(cap), "costUsd": str(item.cost_usd)},
        )
        if to == WorkItemStatus.GENERATING:
            spec_nudge(item)
        else:
            send_on_commit(TaskName.DISPATCH)
    logger.info("work item %s continued by %s (cap %s)", work_item_id, actor, cap)
    return True
