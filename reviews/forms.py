"""Forms for the GitHub webhook (POST /webhooks/github, API.md "GitHub webhook").

A delivery's headers and ``action`` (``GitHubDeliveryForm``), and what Whim reads from a
``pull_request_review`` delivery (``GitHubReviewForm``). Built on the strict fields shared by
every edge (``orchestration.forms.fields``), so the webhook words its mistakes like the API.
"""

from __future__ import annotations

from typing import Any

from django.core.validators import RegexValidator

from orchestration.forms.fields import (
    HTTP_URL_VALIDATOR,
    INT4_MAX,
    REPO_VALIDATOR,
    ErrorFirstForm,
    StrictCharField,
    StrictIntegerField,
    dig,
)


class GitHubDeliveryForm(ErrorFirstForm):
    """A GitHub webhook delivery (POST /webhooks/github): its headers and ``action``."""

    delivery = StrictCharField(
        max_length=100,
        validators=[RegexValidator(r"^[A-Za-z0-9-]+$", "must be a delivery id", code="pattern")],
    )
    event = StrictCharField(
        max_length=50,
        validators=[RegexValidator(r"^[a-z_]+$", "must be a GitHub event name", code="pattern")],
    )
    action = StrictCharField(required=False, max_length=50)


class GitHubReviewForm(ErrorFirstForm):
    """What Whim reads from a ``pull_request_review`` delivery (see ``review_fields``)."""

    repo = StrictCharField(max_length=200, validators=[REPO_VALIDATOR])
    prNumber = StrictIntegerField(min_value=1, max_value=INT4_MAX)
    reviewer = StrictCharField(required=False, max_length=100)  # a deleted account: null
    state = StrictCharField(max_length=50)
    body = StrictCharField(required=False, max_length=65_536, strip=False)  # GitHub's limit
    url = StrictCharField(required=False, max_length=500, validators=[HTTP_URL_VALIDATOR])

    def clean_reviewer(self) -> str:
        return self.cleaned_data.get("reviewer") or "ghost"  # GitHub's name for the deleted

    @staticmethod
    def review_fields(payload: dict[str, Any]) -> dict[str, Any]:
        """The form's fields picked out of GitHub's nested payload (missing → None)."""

        return {
            "repo": dig(payload, "repository", "full_name"),
            "prNumber": dig(payload, "pull_request", "number"),
            "reviewer": dig(payload, "review", "user", "login"),
            "state": dig(payload, "review", "state"),
            "body": dig(payload, "review", "body"),
            "url": dig(payload, "review", "html_url"),
        }
