"""PR reviews: an attempt's own review stored on completion, and GitHub review deliveries
turned into PR reviews, each delivery applied once."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from django.db import IntegrityError, transaction

from orchestration.choices import EventKind
from orchestration.models import WorkItem, WorkItemType
from orchestration.services.events import event_record
from reviews.findings import github_review_findings
from reviews.models import PRReview, WebhookDelivery


def review_record_self(
    *, work_item: WorkItem, pr_number: int | None, review: dict[str, Any]
) -> PRReview:
    """Store the review an attempt ran of its own change (sent with ``complete``)."""
    return PRReview.objects.create(
        work_item=work_item,
        repo=work_item.repo,
        pr_number=pr_number,
        model_used=str(review.get("modelUsed") or "")[:100],
        findings=review.get("findings") or [],
    )


def github_signature_valid(*, secret: str, body: bytes, signature: str) -> bool:
    """``X-Hub-Signature-256`` is ``sha256=`` + HMAC-SHA256(secret, raw body), compared in
    constant time. No secret configured: nothing is valid."""
    if not secret or not signature.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature[7:].strip().encode())


# An event's receiver (intake's): validates what it reads (ValidationFailed: 400, nothing
# written) and acts, inside the delivery's transaction; returns (outcome, note).
Receiver = Callable[[], tuple[str, str]]


def github_delivery_receive(
    *,
    delivery_id: str,
    event: str,
    action: str,
    review: dict[str, Any] | None,
    receiver: Receiver | None = None,
    repo: str = "",
    pr_number: int | None = None,
) -> tuple[WebhookDelivery, bool]:
    """Record one delivery and apply it; returns the delivery row and whether it was new.

    1. The delivery row is inserted first, in the same transaction as its effect: a
       redelivery (or the same delivery twice at once) hits the unique id and changes nothing.
    2. A submitted review (``review``: GitHubReviewForm's cleaned fields) of a pull request a
       work item opened is stored as a PRReview and noted on the item's timeline; an event
       with a ``receiver`` (intake's, for ``issues`` and ``pull_request``) is handed to it, in
       the same transaction (a refusal raised there leaves nothing behind). Anything else is
       recorded as ignored, with why.
    """
    try:
        with transaction.atomic():
            delivery = WebhookDelivery.objects.create(
                delivery_id=delivery_id, event=event, action=action[:50], outcome="ignored"
            )
            if review is not None:
                _review_store(delivery, review)
            elif receiver is not None:
                outcome, note = receiver()
                delivery.outcome, delivery.note = outcome[:20], note[:200]
                delivery.repo, delivery.pr_number = repo[:200], pr_number
            else:
                delivery.note = f"Whim does not act on {event} deliveries"[:200]
            delivery.save(update_fields=["outcome", "note", "repo", "pr_number"])
    except IntegrityError:
        seen = WebhookDelivery.objects.filter(delivery_id=delivery_id).first()
        if seen is None:  # another constraint failed: not a redelivery
            raise
        return seen, False
    return delivery, True


def _review_store(delivery: WebhookDelivery, review: dict[str, Any]) -> None:
    delivery.repo, delivery.pr_number = review["repo"], review["prNumber"]
    # The execution item that opened it (its verification item reports the same PR).
    item = (
        WorkItem.objects.filter(
            pr_number=review["prNumber"],
            repo__iexact=review["repo"],
            type=WorkItemType.EXECUTION,
        )
        .order_by("-created_at")
        .first()
    )
    if item is None:
        delivery.note = "no work item opened this pull request"
        return
    PRReview.objects.create(
        work_item=item,
        repo=item.repo,
        pr_number=review["prNumber"],
        model_used=f"github:{review['reviewer']}"[:100],
        findings=github_review_findings(
            state=review["state"],
            body=review["body"],
            url=review["url"],
            reviewer=review["reviewer"],
        ),
    )
    event_record(
        work_item=item,
        kind=EventKind.GITHUB_REVIEW,
        actor=f"github:{review['reviewer']}",
        message=f"pull request review: {review['state'].lower()}",
        data={"delivery": delivery.delivery_id},
    )
    delivery.outcome = "review_stored"
