"""How an attempt ends other than by completing: failed, stuck, expired by a sweep, killed.

Each is a conditional transition under the item-then-worker row locks; the item is then
retried with backoff, quarantined after repeated infrastructure failures, or failed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import F

from orchestration.choices import (
    HELD_CATEGORIES,
    INFRASTRUCTURE_CATEGORIES,
    PERMANENT_CATEGORIES,
    ErrorCategory,
    EventKind,
)
from orchestration.clock import db_now
from orchestration.errors import Fenced, InvalidState
from orchestration.fleet import node_queue_of
from orchestration.models import (
    AttemptKind,
    Worker,
    WorkerStatus,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
    WorkItemType,
)
from orchestration.nudge import TaskName, send_on_commit
from orchestration.retry import retry_delay
from orchestration.services.events import event_record
from orchestration.services.locks import locks_release_all
from orchestration.services.specs import spec_failure
from orchestration.services.verification import verification_report
from orchestration.services.workers.lifecycle import locked_settled

logger = logging.getLogger(__name__)

# The event a superseded attempt's ending leaves on its item's timeline.
ATTEMPT_ENDED: dict[str, EventKind] = {
    WorkerStatus.FAILED: EventKind.ATTEMPT_FAILED,
    WorkerStatus.STUCK: EventKind.ATTEMPT_STUCK,
    WorkerStatus.LOST: EventKind.ATTEMPT_LOST,
    WorkerStatus.KILLED: EventKind.ATTEMPT_KILLED,
}


def _end_attempt(
    *,
    worker_id: UUID | str,
    to: WorkerStatus,
    error: str,
    category: str,
    actor: str,
    retry: bool,
    repeat_ok: tuple[str, ...],
    unless: Callable[[Worker], bool] | None = None,
    iteration: int | None = None,
) -> bool:
    """End an active attempt with ``to`` and retry (with backoff) or fail its item.

    1. Lock item then worker. A worker already in one of ``repeat_ok`` is a repeat: no-op.
    2. A worker in any other final state is fenced off.
    3. ``unless(worker)`` true under the lock (a sweep's condition no longer holds, e.g. a
       heartbeat just landed): no-op.
    4. Worker → ``to`` (at ``iteration`` when the worker reports it); its locks are freed.
    5. If the worker is still the item's current attempt: a ``spec`` attempt's item goes back
       to ``generating`` with a backoff or fails (``specs.spec_failure``); any other item →
       ``paused`` for a held category (the cost cap), else ``queued`` with ``next_retry_at``
       (retry allowed and retries left) or ``failed``.
    """
    with transaction.atomic():
        item, worker = locked_settled(worker_id)
        if worker.status in repeat_ok:
            return False
        if not worker.is_active:
            raise Fenced(f"Worker is {worker.status}; it is no longer the active attempt")
        if unless is not None and unless(worker):
            return False
        now = db_now()
        Worker.objects.filter(pk=worker.pk, status__in=Worker.ACTIVE).update(
            status=to,
            completed_at=now,
            error=error[:100_000],
            error_category=category[:40],
            **({"iteration": iteration} if iteration is not None else {}),
        )
        locks_release_all(worker_id=worker.pk)
        if item.status in WorkItem.ACTIVE and item.worker_id == worker.pk:
            if worker.kind == AttemptKind.SPEC:
                # No spec yet: back to ``generating`` (bounded by SPEC_MAX_ATTEMPTS), never
                # ``queued``; nothing to pause or quarantine, a permanent ending fails it now.
                spec_failure(
                    item=item,
                    error=error,
                    category=category,
                    now=now,
                    permanent=not retry
                    or category in PERMANENT_CATEGORIES
                    or category in HELD_CATEGORIES,
                    worker=worker,
                    actor=actor,
                )
            elif category in HELD_CATEGORIES:
                _pause(item=item, worker=worker, error=error, category=category, now=now)
            else:
                _retry_or_fail(
                    item=item,
                    worker=worker,
                    error=error,
                    category=category,
                    actor=actor,
                    retry=retry,
                    now=now,
                )
        else:  # a superseded attempt ends; its item is not its to move
            event_record(
                work_item=item,
                worker=worker,
                kind=ATTEMPT_ENDED[to],
                from_status=item.status,
                to_status=item.status,
                actor=actor,
                message=error[:2000],
                data={"category": category},
            )
    logger.info("worker %s ended %s (%s)", worker_id, to, category)
    return True


def _item_move(
    *,
    item: WorkItem,
    worker: Worker,
    to: str,
    kind: str,
    actor: str,
    error: str,
    category: str,
    now: dt.datetime,
    data: dict[str, Any],
    fields: dict[str, Any],
) -> None:
    """Move the item its attempt ended to ``to`` (with ``fields``) — only while that attempt
    is still the item's active one — with the error kept, and record the event."""
    WorkItem.objects.filter(pk=item.pk, status__in=WorkItem.ACTIVE, worker_id=worker.pk).update(
        status=to,
        error=error[:100_000],
        error_category=category[:40],
        updated_at=now,
        **fields,
    )
    event_record(
        work_item=item,
        worker=worker,
        kind=kind,
        from_status=item.status,
        to_status=to,
        actor=actor,
        message=error[:2000],
        data=data,
    )


