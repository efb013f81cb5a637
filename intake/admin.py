"""Admin for the GitHub loop: the watched repositories (each one's switches, label, allowed
users and priority, and what its last poll saw: when, GitHub's rate limit, a note) and the
outbox of GitHub calls (read-only, with "retry now")."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.html import format_html

from intake.forms import LOGIN_VALIDATOR
from intake.models import GitHubAction, Repository
from intake.outbox import github_actions_retry
from intake.repos import repositories_watched
from orchestration.admin.base import ACTION_MAX, FastListAdmin, RecentValuesFilter
from orchestration.forms.fields import REPO_VALIDATOR
from orchestration.models import Priority


class RepositoryForm(forms.ModelForm):
    """The same rules as everywhere: GitHub's owner/name, logins, one of the priorities."""

    class Meta:
        model = Repository
        fields = (
            "name",
            "enabled",
            "intake_enabled",
            "review_enabled",
            "label",
            "allowed_users",
            "priority",
        )
        help_texts = {
            "allowed_users": 'GitHub logins as a JSON list, e.g. ["octocat"]; empty: '
            "INTAKE_ALLOWED_USERS, and when that is empty too, the repository's collaborators.",
            "priority": "low, medium, high or critical; empty: INTAKE_PRIORITY.",
        }

    def clean_name(self) -> str:
        name = str(self.cleaned_data["name"]).strip()
        REPO_VALIDATOR(name)
        clash = Repository.objects.filter(name__iexact=name).exclude(pk=self.instance.pk)
        if clash.exists():
            raise ValidationError("this repository is listed already (names ignore case)")
        return name

    def clean_allowed_users(self) -> list[str]:
        users = self.cleaned_data.get("allowed_users") or []
        if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
            raise ValidationError("must be a JSON list of GitHub logins")
        for login in users:
            LOGIN_VALIDATOR(login.strip())
        return [u.strip() for u in users]

    def clean_priority(self) -> str:
        value = str(self.cleaned_data.get("priority") or "").strip().lower()
        if value and value not in Priority.values:
            raise ValidationError("must be one of: " + ", ".join(Priority.values))
        return value


@admin.register(Repository)
class RepositoryAdmin(admin.ModelAdmin):
    """The watched repositories. INTAKE_REPOS entries get a row when this list is opened (or
    at the first poll), so they can be tuned or switched off here."""

    form = RepositoryForm
    list_display = (
        "name",
        "enabled",
        "intake_enabled",
        "review_enabled",
        "label_shown",
        "polled_at",
        "rate_limit_shown",
        "poll_note",
    )
    list_filter = ("enabled", "intake_enabled", "review_enabled")
    search_fields = ("name",)
    readonly_fields = (
        "issues_etag",
        "pulls_etag",
        "polled_at",
        "rate_limited_until",
        "poll_note",
        "created_at",
        "updated_at",
    )

    @admin.display(description="label")
    def label_shown(self, obj: Repository) -> str:
        return obj.intake_label

    @admin.display(description="rate limited", ordering="rate_limited_until")
    def rate_limit_shown(self, obj: Repository) -> str:
        until = obj.rate_limited_until
        if until is None or not obj.rate_limited(timezone.now()):
            return "—"
        return format_html(
            '<span class="bad-text">until {}</span>', timezone.localtime(until).strftime("%H:%M:%S")
        )

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        repositories_watched()  # INTAKE_REPOS entries show (and can be tuned) before a poll
        return super().changelist_view(request, extra_context)


class ActionKindFilter(RecentValuesFilter):
    title = "kind"
    parameter_name = "kind"
    field = "kind"


@admin.register(GitHubAction)
class GitHubActionAdmin(FastListAdmin):
    """The outbox as it stands: what Whim asked GitHub to do, and how that went. Read-only:
    rows change through delivery, the sweep, and the "retry now" action."""

    list_display = (
        "created_at",
        "kind",
        "repo",
        "number",
        "status",
        "attempts",
        "next_attempt_at",
        "last_error",
        "work_item",
    )
    list_filter = ("status", ActionKindFilter)
    search_fields = ("=key", "repo", "=work_item__id")
    date_hierarchy = "created_at"
    list_select_related = ("work_item",)
    raw_id_fields = ("work_item",)
    actions = ("retry_now",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(
        description="Retry now (pending, due at once, attempts reset)", permissions=["operate"]
    )
    def retry_now(self, request: HttpRequest, queryset: QuerySet[GitHubAction]) -> None:
        ids = list(queryset.values_list("pk", flat=True)[:ACTION_MAX])
        changed = github_actions_retry(action_ids=ids)
        messages.info(
            request, f"Retry now: {changed} queued again, {len(ids) - changed} already done."
        )
