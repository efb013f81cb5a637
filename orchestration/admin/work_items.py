"""The work item admin: its list, its page (attempts, latest events, reviews inline) and the
actions on it — cancel, requeue (optionally resetting retries), continue a paused item with a
raised cost cap and set priority, each asking why and calling the work item services."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html

from orchestration.admin.base import (
    FastListAdmin,
    ReasonForm,
    RecentValuesFilter,
    admin_actor,
    apply_each,
    with_reason,
)
from orchestration.forms.clients import MAX_COST_CAP_USD
from orchestration.models import Priority, Worker, WorkItem, WorkItemEvent
from orchestration.services import work_items
from orchestration.services.bulk import WorkItemAction, work_item_act
from reviews.models import PRReview

# --- inlines ---------------------------------------------------------------------------------


class LatestEventsFormSet(BaseInlineFormSet):
    """Only the latest events: an item with thousands of events still opens quickly."""

    LIMIT = 200

    def get_queryset(self) -> QuerySet[Any]:
        if not hasattr(self, "_latest"):
            qs = super().get_queryset().order_by("-created_at", "-id")
            self._latest = qs[: self.LIMIT]
        return self._latest


class EventInline(admin.TabularInline):
    model = WorkItemEvent
    formset = LatestEventsFormSet
    extra = 0
    can_delete = False
    verbose_name_plural = "events (latest 200)"
    fields = ("created_at", "kind", "from_status", "to_status", "actor", "message")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class WorkerInline(admin.TabularInline):
    model = Worker
    fk_name = "work_item"
    extra = 0
    can_delete = False
    verbose_name_plural = "attempts"
    fields = (
        "id",
        "attempt",
        "status",
        "iteration",
        "tokens_in",
        "tokens_out",
        "cost_usd",
        "model",
        "last_heartbeat",
        "started_at",
        "completed_at",
        "error_category",
        "error",
    )
    readonly_fields = fields
    ordering = ("created_at",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReviewInline(admin.TabularInline):
    model = PRReview
    extra = 0
    can_delete = False
    verbose_name_plural = "reviews"
    fields = ("created_at", "pr_number", "model_used", "findings")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- the work item admin ---------------------------------------------------------------------


class ContinueActionForm(ReasonForm):
    """The continue action's page: the new cost cap (over all attempts; 0: no cap) and why."""

    max_cost_usd = forms.DecimalField(
        label="New cost cap (USD, over all attempts; 0: no cap)",
        min_value=Decimal(0),
        max_value=Decimal(MAX_COST_CAP_USD),
        max_digits=14,
        decimal_places=6,
    )