def _pause(*, item: WorkItem, worker: Worker, error: str, category: str, now: dt.datetime) -> None:
    """The attempt stopped at the item's cost cap, its work pushed: the item waits, paused,
    for an operator to continue it with a raised cap (``work_item_continue``). No retry is
    charged and nothing is failed; its locks were freed with the attempt's."""
    _item_move(
        item=item,
        worker=worker,
        to=WorkItemStatus.PAUSED,
        kind=EventKind.PAUSED,
        actor=f"worker:{worker.pk}",
        error=error,
        category=category,
        now=now,
        data={"category": category, "costUsd": str(item.cost_usd)},
        fields={"worker": None, "next_retry_at": None},
    )


def _retry_or_fail(
    *,
    item: WorkItem,
    worker: Worker,
    error: str,
    category: str,
    actor: str,
    retry: bool,
    now: dt.datetime,
) -> None:
    retryable = retry and category not in PERMANENT_CATEGORIES
    if category in INFRASTRUCTURE_CATEGORIES:
        # Counted since the item was last requeued by hand: an operator's requeue clears it.
        since = (
            WorkItemEvent.objects.filter(work_item_id=item.pk, kind=EventKind.REQUEUED)
            .order_by("-created_at")
            .values_list("created_at", flat=True)
            .first()
        )
        attempts = Worker.objects.filter(
            work_item_id=item.pk, error_category__in=INFRASTRUCTURE_CATEGORIES
        )
        if since is not None:
            attempts = attempts.filter(created_at__gt=since)
        crashes = attempts.count()
        if crashes >= settings.QUARANTINE_AFTER:
            # A crash loop: the item keeps killing its attempts for reasons no retry fixes.
            error = (
                f"quarantined after {crashes} infrastructure failures (last: {category}): {error}"
            )
            category, retryable = ErrorCategory.QUARANTINED, False
    # A verification only reads the pushed branch: a failed one is retried at once (as the
    # original Whim does), up to its own bound; a change waits out its backoff.
    verification = item.type == WorkItemType.VERIFICATION
    max_retries = settings.VERIFICATION_MAX_RETRIES if verification else settings.MAX_RETRIES
    if retryable and item.retry_count < max_retries:
        delay = 0 if verification else retry_delay(item.retry_count)
        next_at = now + dt.timedelta(seconds=delay) if delay else None
        _item_move(
            item=item,
            worker=worker,
            to=WorkItemStatus.QUEUED,
            kind=EventKind.RETRY_SCHEDULED,
            actor=actor,
            error=error,
            category=category,
            now=now,
            data={
                "category": category,
                "retry": item.retry_count + 1,
                "delaySeconds": delay,
                "nextRetryAt": next_at.isoformat() if next_at else None,
            },
            fields={
                "retry_count": F("retry_count") + 1,
                "next_retry_at": next_at,
                "worker": None,
            },
        )
        if next_at is None:
            send_on_commit(TaskName.DISPATCH)
        return
    _item_move(
        item=item,
        worker=worker,
        to=WorkItemStatus.FAILED,
        kind=EventKind.FAILED,
        actor=actor,
        error=error,
        category=category,
        now=now,
        data={"category": category, "retries": item.retry_count},
        fields={"completed_at": now, "next_retry_at": None},
    )
    if verification:  # its parent learns it will get no verdict
        verification_report(item=item, passed=None, now=now)


