"""POST /webhooks/github (API.md "GitHub webhook"): signed, recorded, applied once."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from orchestration.api.base import BadBody, json_object, request_body
from orchestration.api.responses import error_response, whim_error_response
from orchestration.errors import WhimError
from orchestration.validation import GitHubDeliveryForm, GitHubReviewForm
from reviews.services import github_delivery_receive, github_signature_valid


@csrf_exempt
def github_webhook(request: HttpRequest) -> HttpResponse:
    """1. POST only; the body is read once (over MAX_REQUEST_BYTES: 413).
    2. The signature over the raw body, before anything else is looked at: bad, missing or
       no secret configured → 401 and nothing stored.
    3. Headers and the fields Whim reads validated with the shared forms → 400, nothing stored.
    4. Recorded and applied once (a delivery id seen before: 200, ``outcome: duplicate``).
    """
    if request.method != "POST":
        resp = error_response(405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed here")
        resp["Allow"] = "POST"
        return resp
    try:
        raw = request_body(request)
    except BadBody as exc:
        return error_response(exc.status, exc.code, exc.message)
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
    try:
        headers = GitHubDeliveryForm(
            {
                "delivery": request.headers.get("X-GitHub-Delivery"),
                "event": request.headers.get("X-GitHub-Event"),
            }
        ).validated()
        # GitHub sends JSON, or a form with the JSON in ``payload`` when so configured.
        if request.content_type == "application/x-www-form-urlencoded":
            payload = json_object(request.POST.get("payload", ""))
        else:
            payload = json_object(raw)
        action = payload.get("action")
        action = action if isinstance(action, str) else ""
        review = None
        if headers["event"] == "pull_request_review" and action == "submitted":
            fields = GitHubReviewForm.review_fields(payload)
            review = GitHubReviewForm(fields).validated()
        delivery, new = github_delivery_receive(
            delivery_id=headers["delivery"], event=headers["event"], action=action, review=review
        )
    except BadBody as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details)
    except WhimError as exc:
        return whim_error_response(exc)
    return JsonResponse(
        {
            "success": True,
            "delivery": delivery.delivery_id,
            "outcome": delivery.outcome if new else "duplicate",
            **({"note": delivery.note} if new and delivery.note else {}),
        }
    )
