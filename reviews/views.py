"""POST /webhooks/github (API.md "GitHub webhook"): signed, recorded, applied once."""

from __future__ import annotations

from functools import partial
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from intake import pull_forms
from intake.issue_events import issue_event_prepare
from intake.pulls import pull_event_receive
from orchestration.api.base import json_answer, json_object, method_refused, request_body
from orchestration.api.responses import error_response
from reviews.forms import GitHubDeliveryForm, GitHubReviewForm
from reviews.models import WebhookDelivery
from reviews.services import github_delivery_receive, github_signature_valid


@csrf_exempt
def github_webhook(request: HttpRequest) -> HttpResponse:
    """1. POST only; the body is read once (over MAX_REQUEST_BYTES: 413).
    2. The signature over the raw body, before anything else is looked at: bad, missing or
       no secret configured → 401 and nothing stored.
    3. Headers and the fields Whim reads validated with the shared forms → 400, nothing stored.
    4. Recorded and applied once (a delivery id seen before: 200, ``outcome: duplicate``).
    """
    if refused := method_refused(request, ("POST",)):
        return refused
    return json_answer(lambda: _receive(request))


def _receive(request: HttpRequest) -> HttpResponse | dict[str, Any]:
    raw = request_body(request)
    secret = settings.GITHUB_WEBHOOK_SECRET
    if not secret:
        return error_response(
            401, "UNAUTHORIZED", "The GitHub webhook is not configured (GITHUB_WEBHOOK_SECRET)"
        )
    signature = request.headers.get("X-Hub-Signature-256", "")
    if not github_signature_valid(secret=secret, body=raw, signature=signature):
        return error_response(
            401, "UNAUTHORIZED", "The X-Hub-Signature-256 signature is missing or does not match"
        )
    # GitHub sends JSON, or a form with the JSON in ``payload`` when so configured. Only the
    # fields the forms below pick are kept, so a NUL elsewhere (a PR body) does no harm.
    if request.content_type == "application/x-www-form-urlencoded":
        payload = json_object(request.POST.get("payload", ""), refuse_nul=False)
    else:
        payload = json_object(raw, refuse_nul=False)
    delivery = GitHubDeliveryForm.from_json(
        {
            "delivery": request.headers.get("X-GitHub-Delivery"),
            "event": request.headers.get("X-GitHub-Event"),
            "action": payload.get("action"),
        }
    ).validated()
    review = None
    if (delivery["event"], delivery["action"]) == ("pull_request_review", "submitted"):
        review = GitHubReviewForm.from_json(GitHubReviewForm.review_fields(payload)).validated()
    receiver, where = None, {}
    if delivery["event"] == "pull_request":
        action = delivery["action"]
        receiver = partial(pull_event_receive, action=action, payload=payload)
        where = _where(pull_forms.delivery_fields(payload))
    elif delivery["event"] == "issues":  # GitHub is asked here, before the transaction
        replayed = WebhookDelivery.objects.filter(delivery_id=delivery["delivery"]).exists()
        receiver = issue_event_prepare(
            action=delivery["action"], payload=payload, ask_github=not replayed
        )
    row, new = github_delivery_receive(
        delivery_id=delivery["delivery"],
        event=delivery["event"],
        action=delivery["action"],
        review=review,
        receiver=receiver,
        **where,
    )
    return {
        "success": True,
        "delivery": row.delivery_id,
        "outcome": row.outcome if new else "duplicate",
        **({"note": row.note} if new and row.note else {}),
    }


def _where(fields: dict[str, Any]) -> dict[str, Any]:
    """The repository and pull request a delivery names, for its row (when well formed:
    the receiver refuses it otherwise)."""
    repo, number = fields.get("repo"), fields.get("number")
    return {
        "repo": repo if isinstance(repo, str) else "",
        "pr_number": number if isinstance(number, int) and 0 < number < 2**31 else None,
    }
