"""The worker (attempt) admin: its list and page, and the actions on it — kill, retrying the
item, and kill and fail (each asks why, calls ``worker_kill``) — and show the logs of the
selected workers."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from orchestration.admin.base import (
    FastListAdmin,
    RecentValuesFilter,
    admin_actor,
    apply_each,
    with_reason,
)
from orchestration.choices import ErrorCategory
from orchestration.errors import ValidationFailed
from orchestration.forms.clients import KillForm
from orchestration.models import Worker
from orchestration.registry import runtime
from orchestration.services import workers


class ErrorCategoryFilter(RecentValuesFilter):
    """Every named category, plus any other a worker reported lately (the fail callback
    accepts any UPPER_SNAKE_CASE name, e.g. a repo's own TEST_FAILURE)."""

    title = "error category"
    parameter_name = "error_category"
    field = "error_category"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        named = list(ErrorCategory.choices)
        known = {value for value, _ in named}
        others = [(v, v) for v, _ in super().lookups(request, model_admin) if v not in known]
        return named + others


@admin.register(Worker)
class WorkerAdmin(FastListAdmin):
    list_display = (
        "short_id",
        "work_item",
        "attempt",
        "status",
        "iteration",
        "last_heartbeat",
        "error_category",
        "created_at",
    )
    list_display_links = ("short_id",)
    list_filter = ("status", ErrorCategoryFilter, "created_at")
    search_fields = ("=id", "=work_item__id", "error", "container_id")
    # No date_hierarchy: it lists its links with a DISTINCT DATE_TRUNC over every row (a
    # full scan at a million rows); the "created at" filter's ranges are index scans.
    list_select_related = ("work_item",)
    ordering = ("-created_at",)
    exclude = ("token_hash",)
    readonly_fields = (
        "id",
        "work_item",
        "console_link",
        "status",
        "attempt",
        "iteration",
        "tokens_in",
        "tokens_out",
        "container_id",
        "last_heartbeat",
        "registered_at",
        "last_progress_at",
        "created_at",
        "started_at",
        "completed_at",
        "error",
        "error_category",
        "log_tail",
    )
    actions = ("kill", "kill_and_fail", "show_logs")

    @admin.display(description="id", ordering="id")
    def short_id(self, obj: Worker) -> str:
        return str(obj.pk)[:8]

    @admin.display(description="console")
    def console_link(self, obj: Worker) -> str:
        url = reverse("work-detail", args=[obj.work_item_id])
        return format_html('<a href="{}">open its work item page</a> (live log)', url)

    @admin.action(
        description="Kill selected workers, retry their items (asks for a reason)",
        permissions=["operate"],
    )
    def kill(self, request: HttpRequest, queryset: QuerySet[Worker]) -> HttpResponse | None:
        return self._kill(request, queryset, retry=True)

    @admin.action(
        description="Kill selected workers and fail their items (asks for a reason)",
        permissions=["operate"],
    )
    def kill_and_fail(
        self, request: HttpRequest, queryset: QuerySet[Worker]
    ) -> HttpResponse | None:
        return self._kill(request, queryset, retry=False)

    def _kill(
        self, request: HttpRequest, queryset: QuerySet[Worker], *, retry: bool
    ) -> HttpResponse | None:
        """Both kill actions: the reason asked for, then KillForm and ``worker_kill`` as the
        API, the console and ``whim kill`` use them."""
        actor = admin_actor(request)

        def apply(reason: str) -> None:
            try:
                kill = KillForm(data={"reason": reason, "retry": str(retry)}).kill_options()
            except ValidationFailed as exc:
                messages.error(request, "; ".join([exc.message, *(exc.details or {}).values()]))
                return
            apply_each(
                request,
                queryset,
                "Kill" if retry else "Kill and fail",
                lambda pk: workers.worker_kill(worker_id=pk, actor=actor, **kill),
            )

        action, title = (
            ("kill", "Kill workers")
            if retry
            else ("kill_and_fail", "Kill workers and fail their items")
        )
        return with_reason(self, request, queryset, action=action, title=title, apply=apply)

    @admin.action(description="Show logs of selected workers")
    def show_logs(self, request: HttpRequest, queryset: QuerySet[Worker]) -> HttpResponse:
        rows = []
        for worker in queryset.select_related("work_item")[:20]:
            lines, source = runtime().worker_logs(worker, lines=500)
            rows.append({"worker": worker, "log": "\n".join(lines), "source": source})
        return TemplateResponse(
            request,
            "admin/orchestration/worker_logs.html",
            {
                **self.admin_site.each_context(request),
                "title": "Worker logs",
                "rows": rows,
                "opts": self.model._meta,
            },
        )