@admin.register(WorkItem)
class WorkItemAdmin(FastListAdmin):
    list_display = (
        "short_id",
        "repo",
        "branch",
        "type",
        "priority",
        "status",
        "iteration",
        "retry_count",
        "error_category",
        "cost_usd",
        "created_at",
    )
    list_display_links = ("short_id",)
    list_filter = ("status", "priority", "type", RecentValuesFilter, "created_at")
    search_fields = ("=id", "repo", "branch", "error")
    # No date_hierarchy: it lists its links with a DISTINCT DATE_TRUNC over every row (a
    # full scan at a million rows); the "created at" filter's ranges are index scans.
    list_select_related = ("worker",)
    ordering = ("-created_at",)
    # Priority changes go through the actions (they keep priority_rank in step and leave an
    # event); new items come from the submit form or the API (one validation).
    readonly_fields = (
        "id",
        "console_link",
        "type",
        "priority",
        "status",
        "worker",
        "iteration",
        "retry_count",
        "next_retry_at",
        "priority_rank",
        "duration",
        "created_at",
        "updated_at",
        "completed_at",
        "error",
        "error_category",
        "tokens_in",
        "tokens_out",
        "cost_usd",
        "pr_url",
        "pr_number",
        "commit_sha",
        "idempotency_key",
        "parent_work_item",
    )
    raw_id_fields = ("parent_work_item",)
    actions = (
        "cancel",
        "requeue",
        "requeue_reset",
        "continue_paused",
        "priority_critical",
        "priority_high",
        "priority_medium",
        "priority_low",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_inlines(self, request: HttpRequest, obj: Any) -> list[type[Any]]:
        return [WorkerInline, EventInline, ReviewInline]

    @admin.display(description="id", ordering="id")
    def short_id(self, obj: WorkItem) -> str:
        return str(obj.pk)[:8]

    @admin.display(description="console")
    def console_link(self, obj: WorkItem) -> str:
        url = reverse("work-detail", args=[obj.pk])
        return format_html('<a href="{}">open the work item page</a> (live status and log)', url)

    @admin.display(description="duration")
    def duration(self, obj: WorkItem) -> str:
        if obj.completed_at is None:
            return "—"
        return str(obj.completed_at - obj.created_at).split(".")[0]

    @admin.action(
        description="Cancel selected work items (asks for a reason)", permissions=["operate"]
    )
    def cancel(self, request: HttpRequest, queryset: QuerySet[WorkItem]) -> HttpResponse | None:
        actor = admin_actor(request)

        def apply(reason: str) -> None:
            apply_each(
                request,
                queryset,
                "Cancel",
                lambda pk: work_item_act(
                    action=WorkItemAction.CANCEL,
                    work_item_id=pk,
                    actor=actor,
                    reason=reason or f"cancelled by {actor}",
                ),
            )

        return with_reason(
            self, request, queryset, action="cancel", title="Cancel work items", apply=apply
        )

    def _requeue(
        self, request: HttpRequest, queryset: QuerySet[WorkItem], reset: bool
    ) -> HttpResponse | None:
        actor = admin_actor(request)
        action = WorkItemAction.REQUEUE_RESET if reset else WorkItemAction.REQUEUE

        def apply(reason: str) -> None:
            apply_each(
                request,
                queryset,
                "Requeue",
                lambda pk: work_item_act(
                    action=action, work_item_id=pk, actor=actor, reason=reason
                ),
            )

        return with_reason(
            self,
            request,
            queryset,
            action="requeue_reset" if reset else "requeue",
            title="Requeue work items" + (", resetting retries" if reset else ""),
            apply=apply,
        )

    @admin.action(
        description="Requeue selected work items (asks for a reason)", permissions=["operate"]
    )
    def requeue(self, request: HttpRequest, queryset: QuerySet[WorkItem]) -> HttpResponse | None:
        return self._requeue(request, queryset, reset=False)

    @admin.action(
        description="Requeue selected work items, resetting retries (asks for a reason)",
        permissions=["operate"],
    )
    def requeue_reset(
        self, request: HttpRequest, queryset: QuerySet[WorkItem]
    ) -> HttpResponse | None:
        return self._requeue(request, queryset, reset=True)

    @admin.action(
        description="Continue selected paused work items with a raised cost cap",
        permissions=["operate"],
    )
    def continue_paused(
        self, request: HttpRequest, queryset: QuerySet[WorkItem]
    ) -> HttpResponse | None:
        actor = admin_actor(request)

        def apply(data: dict[str, Any]) -> None:
            apply_each(
                request,
                queryset,
                "Continue",
                lambda pk: work_items.work_item_continue(
                    work_item_id=pk,
                    max_cost_usd=data["max_cost_usd"],
                    actor=actor,
                    reason=data["reason"],
                ),
            )

        return with_reason(
            self,
            request,
            queryset,
            action="continue_paused",
            title="Continue paused work items",
            form_class=ContinueActionForm,
            apply_data=apply,
        )

    def _priority(
        self, request: HttpRequest, queryset: QuerySet[WorkItem], to: str
    ) -> HttpResponse | None:
        actor = admin_actor(request)

        def apply(reason: str) -> None:
            apply_each(
                request,
                queryset,
                f"Priority {to}",
                lambda pk: work_items.work_item_set_priority(
                    work_item_id=pk, priority=to, actor=actor, reason=reason
                ),
            )

        return with_reason(
            self,
            request,
            queryset,
            action=f"priority_{to}",
            title=f"Set priority {to}",
            apply=apply,
        )

    @admin.action(description="Set priority: critical", permissions=["operate"])
    def priority_critical(
        self, request: HttpRequest, queryset: QuerySet[WorkItem]
    ) -> HttpResponse | None:
        return self._priority(request, queryset, Priority.CRITICAL)

    @admin.action(description="Set priority: high", permissions=["operate"])
    def priority_high(
        self, request: HttpRequest, queryset: QuerySet[WorkItem]
    ) -> HttpResponse | None:
        return self._priority(request, queryset, Priority.HIGH)

    @admin.action(description="Set priority: medium", permissions=["operate"])
    def priority_medium(
        self, request: HttpRequest, queryset: QuerySet[WorkItem]
    ) -> HttpResponse | None:
        return self._priority(request, queryset, Priority.MEDIUM)

    @admin.action(description="Set priority: low", permissions=["operate"])
    def priority_low(
        self, request: HttpRequest, queryset: QuerySet[WorkItem]
    ) -> HttpResponse | None:
        return self._priority(request, queryset, Priority.LOW)
