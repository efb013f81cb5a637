"""What the review bot reads from a pull request: a ``pull_request`` webhook delivery or one
entry of the open pull requests list (the poll). Both are GitHub's pull request object (the
webhook nests it under ``pull_request``), so one form checks both, in the strict fields every
edge shares (``orchestration.forms.fields``): a wrong type is API.md's 400, nothing written.
"""

from __future__ import annotations

from typing import Any

from django.core.validators import RegexValidator

from orchestration.forms.branches import validate_branch
from orchestration.forms.fields import (
    INT4_MAX,
    REPO_VALIDATOR,
    ErrorFirstForm,
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    dig,
)

# A full commit id (SHA-1, or SHA-256 for repositories that use it).
SHA_VALIDATOR = RegexValidator(
    r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$", "must be a full hex commit id", code="pattern"
)
TITLE_MAX = 1_000
BODY_MAX = 65_536  # GitHub's own limit on a pull request body


class PullClosedForm(ErrorFirstForm):
    """Enough of a pull request to find its review jobs (a ``closed`` delivery)."""

    repo = StrictCharField(max_length=200, validators=[REPO_VALIDATOR])
    number = StrictIntegerField(min_value=1, max_value=INT4_MAX)


class PullForm(PullClosedForm):
    """A pull request to review: its head (what is reviewed) and base (what it is diffed
    against), who opened it and what it says."""

    title = StrictCharField(required=False, max_length=TITLE_MAX)
    body = StrictCharField(required=False, max_length=BODY_MAX, strip=False)
    draft = StrictBooleanField(required=False)
    headRef = StrictCharField(max_length=250, validators=[validate_branch])
    headSha = StrictCharField(max_length=64, validators=[SHA_VALIDATOR])
    headRepo = StrictCharField(required=False, max_length=200, validators=[REPO_VALIDATOR])
    baseRef = StrictCharField(max_length=250, validators=[validate_branch])
    baseSha = StrictCharField(required=False, max_length=64, validators=[SHA_VALIDATOR])
    author = StrictCharField(required=False, max_length=100)
    # synchronize: the head before this push (a late delivery of it is not the newest).
    before = StrictCharField(required=False, max_length=64, validators=[SHA_VALIDATOR])

    def clean_author(self) -> str:
        return self.cleaned_data.get("author") or "ghost"  # GitHub's name for the deleted


def prose(value: Any) -> Any:
    """A title or body as text to store: a NUL or a lone surrogate (which no database takes)
    dropped rather than the whole pull request refused; other types left to the form."""
    if not isinstance(value, str):
        return value
    return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def pull_fields(pull: Any, *, repo: Any, before: Any = None) -> dict[str, Any]:
    """PullForm's fields picked out of GitHub's pull request object (missing → None)."""
    return {
        "repo": repo,
        "number": dig(pull, "number"),
        "title": prose(dig(pull, "title")),
        "body": prose(dig(pull, "body")),
        "draft": dig(pull, "draft"),
        "headRef": dig(pull, "head", "ref"),
        "headSha": dig(pull, "head", "sha"),
        "headRepo": dig(pull, "head", "repo", "full_name"),
        "baseRef": dig(pull, "base", "ref"),
        "baseSha": dig(pull, "base", "sha"),
        "author": dig(pull, "user", "login"),
        "before": before,
    }


def delivery_fields(payload: dict[str, Any]) -> dict[str, Any]:
    """PullForm's fields of a ``pull_request`` webhook delivery."""
    return pull_fields(
        payload.get("pull_request"),
        repo=dig(payload, "repository", "full_name"),
        before=payload.get("before") if payload.get("action") == "synchronize" else None,
    )
