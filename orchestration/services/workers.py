"""Transitions of an attempt: started, heartbeat, complete, fail, stuck, kill.

Lock order everywhere: the work item row, then the worker row. Every transition is a
conditional UPDATE plus an event. A repeat of what already happened is a no-op that reports
success; a change requested by a worker that is no longer the active attempt raises Fenced.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce

from orchestration.clock import db_now
from orchestration.errors import Fenced, InvalidState, ValidationFailed
from orchestration.models import (
    Worker,
    WorkerMetrics,
    WorkerStatus,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
    WorkItemType,
)
from orchestration.nudge import delay_on_commit
from orchestration.services.dispatch import usage_add
from orchestration.services.events import event_record
from orchestration.services.locks import locks_release_all, locks_renew

logger = logging.getLogger(__name__)

# Failures of the machinery rather than the agent; QUARANTINE_AFTER of them fail the item.
INFRA_CATEGORIES = frozenset(
    {
        "RESOURCE_ERROR",
        "CONTAINER_LOST",
        "CRASHED",
        "HEARTBEAT_TIMEOUT",
        "START_TIMEOUT",
        "START_ERROR",
        "TERMINATED",
    }
)

# Failure categories that no retry can fix.
PERMANENT_CATEGORIES = frozenset(
    {"VALIDATION_ERROR", "CONFIG_ERROR", "CONTAINER_ERROR", "PERMANENT", "KILLED"}
)


def locked_item_and_worker(worker_id: UUID | str) -> tuple[WorkItem, Worker]:
    """Lock the worker's item, then the worker (the one lock order)."""
    from orchestration.selectors import row_get

    item_id = row_get(Worker, worker_id, "Worker").work_item_id
    item = WorkItem.objects.select_for_update().get(pk=item_id)
    worker = Worker.objects.select_for_update().get(pk=worker_id)
    return item, worker


def worker_mark_started(*, worker_id: UUID | str, container_id: str) -> bool:
    """``starting → running`` and ``assigned → in_progress`` once the container exists."""
    with transaction.atomic():
        item, worker = locked_item_and_worker(worker_id)
        if worker.status != WorkerStatus.STARTING:
            return False
        now = db_now()
        Worker.objects.filter(pk=worker.pk, status=WorkerStatus.STARTING).update(
            status=WorkerStatus.RUNNING,
            container_id=container_id,
            started_at=now,
            last_heartbeat=now,
            last_progress_at=now,
        )
        WorkItem.objects.filter(
            pk=item.pk, status=WorkItemStatus.ASSIGNED, worker_id=worker.pk
        ).update(status=WorkItemStatus.IN_PROGRESS, updated_at=now)
        event_record(
            work_item=item,
            worker=worker,
            kind="started",
            from_status=item.status,
            to_status=WorkItemStatus.IN_PROGRESS,
            data={"containerId": container_id},
        )
    return True


def worker_heartbeat(
    *,
    worker_id: UUID | str,
    iteration: int,
    tokens_in: int | None = None,
    tokens_out: int | None = None,
) -> None:
    """Record liveness (and progress when the iteration or token counts rise)."""
    with transaction.atomic():
        item, worker = locked_item_and_worker(worker_id)
        if not worker.is_active:
            raise Fenced(f"Worker is {worker.status}; it is no longer the active attempt")
        now = db_now()
        fields: dict[str, Any] = {"last_heartbeat": now}
        progressed = (
            iteration > worker.iteration
            or (tokens_in or 0) > worker.tokens_in
            or (tokens_out or 0) > worker.tokens_out
        )
        if progressed:
            fields["last_progress_at"] = now
        fields["iteration"] = max(iteration, worker.iteration)
        if tokens_in is not None:
            fields["tokens_in"] = max(tokens_in, worker.tokens_in)
        if tokens_out is not None:
            fields["tokens_out"] = max(tokens_out, worker.tokens_out)
        Worker.objects.filter(pk=worker.pk, status__in=Worker.ACTIVE).update(**fields)
        locks_renew(worker_id=worker.pk, now=now)
        if iteration > worker.iteration:
            WorkItem.objects.filter(pk=item.pk, worker_id=worker.pk).update(iteration=iteration)
            usage_add(now=now, iterations=iteration - worker.iteration)


@dataclasses.dataclass(frozen=True)
class Completion:
    pr_url: str = ""
    pr_number: int | None = None
    verification_passed: bool | None = None
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    learnings: list[Any] = dataclasses.field(default_factory=list)
    review: dict[str, Any] | None = None
    verification_enabled: bool = False
    commit_sha: str = ""