def worker_fail(
    *,
    worker_id: UUID | str,
    error: str,
    category: str = ErrorCategory.AGENT_ERROR,
    actor: str = "",
    iteration: int | None = None,
) -> bool:
    """The attempt failed: retry the item with backoff, or fail it after MAX_RETRIES. The
    worker row keeps the ``iteration`` it failed at, when reported."""
    return _end_attempt(
        iteration=iteration,
        worker_id=worker_id,
        to=WorkerStatus.FAILED,
        error=error or "failed",
        category=category or ErrorCategory.AGENT_ERROR,
        actor=actor or f"worker:{worker_id}",
        retry=True,
        repeat_ok=(WorkerStatus.FAILED,),
    )


def worker_stuck(*, worker_id: UUID | str, reason: str, attempts: int = 0) -> bool:
    """The agent reports it cannot progress: the item is retried with backoff or failed."""
    return _end_attempt(
        worker_id=worker_id,
        to=WorkerStatus.STUCK,
        error=f"stuck: {reason}" + (f" (after {attempts} attempts)" if attempts else ""),
        category=ErrorCategory.STUCK,
        actor=f"worker:{worker_id}",
        retry=True,
        repeat_ok=(WorkerStatus.STUCK,),
    )


def worker_expire(
    *,
    worker_id: UUID | str,
    to: WorkerStatus,
    category: str,
    error: str,
    unless: Callable[[Worker], bool],
) -> bool:
    """A sweep ends an attempt that looks dead or stuck — only if, under the row locks, it
    still does (``unless`` says otherwise: a heartbeat or progress landed meanwhile). Either
    the heartbeat wins and the worker lives, or the sweep wins and the heartbeat gets 409.
    Its container is stopped after commit; the item is retried with backoff or failed.
    """
    try:
        ended = _end_attempt(
            worker_id=worker_id,
            to=to,
            error=error,
            category=category,
            actor="supervisor",
            retry=True,
            repeat_ok=(),
            unless=unless,
        )
    except Fenced:
        return False  # it ended some other way first
    if ended:
        send_on_commit(TaskName.STOP_CONTAINER, str(worker_id), queue=node_queue_of(worker_id))
    return ended


# The reason a kill records when none is given (the original Whim's).
KILL_REASON = "Manual kill"


def worker_kill(
    *, worker_id: UUID | str, reason: str = "", actor: str = "system", retry: bool = True
) -> bool:
    """An operator kills an attempt: its container is stopped and its item is retried with
    backoff while retries are left (as the original Whim: a manual kill is not the task's
    fault), or, with ``retry=False``, fails. Every edge (API, console, admin, ``whim kill``)
    parses its input with ``KillForm`` and calls this. Killing a killed worker is a no-op;
    killing a finished one is InvalidState.
    """
    try:
        killed = _end_attempt(
            worker_id=worker_id,
            to=WorkerStatus.KILLED,
            error=f"killed: {reason.strip() or KILL_REASON}",
            category=ErrorCategory.KILLED,
            actor=actor,
            retry=retry,
            repeat_ok=(WorkerStatus.KILLED,),
        )
    except Fenced as exc:
        raise InvalidState(str(exc)) from None
    if killed:
        send_on_commit(TaskName.STOP_CONTAINER, str(worker_id), queue=node_queue_of(worker_id))
    return killed
