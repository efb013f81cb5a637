"""Forms for what Whim reads from GitHub about an issue: an ``issues`` webhook delivery
(``IssueEventForm``) and one issue of a poll's list (``IssueForm``); and, read the same
careful way, who last labelled an issue and when (``labelling``), and who closed it.

Built on the strict fields every edge shares (``orchestration.forms.fields``), so a payload of
the wrong shape is a 400 worded like the API's, and nothing is written. Only the fields picked
by ``issue_fields`` are read; the rest of GitHub's payload is never stored.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator

from orchestration.forms.fields import (
    HTTP_URL_VALIDATOR,
    INT4_MAX,
    MESSAGES,
    REPO_VALIDATOR,
    ErrorFirstForm,
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    dig,
)

# GitHub logins: letters, digits and '-' (at most 39); apps act as ``name[bot]``.
LOGIN_VALIDATOR = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9-]*(\[bot\])?$", "must be a GitHub login", code="pattern"
)
TITLE_MAX = 1_000  # GitHub allows 256; the bound is ours
BODY_MAX = 262_144  # GitHub's limit is 65,536 characters; the item keeps DESCRIPTION_MAX
LABEL_MAX = 100  # GitHub's limit is 50
LABELS_MAX = 100


def _login(value: Any) -> str | None:
    """``value`` when it is a GitHub login, else None."""
    if not isinstance(value, str) or len(value) > 100:
        return None
    try:
        LOGIN_VALIDATOR(value)
    except ValidationError:
        return None
    return value


def _time(value: Any) -> dt.datetime | None:
    """GitHub's ISO 8601 time (``2024-05-01T12:00:00Z``), aware; None for anything else."""
    try:
        at = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return at if at is None or at.tzinfo is not None else at.replace(tzinfo=dt.UTC)


def labelling(events: list[Any], label: str) -> tuple[str | None, dt.datetime | None]:
    """Who last added ``label`` to an issue, and when, from its events (GitHub records a
    label set when the issue is opened as a ``labeled`` event too). The login is None when
    no well-formed event says who; the time is None when none says when."""
    for event in reversed(events):
        if not isinstance(event, dict) or event.get("event") != "labeled":
            continue
        name = dig(event, "label", "name")
        if isinstance(name, str) and name.casefold() == label.casefold():
            return _login(dig(event, "actor", "login")), _time(event.get("created_at"))
    return None, None


def closer(issue: Any) -> str | None:
    """Who closed an issue (GitHub's ``closed_by`` of one issue), when it says so."""
    return _login(dig(issue, "closed_by", "login"))


def _text(value: Any) -> Any:
    """Issue text is anyone's to write: a NUL in it is dropped (no column can hold one),
    not a reason to refuse the delivery. Non-strings are left for the form to refuse."""
    return value.replace("\x00", "") if isinstance(value, str) else value


class LabelNamesField(forms.Field):
    """GitHub's ``labels``: a list of ``{"name": …}`` objects (or names), as names."""

    default_error_messages = MESSAGES

    def to_python(self, value: Any) -> Any:
        if value in (None, ""):
            return []
        if not isinstance(value, list) or len(value) > LABELS_MAX:
            raise ValidationError(f"must be a list of at most {LABELS_MAX} labels", code="type")
        names = []
        for label in value:
            name = label.get("name") if isinstance(label, dict) else label
            if not isinstance(name, str) or not name or len(name) > LABEL_MAX or "\x00" in name:
                raise ValidationError("must be a list of labels with names", code="type")
            names.append(name)
        return names


class IssueForm(ErrorFirstForm):
    """One issue as GitHub shows it (``issue_fields`` picks the fields from its JSON)."""

    repo = StrictCharField(max_length=200, validators=[REPO_VALIDATOR])
    number = StrictIntegerField(min_value=1, max_value=INT4_MAX)
    title = StrictCharField(max_length=TITLE_MAX)
    body = StrictCharField(required=False, max_length=BODY_MAX, strip=False)
    author = StrictCharField(max_length=100, validators=[LOGIN_VALIDATOR])
    url = StrictCharField(required=False, max_length=500, validators=[HTTP_URL_VALIDATOR])
    state = StrictCharField(max_length=20)
    labels = LabelNamesField(required=False)
    isPull = StrictBooleanField(required=False)

    @classmethod
    def issue_fields(cls, issue: Any, *, repo: Any) -> dict[str, Any]:
        """The form's fields picked out of GitHub's issue object (missing → None)."""
        return {
            "repo": repo,
            "number": dig(issue, "number"),
            "title": _text(dig(issue, "title")),
            "body": _text(dig(issue, "body")),
            "author": dig(issue, "user", "login"),
            "url": dig(issue, "html_url"),
            "state": dig(issue, "state"),
            "labels": dig(issue, "labels"),
            # The issues API lists pull requests too, marked by this key.
            "isPull": isinstance(issue, dict) and issue.get("pull_request") is not None,
        }


class IssueEventForm(IssueForm):
    """An ``issues`` webhook delivery: the issue, who acted (``sender``) and, for
    ``labeled``, which label was added."""

    sender = StrictCharField(max_length=100, validators=[LOGIN_VALIDATOR])
    label = StrictCharField(required=False, max_length=LABEL_MAX)

    @classmethod
    def event_fields(cls, payload: dict[str, Any]) -> dict[str, Any]:
        return {
            **cls.issue_fields(payload.get("issue"), repo=dig(payload, "repository", "full_name")),
            "sender": dig(payload, "sender", "login"),
            "label": dig(payload, "label", "name"),
        }