def worker_complete(*, worker_id: UUID | str, result: Completion) -> bool:
    """The attempt finished: item ``completed`` with its result, locks freed.

    Returns False for a repeat (already completed). Raises Fenced if the worker ended otherwise.
    """
    with transaction.atomic():
        item, worker = locked_item_and_worker(worker_id)
        if worker.status == WorkerStatus.COMPLETED:
            return False
        if not worker.is_active:
            raise Fenced(f"Worker is {worker.status}; it can no longer complete")
        now = db_now()
        Worker.objects.filter(pk=worker.pk, status__in=Worker.ACTIVE).update(
            status=WorkerStatus.COMPLETED, completed_at=now
        )
        moved = WorkItem.objects.filter(
            pk=item.pk, status__in=WorkItem.ACTIVE, worker_id=worker.pk
        ).update(
            status=WorkItemStatus.COMPLETED,
            completed_at=now,
            updated_at=now,
            pr_url=result.pr_url,
            pr_number=result.pr_number,
            verification_passed=result.verification_passed,
            commit_sha=result.commit_sha,
            error="",
            error_category="",
            next_retry_at=None,
        )
        locks_release_all(worker_id=worker.pk)
        if moved:
            _after_completion(item=item, result=result)
        m = result.metrics
        WorkerMetrics.objects.update_or_create(
            worker=worker,
            defaults={
                "work_item": item,
                "tokens_in": int(m.get("tokensIn") or worker.tokens_in),
                "tokens_out": int(m.get("tokensOut") or worker.tokens_out),
                "duration_ms": int(m.get("duration") or 0),
                "files_modified": int(m.get("filesModified") or 0),
                "tests_run": int(m.get("testsRun") or 0),
                "tests_passed": int(m.get("testsPassed") or 0),
                "tests_failed": int(m.get("testsFailed") or 0),
                "test_status": str(m.get("testStatus") or "")[:40],
                "learnings": result.learnings,
            },
        )
        if result.review:
            from reviews.models import PRReview

            PRReview.objects.create(
                work_item=item,
                repo=item.repo,
                pr_number=result.pr_number,
                model_used=str(result.review.get("modelUsed") or "")[:100],
                findings=result.review.get("findings") or [],
            )
        event_record(
            work_item=item,
            worker=worker,
            kind="completed",
            from_status=item.status,
            to_status=WorkItemStatus.COMPLETED if moved else item.status,
            actor=f"worker:{worker.pk}",
            data={"prUrl": result.pr_url},
        )
    logger.info("worker %s completed work item %s", worker_id, item.pk)
    return True


def _after_completion(*, item: WorkItem, result: Completion) -> None:
    """A verified change gets a verification item; a verification reports to its parent."""
    if item.type == WorkItemType.EXECUTION and result.verification_enabled:
        child = WorkItem.objects.create(
            repo=item.repo,
            branch=item.branch,
            type=WorkItemType.VERIFICATION,
            priority=item.priority,
            priority_rank=item.priority_rank,
            parent_work_item=item,
            max_iterations=item.max_iterations,
            metadata=item.metadata,
            spec=(
                f"# Verify {item.branch}\n\nCheck that branch `{item.branch}`"
                + (f" (pull request {result.pr_url})" if result.pr_url else "")
                + " implements the spec below and that its tests pass.\n\n"
                + item.spec[:90_000]
            ),
        )
        event_record(
            work_item=child,
            kind="submitted",
            to_status=child.status,
            actor=f"verification-of:{item.pk}",
        )
        from orchestration import tasks

        delay_on_commit(tasks.dispatch)
    elif item.type == WorkItemType.VERIFICATION and item.parent_work_item_id:
        WorkItem.objects.filter(pk=item.parent_work_item_id).update(
            verification_passed=result.verification_passed
        )


