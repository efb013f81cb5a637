"""The GitHub loop's rows: the repositories Whim watches, and the outbox of GitHub calls."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

from django.conf import settings
from django.db import models
from django.db.models import Q

from orchestration.models import Priority, WorkItem


class Repository(models.Model):
    """A repository Whim watches: labelled issues become work items, pull requests get
    reviewed. INTAKE_REPOS entries get a row on first use; blank fields take the settings."""

    name = models.CharField(max_length=200, unique=True, help_text="owner/name, as on GitHub")
    enabled = models.BooleanField(default=True)
    intake_enabled = models.BooleanField(default=True, help_text="labelled issues → work items")
    review_enabled = models.BooleanField(default=True, help_text="review bot on pull requests")
    label = models.CharField(max_length=50, blank=True, default="", help_text="INTAKE_LABEL")
    # GitHub logins; empty: INTAKE_ALLOWED_USERS, and when that is empty too, collaborators.
    allowed_users = models.JSONField(default=list, blank=True)
    priority = models.CharField(max_length=10, blank=True, default="", help_text="INTAKE_PRIORITY")
    # The poll's conditional-request state and GitHub's rate limit as last seen.
    issues_etag = models.CharField(max_length=200, blank=True, default="", editable=False)
    pulls_etag = models.CharField(max_length=200, blank=True, default="", editable=False)
    polled_at = models.DateTimeField(null=True, blank=True, editable=False)
    rate_limited_until = models.DateTimeField(null=True, blank=True, editable=False)
    poll_note = models.CharField(max_length=300, blank=True, default="", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "repositories"
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name

    @property
    def intake_label(self) -> str:
        """The label that asks Whim to take an issue here (``label``, else INTAKE_LABEL)."""
        return self.label.strip() or str(settings.INTAKE_LABEL)

    @property
    def intake_priority(self) -> str:
        """The priority of this repository's issue items (``priority``, else INTAKE_PRIORITY)."""
        for value in (self.priority, settings.INTAKE_PRIORITY):
            if str(value).strip().lower() in Priority.values:
                return str(value).strip().lower()
        return str(Priority.MEDIUM)

    @property
    def allowed_logins(self) -> list[str]:
        """Who may ask for work here, lowercased (``allowed_users``, else
        INTAKE_ALLOWED_USERS); empty: the repository's collaborators, asked of GitHub."""
        users = self.allowed_users if isinstance(self.allowed_users, list) else []
        chosen = users or list(settings.INTAKE_ALLOWED_USERS)
        return [str(u).strip().lower() for u in chosen if str(u).strip()]

    @property
    def intake_on(self) -> bool:
        return self.enabled and self.intake_enabled

    def rate_limited(self, now: dt.datetime) -> bool:
        return self.rate_limited_until is not None and self.rate_limited_until > now

    @classmethod
    def configured(cls) -> list[str]:
        """INTAKE_REPOS, cleaned (blank entries dropped)."""
        return [str(n).strip() for n in settings.INTAKE_REPOS if str(n).strip()]

    @classmethod
    def named(cls, name: str) -> Repository | None:
        """The row for ``name`` (any case); an INTAKE_REPOS entry gets its row on first use.
        None: a repository Whim does not watch."""
        row = cls.objects.filter(name__iexact=name).first()
        if row is None and name.lower() in {n.lower() for n in cls.configured()}:
            row, _ = cls.objects.get_or_create(name=name)
        return row


class GitHubActionStatus(models.TextChoices):
    PENDING = "pending"  # not done yet: delivered by its task, re-sent by the sweep
    DONE = "done"
    FAILED = "failed"  # GitHub refused for good, or GITHUB_ACTION_MAX_ATTEMPTS ran out


class GitHubAction(models.Model):
    """One call that changes something on GitHub, written in the same transaction as the state
    change it reports (the outbox): nothing is lost to a crash, and ``key`` makes each one
    happen once however often it is asked for. Delivered by a Celery task, re-sent by a sweep,
    each kind's delivery idempotent on GitHub's side too (a marker, or a lookup first)."""

    key = models.CharField(max_length=300, unique=True)
    kind = models.CharField(max_length=40)
    repo = models.CharField(max_length=200)
    number = models.PositiveIntegerField(null=True, blank=True)  # the issue or pull request
    payload = models.JSONField(default=dict, blank=True)
    work_item = models.ForeignKey(
        WorkItem, null=True, blank=True, on_delete=models.SET_NULL, related_name="github_actions"
    )
    status = models.CharField(
        max_length=10, choices=GitHubActionStatus.choices, default=GitHubActionStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    result = models.JSONField(default=dict, blank=True)  # what GitHub answered (ids, urls)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes: ClassVar[list[models.Index]] = [
            models.Index(
                fields=["next_attempt_at"],
                name="githubaction_due",
                condition=Q(status="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.repo}#{self.number} ({self.status})"
