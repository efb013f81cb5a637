"""Admin for the GitHub loop: the watched repositories (editable) and the outbox of GitHub
calls (read-only, with "retry now")."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from intake.models import GitHubAction, Repository
from intake.outbox import github_actions_retry
from orchestration.admin.base import ACTION_MAX, FastListAdmin, RecentValuesFilter


@admin.register(Repository)
class RepositoryAdmin(admin.ModelAdmin):
    """A watched repository: its switches, label, allowed users and priority; the poll's
    state (ETags, rate limit, last note) is shown, never edited."""

    list_display = (
        "name",
        "enabled",
        "intake_enabled",
        "review_enabled",
        "polled_at",
        "rate_limited_until",
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
