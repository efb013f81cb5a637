"""An attempt that finished: the item completed with its result, metrics, review and any
verification item. A repeat is a no-op; a fenced worker is refused.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Any
from uuid import UUID

from django.db import transaction

from orchestration.choices import EventKind
from orchestration.clock import db_now
from orchestration.errors import Fenced, ValidationFailed
from orchestration.models import (
    AttemptKind,
    Worker,
    WorkerStatus,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
    WorkItemType,
)
from orchestration.rows import row_get
from orchestration.services.commits import CommitVerdict, commit_verify
from orchestration.services.events import event_record
from orchestration.services.learnings import learnings_record
from orchestration.services.locks import locks_release_all
from orchestration.services.verification import verification_item_create, verification_report
from orchestration.services.workers.lifecycle import locked_settled
from orchestration.services.workers.spec_attempts import spec_attempt_complete
from orchestration.services.workers.spend import attempt_charge, attempt_metrics_record
from reviews.services import review_record_self

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Completion:
    pr_url: str = ""
    pr_number: int | None = None
    verification_passed: bool | None = None
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    learnings: list[dict[str, str]] = dataclasses.field(default_factory=list)
    review: dict[str, Any] | None = None
    verification_enabled: bool = False
    commit_sha: str = ""
    model: str = ""  # the model the attempt used ("" when unknown)
    warning: str = ""  # a partial success, kept on the item's timeline
    spec: str | None = None  # what a ``spec`` attempt wrote (None: not reported)
    # A review job: the pull request diff's new-side lines, {path: [[start, end], ...]}.
    diff_lines: dict[str, list[list[int]]] | None = None


def worker_complete(*, worker_id: UUID | str, result: Completion) -> bool:
    """The attempt finished: item ``completed`` with its result, locks freed. A ``spec``
    attempt's report goes to ``spec_attempt_complete`` instead.

    Returns False for a repeat (already completed). Raises Fenced if the worker ended otherwise.
    The reported commit must be on the item's branch (``commit_verify``, asked before any row
    is locked: it may run git or call GitHub); refused, the refusal is an event on the item
    and ValidationFailed is raised with nothing else written.
    """
    worker = row_get(Worker, worker_id, "Worker")
    if worker.kind == AttemptKind.SPEC or result.spec is not None:
        # It wrote a spec and pushed nothing: no commit to check (a work attempt reporting
        # a spec is refused there).
        return spec_attempt_complete(
            worker_id=worker_id, spec=result.spec, metrics=result.metrics, model=result.model
        )
    verdict = _commit_verdict(worker_id=worker_id, result=result)
    if verdict is None:
        return False
    with transaction.atomic():
        item, worker = locked_settled(worker_id)
        if worker.status == WorkerStatus.COMPLETED:
            return False
        if not worker.is_active:
            raise Fenced(f"Worker is {worker.status}; it can no longer complete")
        now = db_now()
        attempt_charge(
            item=item, worker=worker, metrics=result.metrics, model=result.model, now=now
        )
        Worker.objects.filter(pk=worker.pk, status__in=Worker.ACTIVE).update(
            status=WorkerStatus.COMPLETED, completed_at=now
        )
        fields: dict[str, Any] = {
            "pr_url": result.pr_url,
            "pr_number": result.pr_number,
            "commit_sha": result.commit_sha,
        }
        if item.type in (WorkItemType.VERIFICATION, WorkItemType.REVIEW):
            # A verification reviews its parent's pull request, a review job the pull request
            # it was made for: each keeps that PR (and the commit it was created for).
            fields = {k: v for k, v in fields.items() if v}
        if item.type == WorkItemType.REVIEW:
            # Where the review's line comments may go (reviews.posting reads it).
            fields["metadata"] = {**item.metadata, "diffLines": result.diff_lines or {}}
        moved = WorkItem.objects.filter(
            pk=item.pk, status__in=WorkItem.ACTIVE, worker_id=worker.pk
        ).update(
            status=WorkItemStatus.COMPLETED,
            completed_at=now,
            updated_at=now,
            verification_passed=result.verification_passed,
            error="",
            error_category="",
            next_retry_at=None,
            **fields,
        )
        locks_release_all(worker_id=worker.pk)
        if moved:
            _after_completion(item=item, result=result, now=now)
        attempt_metrics_record(item=item, worker=worker, metrics=result.metrics)
        learnings_record(work_item=item, learnings=result.learnings)
        if result.warning:
            event_record(
                work_item=item,
                worker=worker,
                kind=EventKind.WARNING,
                from_status=item.status,
                to_status=item.status,
                actor=f"worker:{worker.pk}",
                message=result.warning,
            )
        if result.review:
            review_record_self(
                work_item=item, pr_number=result.pr_number or item.pr_number, review=result.review
            )
        event_record(
            work_item=item,
            worker=worker,
            kind=EventKind.COMPLETED,
            from_status=item.status,
            to_status=WorkItemStatus.COMPLETED if moved else item.status,
            actor=f"worker:{worker.pk}",
            message=verdict.note,
            data={
                "prUrl": result.pr_url,
                "commitSha": result.commit_sha,
                "commitCheckedBy": verdict.checked_by,
            },
        )
    logger.info("worker %s completed work item %s", worker_id, item.pk)
    return True


# Refusals recorded per attempt at most: a worker that keeps sending forged completions must
# not grow the item's timeline without bound (each is still refused).
REFUSALS_RECORDED_MAX = 10


def _commit_verdict(*, worker_id: UUID | str, result: Completion) -> CommitVerdict | None:
    """The verdict on the reported commit, outside any transaction; None for a repeat of a
    completion that already happened. Raises Fenced, NotFound, ValidationFailed (refused) or
    Unavailable (the check cannot answer now)."""
    worker = row_get(Worker, worker_id, "Worker")
    if worker.status == WorkerStatus.COMPLETED:
        return None
    if not worker.is_active:
        raise Fenced(f"Worker is {worker.status}; it can no longer complete")
    item = worker.work_item
    if item.type == WorkItemType.VERIFICATION and not result.commit_sha:
        # A verifier checks out the branch and reports a verdict; it pushes nothing.
        return CommitVerdict(ok=True, note="verification: no commit to check")
    if item.type == WorkItemType.REVIEW:
        # A review job pushes nothing: it reviewed the pull request's head, which it was made
        # for (the reviewer cannot pick another commit to pass judgement on).
        verdict = _review_verdict(item, result.commit_sha)
    else:
        verdict = commit_verify(repo=item.repo, branch=item.branch, sha=result.commit_sha)
    if verdict.ok:
        return verdict
    refused = WorkItemEvent.objects.filter(worker=worker, kind=EventKind.COMMIT_REFUSED)
    if refused.count() < REFUSALS_RECORDED_MAX:
        event_record(
            work_item=item,
            worker=worker,
            kind=EventKind.COMMIT_REFUSED,
            actor=f"worker:{worker.pk}",
            message=verdict.note,
            data={
                "commitSha": result.commit_sha,
                "branch": item.branch,
                "checkedBy": verdict.checked_by,
            },
        )
    logger.warning("worker %s: completion refused: %s", worker.pk, verdict.note)
    raise ValidationFailed(
        "The reported commit is not on the pushed branch; the item was not completed",
        details={"commitSha": verdict.note},
    )


def _review_verdict(item: WorkItem, sha: str) -> CommitVerdict:
    if not sha or sha == item.commit_sha:
        return CommitVerdict(ok=True, checked_by="review", note="review: the pull request's head")
    return CommitVerdict(
        ok=False,
        checked_by="review",
        note=f"commitSha {sha[:64]!r} is not the head {item.commit_sha} this review is for",
    )


def _after_completion(*, item: WorkItem, result: Completion, now: dt.datetime) -> None:
    """A change asked to be verified gets a verification item; a verification reports its
    verdict to the item it verifies."""
    if item.type == WorkItemType.EXECUTION and result.verification_enabled:
        verification_item_create(
            parent=item,
            pr_number=result.pr_number,
            pr_url=result.pr_url,
            commit_sha=result.commit_sha,
        )
    elif item.type == WorkItemType.VERIFICATION and item.parent_work_item_id:
        verification_report(item=item, passed=result.verification_passed, now=now)
