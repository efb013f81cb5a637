"""The review bot's side of a review job ending (README "Review bot"): told by the
``item_moved`` hook (``orchestration.registry``), inside the transaction that moved the item,
it writes the outbox rows that report the job on GitHub — never a call itself.

- Completed: the review the attempt sent (stored as a PRReview by the completion) becomes a
  ``review_post`` row (summary, scores, line comments where ``diffLines`` has the line) and a
  ``check_run`` row (success / action_required / neutral from the scores). No review in the
  completion: a neutral check run saying so.
- Failed (no retry left): a neutral check run saying the review could not be done; the error
  itself stays on the item page (it is the orchestrator's to show, not the PR's).
- Cancelled (superseded, closed): nothing — a newer job reports, or nobody is waiting.
- REVIEW_FIX_ROUNDS > 0 and the findings say needs-work or misaligned on a pull request a Whim
  execution item opened: a fix-up execution item on that branch (``fixup.py``).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from intake.credentials import app_configured
from intake.outbox import github_action_enqueue
from orchestration.models import WorkItem, WorkItemEvent, WorkItemStatus, WorkItemType
from reviews import posting
from reviews.fixup import review_fix_queue
from reviews.models import PRReview


def review_item_moved(event: WorkItemEvent) -> None:
    """The ``item_moved`` hook: a review job that ended is reported on GitHub."""
    if event.to_status not in (WorkItemStatus.COMPLETED, WorkItemStatus.FAILED):
        return
    item = WorkItem.objects.filter(pk=event.work_item_id, type=WorkItemType.REVIEW).first()
    if item is None or item.pr_number is None:
        return
    if event.to_status == WorkItemStatus.FAILED:
        _check_enqueue(
            item,
            event,
            conclusion="neutral",
            title="Whim could not review this pull request",
            summary=(
                f"The review of {item.commit_sha[:12]} failed"
                f" ({item.error_category or 'error'}) after {item.retry_count + 1} attempt(s)."
            ),
        )
        return
    review = PRReview.objects.filter(work_item=item).order_by("-created_at").first()
    findings = review.findings if review is not None else None
    if not isinstance(findings, dict) or "codeQuality" not in findings:
        _check_enqueue(
            item,
            event,
            conclusion="neutral",
            title="Whim's review produced no findings",
            summary=f"The review of {item.commit_sha[:12]} ended without findings.",
        )
        return
    diff_lines = (item.metadata or {}).get("diffLines") or {}
    comments, unplaced = posting.line_comments(findings, diff_lines)
    github_action_enqueue(
        key=f"review:{item.pk}:{_attempt(event)}",
        kind=posting.REVIEW_POST,
        repo=item.repo,
        number=item.pr_number,
        payload={
            "commit_id": item.commit_sha,
            "body": posting.review_body(findings, unplaced=unplaced, sha=item.commit_sha),
            "comments": comments,
        },
        work_item=item,
    )
    spec, quality = findings["specAlignment"]["score"], findings["codeQuality"]["score"]
    _check_enqueue(
        item,
        event,
        conclusion=posting.check_conclusion(findings),
        title=f"Spec alignment: {spec}; code quality: {quality}",
        summary=posting.safe_line(findings["overallSummary"])[:60_000],
    )
    if settings.REVIEW_FIX_ROUNDS > 0 and posting.check_conclusion(findings) == "action_required":
        review_fix_queue(review_item=item, findings=findings)


def _attempt(event: WorkItemEvent) -> str:
    """What keys a job's outbox rows: its ending attempt, so a requeued job that ends again
    reports again (and a repeat of one ending does not)."""
    return str(event.worker_id or f"event-{event.pk}")


def _check_enqueue(
    item: WorkItem, event: WorkItemEvent, *, conclusion: str, title: str, summary: str
) -> None:
    """A check run, with a GitHub App only: GitHub's Checks API refuses any other token."""
    if not app_configured():
        return
    fields: dict[str, Any] = {
        "name": settings.REVIEW_CHECK_NAME,
        "head_sha": item.commit_sha,
        "status": "completed",
        "conclusion": conclusion,
        "output": {"title": title[:200], "summary": summary},
    }
    if settings.WHIM_PUBLIC_URL:
        fields["details_url"] = f"{settings.WHIM_PUBLIC_URL.rstrip('/')}/work/{item.pk}/"
    github_action_enqueue(
        key=f"check:{item.pk}:{_attempt(event)}",
        kind=posting.CHECK_RUN,
        repo=item.repo,
        number=item.pr_number,
        payload=fields,
        work_item=item,
    )