def worker_register(*, worker_id: UUID | str, work_item_id: UUID) -> WorkItem:
    """The container says hello. Safe to repeat; a fenced worker is refused."""
    with transaction.atomic():
        item, worker = locked_item_and_worker(worker_id)
        if item.pk != work_item_id:
            raise ValidationFailed(
                "Invalid request", details={"workItemId": "is not this worker's work item"}
            )
        if not worker.is_active:
            raise Fenced(f"Worker is {worker.status}; it is no longer the active attempt")
        now = db_now()
        Worker.objects.filter(pk=worker.pk, status__in=Worker.ACTIVE).update(
            last_heartbeat=now, registered_at=Coalesce("registered_at", Value(now))
        )
    return item


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
) -> bool:
    """End an active attempt with ``to`` and retry (with backoff) or fail its item.

    1. Lock item then worker. A worker already in one of ``repeat_ok`` is a repeat: no-op.
    2. A worker in any other final state is fenced off.
    3. ``unless(worker)`` true under the lock (a sweep's condition no longer holds, e.g. a
       heartbeat just landed): no-op.
    4. Worker → ``to``; its locks are freed.
    5. If the worker is still the item's current attempt: item → ``queued`` with
       ``next_retry_at`` (retry allowed and retries left) or ``failed``.
    """
    with transaction.atomic():
        item, worker = locked_item_and_worker(worker_id)
        if worker.status in repeat_ok:
            return False
        if not worker.is_active:
            raise Fenced(f"Worker is {worker.status}; it is no longer the active attempt")
        if unless is not None and unless(worker):
            return False
        now = db_now()
        Worker.objects.filter(pk=worker.pk, status__in=Worker.ACTIVE).update(
            status=to, completed_at=now, error=error[:100_000], error_category=category[:40]
        )
        locks_release_all(worker_id=worker.pk)
        if item.status in WorkItem.ACTIVE and item.worker_id == worker.pk:
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
                kind=f"attempt_{to}",
                from_status=item.status,
                to_status=item.status,
                actor=actor,
                message=error[:2000],
                data={"category": category},
            )
    logger.info("worker %s ended %s (%s)", worker_id, to, category)
    return True


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
    if category in INFRA_CATEGORIES:
        # Counted since the item was last requeued by hand: an operator's requeue clears it.
        since = (
            WorkItemEvent.objects.filter(work_item_id=item.pk, kind="requeued")
            .order_by("-created_at")
            .values_list("created_at", flat=True)
            .first()
        )
        attempts = Worker.objects.filter(work_item_id=item.pk, error_category__in=INFRA_CATEGORIES)
        if since is not None:
            attempts = attempts.filter(created_at__gt=since)
        crashes = attempts.count()
        if crashes >= settings.QUARANTINE_AFTER:
            # A crash loop: the item keeps killing its attempts for reasons no retry fixes.
            error = (
                f"quarantined after {crashes} infrastructure failures (last: {category}): {error}"
            )
            category, retryable = "QUARANTINED", False
    if retryable and item.retry_count < settings.MAX_RETRIES:
        delays = settings.RETRY_DELAYS or [60]
        delay = delays[min(item.retry_count, len(delays) - 1)]
        next_at = now + dt.timedelta(seconds=delay)
        WorkItem.objects.filter(pk=item.pk, status__in=WorkItem.ACTIVE, worker_id=worker.pk).update(
            status=WorkItemStatus.QUEUED,
            retry_count=F("retry_count") + 1,
            next_retry_at=next_at,
            worker=None,
            error=error[:100_000],
            error_category=category[:40],
            updated_at=now,
        )
        event_record(
            work_item=item,
            worker=worker,
            kind="retry_scheduled",
            from_status=item.status,
            to_status=WorkItemStatus.QUEUED,
            actor=actor,
            message=error[:2000],
            data={
                "category": category,
                "retry": item.retry_count + 1,
                "delaySeconds": delay,
                "nextRetryAt": next_at.isoformat(),
            },
        )
        return
    WorkItem.objects.filter(pk=item.pk, status__in=WorkItem.ACTIVE, worker_id=worker.pk).update(
        status=WorkItemStatus.FAILED,
        completed_at=now,
        updated_at=now,
        next_retry_at=None,
        error=error[:100_000],
        error_category=category[:40],
    )
    event_record(
        work_item=item,
        worker=worker,
        kind="failed",
        from_status=item.status,
        to_status=WorkItemStatus.FAILED,
        actor=actor,
        message=error[:2000],
        data={"category": category, "retries": item.retry_count},
    )


def worker_fail(
    *, worker_id: UUID | str, error: str, category: str = "AGENT_ERROR", actor: str = ""
) -> bool:
    """The attempt failed: retry the item with backoff, or fail it after MAX_RETRIES."""
    return _end_attempt(
        worker_id=worker_id,
        to=WorkerStatus.FAILED,
        error=error or "failed",
        category=category or "AGENT_ERROR",
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
        category="STUCK",
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
    from workers.tasks import stop_worker_container

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
        delay_on_commit(stop_worker_container, str(worker_id))
    return ended


def worker_kill(*, worker_id: UUID | str, reason: str = "", actor: str = "system") -> bool:
    """An operator kills an attempt: its container is stopped and its item fails (requeue it
    to try again). Killing a killed worker is a no-op; killing a finished one is InvalidState.
    """
    from workers.tasks import stop_worker_container

    try:
        killed = _end_attempt(
            worker_id=worker_id,
            to=WorkerStatus.KILLED,
            error=f"killed: {reason}" if reason else "killed",
            category="KILLED",
            actor=actor,
            retry=False,
            repeat_ok=(WorkerStatus.KILLED,),
        )
    except Fenced as exc:
        raise InvalidState(str(exc)) from None
    if killed:
        delay_on_commit(stop_worker_container, str(worker_id))
    return killed
