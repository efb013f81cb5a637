"""Django admin: every model, with actions that call the same services as the API."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from orchestration.errors import WhimError
from orchestration.models import (
    ApiKey,
    DailyUsage,
    FileLock,
    Worker,
    WorkerMetrics,
    WorkItem,
    WorkItemEvent,
)
from orchestration.services import apikeys, work_items, workers


def _each(request: HttpRequest, queryset: QuerySet[Any], verb: str, fn: Any) -> None:
    done = skipped = 0
    for obj in queryset:
        try:
            done += 1 if fn(obj) else 0
        except WhimError as exc:
            skipped += 1
            messages.warning(request, f"{obj.pk}: {exc.message}")
    messages.info(request, f"{verb}: {done} changed, {skipped} refused.")


class EventInline(admin.TabularInline):
    model = WorkItemEvent
    extra = 0
    can_delete = False
    fields = ("created_at", "kind", "from_status", "to_status", "actor", "message")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class WorkerInline(admin.TabularInline):
    model = Worker
    extra = 0
    can_delete = False
    fields = ("id", "attempt", "status", "iteration", "last_heartbeat", "error_category", "error")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WorkItem)
class WorkItemAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "repo",
        "branch",
        "type",
        "priority",
        "status",
        "retry_count",
        "created_at",
    )
    list_filter = ("status", "priority", "type", "created_at")
    search_fields = ("=id", "repo", "branch", "error")
    date_hierarchy = "created_at"
    list_select_related = ("worker",)
    show_full_result_count = False
    readonly_fields = (
        "id",
        "status",
        "worker",
        "iteration",
        "retry_count",
        "next_retry_at",
        "priority_rank",
        "created_at",
        "updated_at",
        "completed_at",
        "error",
        "error_category",
        "pr_url",
        "pr_number",
        "idempotency_key",
    )
    inlines = (WorkerInline, EventInline)
    actions = ("cancel", "requeue", "requeue_reset")

    @admin.action(description="Cancel selected work items")
    def cancel(self, request: HttpRequest, queryset: QuerySet[WorkItem]) -> None:
        actor = f"admin:{request.user.get_username()}"
        _each(
            request,
            queryset,
            "Cancel",
            lambda o: work_items.work_item_cancel(work_item_id=o.pk, actor=actor),
        )

    @admin.action(description="Requeue selected work items")
    def requeue(self, request: HttpRequest, queryset: QuerySet[WorkItem]) -> None:
        actor = f"admin:{request.user.get_username()}"
        _each(
            request,
            queryset,
            "Requeue",
            lambda o: work_items.work_item_requeue(work_item_id=o.pk, actor=actor),
        )

    @admin.action(description="Requeue selected work items, resetting retries")
    def requeue_reset(self, request: HttpRequest, queryset: QuerySet[WorkItem]) -> None:
        actor = f"admin:{request.user.get_username()}"
        _each(
            request,
            queryset,
            "Requeue",
            lambda o: work_items.work_item_requeue(
                work_item_id=o.pk, reset_retries=True, actor=actor
            ),
        )


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "work_item",
        "attempt",
        "status",
        "iteration",
        "last_heartbeat",
        "created_at",
    )
    list_filter = ("status", "created_at")
    search_fields = ("=id", "=work_item__id", "error", "container_id")
    list_select_related = ("work_item",)
    show_full_result_count = False
    exclude = ("token_hash",)
    readonly_fields = (
        "id",
        "work_item",
        "status",
        "attempt",
        "iteration",
        "tokens_in",
        "tokens_out",
        "container_id",
        "last_heartbeat",
        "last_progress_at",
        "created_at",
        "started_at",
        "completed_at",
        "error",
        "error_category",
        "log_tail",
    )
    actions = ("kill",)

    @admin.action(description="Kill selected workers")
    def kill(self, request: HttpRequest, queryset: QuerySet[Worker]) -> None:
        actor = f"admin:{request.user.get_username()}"
        _each(
            request,
            queryset,
            "Kill",
            lambda o: workers.worker_kill(worker_id=o.pk, reason="killed from admin", actor=actor),
        )


@admin.register(FileLock)
class FileLockAdmin(admin.ModelAdmin):
    list_display = ("repo", "path", "worker", "acquired_at", "expires_at")
    search_fields = ("repo", "path")
    list_select_related = ("worker",)


@admin.register(WorkItemEvent)
class WorkItemEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "work_item", "kind", "from_status", "to_status", "actor")
    list_filter = ("kind", "created_at")
    search_fields = ("=work_item__id", "message")
    show_full_result_count = False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(DailyUsage)
class DailyUsageAdmin(admin.ModelAdmin):
    list_display = ("date", "spawns", "iterations")


@admin.register(WorkerMetrics)
class WorkerMetricsAdmin(admin.ModelAdmin):
    list_display = ("worker", "work_item", "tokens_in", "tokens_out", "duration_ms", "created_at")
    list_select_related = ("worker", "work_item")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "created_at", "last_used_at", "revoked_at")
    fields = ("name",)
    actions = ("revoke",)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        row, key = apikeys.apikey_create(name=obj.name)
        obj.pk = row.pk
        messages.warning(request, f"API key created. Copy it now, it is not shown again: {key}")

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        _each(request, queryset, "Revoke", lambda o: apikeys.apikey_revoke(key_id=o.pk))
