"""Pull requests in, review jobs out: the review bot's intake (README "Review bot").

Two ways in, one outcome: the ``pull_request`` webhook (``pull_event_receive``) and the poll of
each watched repository's open pull requests (``pulls_poll``, conditional on its ETag) both call
``review_job_ensure``, which makes one work item of type ``review`` per (repository, pull
request, head sha):

1. Under the submit lock (``whim.submit``, as every item is created), an item with the key
   ``github-review:{repo}#{n}@{sha}`` already there: nothing new (a redelivery, or a poll after
   the webhook). A head an unfinished job's push replaced (``before``) is stale: ignored.
2. The queue bounds apply (MAX_QUEUED, MAX_QUEUED_PER_REPO): full, nothing is written and the
   next poll tries again.
3. The item is created ``queued`` (its "spec" is the PR's title and body: what the reviewer
   judges the change against), and the pull request's unfinished review jobs for another sha
   are cancelled, "superseded by <sha>" — in the same transaction. Dispatch is nudged.

Only watched repositories with ``review_enabled`` are reviewed, and only while REVIEW_BOT is on;
drafts wait for ``ready_for_review`` unless REVIEW_DRAFTS. A ``closed`` pull request cancels its
unfinished jobs.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.db import transaction

from intake.github import GitHubClient, GitHubError, RateLimited
from intake.models import Repository
from intake.pull_forms import PullClosedForm, PullForm, delivery_fields, pull_fields
from orchestration.clock import advisory_xact_lock, db_now
from orchestration.errors import QueueFull
from orchestration.models import WorkItem, WorkItemStatus, WorkItemType
from orchestration.services.work_items import (
    work_item_cancel,
    work_item_requeue,
    work_item_submit,
)

logger = logging.getLogger(__name__)

REVIEWED_ACTIONS = ("opened", "synchronize", "reopened", "ready_for_review")
OPEN_PULLS_PAGE = 100  # pulls_open asks for one page of this many
CLOSED = "pull request closed"
GONE = "pull request no longer open"
CLOSED_REASONS = (CLOSED, GONE)
RATE_LIMIT_FALLBACK = dt.timedelta(minutes=1)  # GitHub said "limited" without saying until when


def review_repository(name: str) -> Repository | None:
    """The watched repository ``name`` when its pull requests are to be reviewed, else None.
    An INTAKE_REPOS entry gets its row on first use."""
    if not settings.REVIEW_BOT:
        return None
    row = Repository.named(name)
    if row is None or not row.enabled or not row.review_enabled:
        return None
    return row


def pull_event_receive(*, action: str, payload: dict[str, Any]) -> tuple[str, str]:
    """A ``pull_request`` webhook delivery: (outcome, note). Wrong field types raise
    ValidationFailed (400) before anything is written."""
    if action == "closed":
        closed = PullClosedForm.from_json(
            {"repo": delivery_fields(payload)["repo"], "number": payload.get("number")}
        ).validated()
        cancelled = reviews_cancel(repo=closed["repo"], number=closed["number"], reason=CLOSED)
        if not cancelled:
            return "ignored", "no unfinished review of this pull request"
        return "item_cancelled", f"{cancelled} unfinished review(s) cancelled"
    if action not in REVIEWED_ACTIONS:
        return "ignored", f"the review bot does not act on pull_request {action}"[:200]
    pull = PullForm.from_json(delivery_fields(payload)).validated()
    if action == "opened" and _pull_reviews(pull["repo"], pull["number"]).exists():
        # A pull request is opened once, before any push to it: a job there already came from
        # a later event (or the poll), so this delivery is late and its head stale.
        return "ignored", "a late opened delivery: the pull request has a review job already"
    return review_job_ensure(pull)


def review_job_ensure(pull: dict[str, Any], *, head: bool = False) -> tuple[str, str]:
    """One review job for ``pull`` (PullForm's cleaned fields) at its head: (outcome, note).

    ``head``: the sha is the pull request's head as GitHub lists it now (the poll), so it wins
    over whatever a late webhook delivery said: a job a late delivery superseded is requeued.
    """
    repo = review_repository(pull["repo"])
    if repo is None:
        return "ignored", f"{pull['repo']} is not a repository the review bot watches"[:200]
    if pull["draft"] and not settings.REVIEW_DRAFTS:
        return "ignored", "a draft pull request (REVIEW_DRAFTS is off)"
    name, number, sha = pull["repo"], pull["number"], pull["headSha"]
    key = f"github-review:{name}#{number}@{sha}"
    with transaction.atomic():
        advisory_xact_lock("whim.submit")
        existing = WorkItem.objects.filter(idempotency_key=key).first()
        jobs = _pull_jobs(name, number)
        if existing is not None:
            cancelled = existing.status == WorkItemStatus.CANCELLED
            # Reopened at the same head: the job its closing cancelled runs after all; so does
            # one a late delivery superseded, once the poll says this is the head.
            if cancelled and (
                existing.error in CLOSED_REASONS
                or (head and existing.error.startswith("superseded by "))
            ):
                work_item_requeue(work_item_id=existing.pk, actor="github", reason="the head")
                _supersede(jobs, sha)
                return "review_queued", f"review {existing.pk} of {sha[:12]} requeued"
            return "item_exists", f"review {existing.pk} of {sha[:12]} exists"
        if not head and _pull_reviews(name, number).filter(metadata__before=sha).exists():
            return "ignored", f"{sha[:12]} is no longer the head of #{number}"
        try:
            item, _ = work_item_submit(
                type=WorkItemType.REVIEW,
                repo=name,
                branch=pull["headRef"],
                pr_number=number,
                commit_sha=sha,
                spec=_pull_text(pull),
                description=_pull_text(pull),
                priority=repo.intake_priority,
                max_iterations=1,
                source="github",
                source_ref=f"pr:{number}@{sha}",
                idempotency_key=key,
                metadata={
                    "headSha": sha,
                    "baseRef": pull["baseRef"],
                    "baseSha": pull["baseSha"],
                    "headRepo": pull["headRepo"] or name,
                    "author": pull["author"],
                    **({"before": pull["before"]} if pull["before"] else {}),
                },
                actor="github",
                message=f"review of #{number} at {sha[:12]}",
            )
        except QueueFull as exc:
            return "queue_full", str(exc)[:200]
        superseded = _supersede(jobs, sha)
    logger.info("review %s queued for %s#%s at %s", item.pk, name, number, sha[:12])
    if superseded:
        return "superseded", f"review {item.pk} queued; {superseded} older review(s) cancelled"
    return "review_queued", f"review {item.pk} queued"


def _supersede(jobs: Any, sha: str) -> int:
    """Cancel the unfinished jobs for another head than ``sha``; how many this call cancelled."""
    return sum(
        work_item_cancel(work_item_id=old, actor="github", reason=f"superseded by {sha}")
        for old in jobs.exclude(commit_sha=sha).values_list("pk", flat=True)
    )


def _pull_reviews(repo: str, number: int) -> Any:
    """Every review job of the pull request."""
    return WorkItem.objects.filter(type=WorkItemType.REVIEW, repo__iexact=repo, pr_number=number)


def _pull_jobs(repo: str, number: int) -> Any:
    """The pull request's unfinished review jobs."""
    return _pull_reviews(repo, number).filter(status__in=WorkItem.UNFINISHED)


def _pull_text(pull: dict[str, Any]) -> str:
    """The PR's title and body: what the change says it does, which the reviewer checks."""
    title = (pull["title"] or f"Pull request #{pull['number']}").strip()
    return f"# {title}\n\n{pull['body'] or ''}".rstrip() + "\n"


def reviews_cancel(*, repo: str, number: int, reason: str) -> int:
    """Cancel the pull request's unfinished review jobs; how many this call cancelled."""
    cancelled = 0
    for item_id in list(_pull_jobs(repo, number).values_list("pk", flat=True)):
        cancelled += work_item_cancel(work_item_id=item_id, actor="github", reason=reason)
    return cancelled


def pulls_poll(*, repo: str) -> dict[str, int]:
    """Poll one watched repository's open pull requests (what webhooks missed).

    Skipped while GitHub's rate limit holds (``Repository.rate_limited_until``); conditional
    on the last ETag (304: nothing changed); a rate limit met is stored and shown. Each open
    pull request gets ``review_job_ensure``; when the whole list fitted on one page, the
    unfinished jobs of pull requests no longer open are cancelled.
    """
    row = review_repository(repo)
    counts = {"seen": 0, "queued": 0, "cancelled": 0, "invalid": 0}
    if row is None:
        return counts
    now = db_now()
    if row.rate_limited_until is not None and row.rate_limited_until > now:
        return counts
    try:
        answer = GitHubClient(row.name).pulls_open(etag=row.pulls_etag)
    except RateLimited as exc:
        row.rate_limited_until = exc.retry_at or now + RATE_LIMIT_FALLBACK
        row.poll_note = f"pull requests: rate limited until {exc.retry_at}"[:300]
        row.save(update_fields=["rate_limited_until", "poll_note", "updated_at"])
        return counts
    except GitHubError as exc:
        row.poll_note = f"pull requests: {exc.message}"[:300]
        row.save(update_fields=["poll_note", "updated_at"])
        return counts
    if answer.status == 304 or not isinstance(answer.data, list):
        Repository.objects.filter(pk=row.pk).update(polled_at=now)
        return counts
    open_numbers, settled = set(), True
    for entry in answer.data:
        form = PullForm.from_json(pull_fields(entry, repo=row.name))
        counts["seen"] += 1
        if not form.is_valid():
            counts["invalid"] += 1
            continue
        open_numbers.add(form.cleaned_data["number"])
        outcome, _ = review_job_ensure(form.cleaned_data, head=True)
        counts["queued"] += outcome in ("review_queued", "superseded")
        settled = settled and outcome != "queue_full"
    if len(answer.data) < OPEN_PULLS_PAGE:
        gone = (
            WorkItem.objects.filter(
                type=WorkItemType.REVIEW, repo__iexact=row.name, status__in=WorkItem.UNFINISHED
            )
            .exclude(pr_number__in=open_numbers)
            .values_list("pr_number", flat=True)
        )
        for number in {n for n in gone if n is not None}:
            counts["cancelled"] += reviews_cancel(repo=row.name, number=number, reason=GONE)
    # A pull request the full queue turned away is asked for again: the list must not 304.
    Repository.objects.filter(pk=row.pk).update(
        pulls_etag=answer.etag[:200] if settled else "", polled_at=now, rate_limited_until=None
    )
    return counts
