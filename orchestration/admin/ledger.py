"""The admin of the ledger-like rows: file locks (release, asking why), the event log
(read-only), daily usage and cost usage (read-only: the budgets' ledgers), the dispatch state,
worker metrics, API keys (created once with the key shown once; revoked asking why) and login
lockouts (read-only; unlocked by an admin)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from orchestration.admin.base import (
    ACTION_MAX,
    FastListAdmin,
    admin_actor,
    apply_each,
    with_reason,
)
from orchestration.choices import EventKind
from orchestration.models import (
    ApiKey,
    CostUsage,
    DailyUsage,
    DispatchState,
    FileLock,
    LoginThrottle,
    WorkerMetrics,
    WorkItemEvent,
)
from orchestration.services import apikeys, locks, logins

# --- locks -----------------------------------------------------------------------------------


@admin.register(FileLock)
class FileLockAdmin(FastListAdmin):
    list_display = ("repo", "path", "worker", "acquired_at", "expires_at")
    list_filter = ("acquired_at", "expires_at")
    search_fields = ("repo", "path", "=worker__id")
    list_select_related = ("worker",)
    ordering = ("repo", "path")
    actions = ("release",)

    @admin.action(description="Release selected locks (asks for a reason)", permissions=["operate"])
    def release(self, request: HttpRequest, queryset: QuerySet[FileLock]) -> HttpResponse | None:
        actor = admin_actor(request)

        def apply(reason: str) -> None:
            apply_each(
                request,
                queryset,
                "Release",
                lambda pk: locks.lock_release(lock_id=pk, actor=actor, reason=reason),
            )

        return with_reason(
            self, request, queryset, action="release", title="Release file locks", apply=apply
        )


# --- events ----------------------------------------------------------------------------------


class EventKindFilter(admin.SimpleListFilter):
    title = "kind"
    parameter_name = "kind"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(EventKind.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(kind=value) if value else queryset


@admin.register(WorkItemEvent)
class WorkItemEventAdmin(FastListAdmin):
    list_display = ("created_at", "work_item", "kind", "from_status", "to_status", "actor")
    list_filter = (EventKindFilter, "created_at")
    # "=data__requestId": every event one request (and the tasks it enqueued) recorded.
    search_fields = ("=work_item__id", "actor", "message", "=data__requestId")
    list_select_related = ("work_item",)
    # No date_hierarchy: it lists its links with a DISTINCT DATE_TRUNC over every row (a
    # full scan at a million rows); the "created at" filter's ranges are index scans.
    ordering = ("-created_at",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- usage, dispatch state, metrics ----------------------------------------------------------


@admin.register(DailyUsage)
class DailyUsageAdmin(FastListAdmin):
    """The budget's ledger: read-only (an edited count would silently move the budget)."""

    list_display = ("date", "spawns", "iterations")
    ordering = ("-date",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(CostUsage)
class CostUsageAdmin(FastListAdmin):
    """The cost ledger's totals per day, repo and model: read-only (an edited row would
    silently move DAILY_COST_BUDGET's gate)."""

    list_display = ("date", "repo", "model", "tokens_in", "tokens_out", "cost_usd")
    list_filter = ("date",)
    search_fields = ("repo", "model")
    ordering = ("-date", "repo", "model")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(DispatchState)
class DispatchStateAdmin(admin.ModelAdmin):
    list_display = ("id", "last_spawn_at")
    readonly_fields = ("id", "last_spawn_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WorkerMetrics)
class WorkerMetricsAdmin(FastListAdmin):
    list_display = (
        "worker",
        "work_item",
        "tokens_in",
        "tokens_out",
        "cost_usd",
        "duration_ms",
        "files_modified",
        "tests_passed",
        "tests_failed",
        "created_at",
    )
    list_select_related = ("worker", "work_item")
    search_fields = ("=work_item__id", "=worker__id")
    list_filter = ("created_at",)
    # No date_hierarchy: it lists its links with a DISTINCT DATE_TRUNC over every row (a
    # full scan at a million rows); the "created at" filter's ranges are index scans.
    ordering = ("-created_at",)


# --- API keys --------------------------------------------------------------------------------


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "prefix",
        "created_at",
        "last_used_at",
        "revoked_at",
        "active",
        "auto_created",
    )
    list_filter = ("revoked_at", "auto_created")
    search_fields = ("name", "prefix")
    fields = ("name",)
    actions = ("revoke",)

    @admin.display(boolean=True, description="active")
    def active(self, obj: ApiKey) -> bool:
        return obj.is_active

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        row, key = apikeys.apikey_create(name=obj.name)
        obj.pk = row.pk
        messages.warning(request, f"API key created. Copy it now, it is not shown again: {key}")

    @admin.action(description="Revoke selected keys (asks for a reason)", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> HttpResponse | None:
        def one(pk: int, reason: str) -> bool:
            revoked = apikeys.apikey_revoke(key_id=pk)
            if revoked:  # the admin's history: who, what, why
                key = ApiKey.objects.get(pk=pk)
                self.log_change(request, key, f"Revoked: {reason or 'no reason given'}")
            return revoked

        return with_reason(
            self,
            request,
            queryset,
            action="revoke",
            title="Revoke API keys",
            apply=lambda reason: apply_each(
                request, queryset, "Revoke", lambda pk: one(pk, reason)
            ),
        )


# --- login lockouts --------------------------------------------------------------------------


@admin.register(LoginThrottle)
class LoginThrottleAdmin(FastListAdmin):
    """Failed logins per name and per address; "Unlock" lifts a lockout (admins only)."""

    list_display = ("scope", "key", "failures", "window_started_at", "locked_until", "locked")
    list_filter = ("scope",)
    search_fields = ("key",)
    ordering = ("-window_started_at",)
    actions = ("unlock",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(boolean=True, description="locked now")
    def locked(self, obj: LoginThrottle) -> bool:
        return bool(obj.locked_until and obj.locked_until > timezone.now())

    @admin.action(description="Unlock selected (forget their failures)", permissions=["delete"])
    def unlock(self, request: HttpRequest, queryset: QuerySet[LoginThrottle]) -> None:
        unlocked = 0
        for row in queryset[:ACTION_MAX]:
            by_user = row.scope == LoginThrottle.Scope.USER
            unlocked += logins.login_unlock(
                username=row.key if by_user else "", address="" if by_user else row.key
            )
        messages.info(request, f"Unlocked {unlocked}; their failed logins are forgotten.")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Not FastListAdmin's "never": forgetting failures is what unlocking is.
        return admin.ModelAdmin.has_delete_permission(self, request, obj)
