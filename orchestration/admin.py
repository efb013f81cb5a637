"""Django admin: every model, fast at a million rows, with actions that call the services.

- List pages never run a full ``COUNT(*)``: ``show_full_result_count = False`` and a
  paginator that counts at most ``COUNT_CAP`` rows (an unfiltered table uses PostgreSQL's
  row estimate instead). Filters list fixed choices or recent values, never a DISTINCT scan.
- Every action calls the same service as the API, with the actor ``admin:<user>``, so each
  leaves an audit event; services are idempotent, so a double click (or two admins at once)
  has exactly one effect.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django_celery_beat.admin import PeriodicTaskAdmin
from django_celery_beat.models import PeriodicTask

from orchestration.errors import WhimError
from orchestration.models import (
    ApiKey,
    DailyUsage,
    DispatchState,
    FileLock,
    Priority,
    Worker,
    WorkerMetrics,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
)
from orchestration.registry import runtime
from orchestration.services import apikeys, locks, work_items, workers

# --- fast list pages -------------------------------------------------------------------------

COUNT_CAP = 10_000


class CappedCountPaginator(Paginator):
    """Counts at most COUNT_CAP rows (``SELECT COUNT(*) FROM (… LIMIT n)``).

    An unfiltered list on PostgreSQL shows the planner's row estimate instead, so page
    numbers stay meaningful on a huge table without scanning it.
    """

    @cached_property
    def count(self) -> int:
        qs = self.object_list
        if not isinstance(qs, QuerySet):
            return len(qs)
        capped = qs.order_by()[: COUNT_CAP + 1].count()
        if capped <= COUNT_CAP:
            return capped
        if not qs.query.where and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                    [qs.model._meta.db_table],
                )
                row = cursor.fetchone()
            if row and row[0] > COUNT_CAP:
                return int(row[0])
        return COUNT_CAP


class FastListAdmin(admin.ModelAdmin):
    """List pages that stay fast at a million rows. The rows are the jobs: they change only
    through the actions (which call the services), never by editing or deleting the row."""

    paginator = CappedCountPaginator
    show_full_result_count = False
    list_per_page = 100

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        own = list(super().get_readonly_fields(request, obj))
        return own + [f.name for f in self.model._meta.fields if f.name not in own]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RecentValuesFilter(admin.SimpleListFilter):
    """Values of ``field`` among the most recent rows (a DISTINCT over the whole table, which
    a plain field filter runs, is a scan)."""

    title = "repository"
    parameter_name = "repo"
    field = "repo"
    order_by = "-created_at"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        model = model_admin.model
        recent = model._default_manager.order_by(self.order_by).values_list(self.field, flat=True)
        values = sorted({r for r in recent[:2000] if r})
        return [(r, r) for r in values[:50]]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(**{self.field: value}) if value else queryset


class ErrorCategoryFilter(RecentValuesFilter):
    title = "error category"
    parameter_name = "error_category"
    field = "error_category"


EVENT_KINDS = (
    "submitted",
    "spec_generated",
    "claimed",
    "started",
    "locks_acquired",
    "lock_blocked",
    "lock_released",
    "completed",
    "retry_scheduled",
    "failed",
    "cancelled",
    "requeued",
    "recovered",
    "priority_changed",
    "attempt_killed",
    "attempt_failed",
    "attempt_stuck",
    "attempt_lost",
)


class EventKindFilter(admin.SimpleListFilter):
    title = "kind"
    parameter_name = "kind"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(k, k) for k in EVENT_KINDS]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(kind=value) if value else queryset


# --- actions: helpers ------------------------------------------------------------------------


def _actor(request: HttpRequest) -> str:
    return f"admin:{request.user.get_username()}"


# An action handles at most this many rows per click ("select all" of a million rows would
# otherwise run for minutes in one request); the message says to run it again for the rest.
ACTION_MAX = 5000


def _each(
    request: HttpRequest, queryset: QuerySet[Any], verb: str, fn: Callable[[Any], Any]
) -> None:
    """Run ``fn`` on each row (at most ACTION_MAX, ids only); count changes, repeats (no-ops)
    and refusals, naming the first few refusals."""
    done = repeats = refused = 0
    why: list[str] = []
    rows = list(queryset.select_related(None).only("pk")[: ACTION_MAX + 1])
    for obj in rows[:ACTION_MAX]:
        try:
            changed = fn(obj)
        except WhimError as exc:
            refused += 1
            if len(why) < 5:
                why.append(f"{obj.pk}: {exc.message}")
        else:
            done += 1 if changed else 0
            repeats += 0 if changed else 1
    if why:
        messages.warning(request, "Refused — " + "; ".join(why) + (" …" if refused > 5 else ""))
    summary = f"{verb}: {done} changed, {repeats} already so, {refused} refused."
    if len(rows) > ACTION_MAX:
        summary += f" Only the first {ACTION_MAX} were handled; run it again for the rest."
    messages.info(request, summary)


class ReasonForm(forms.Form):
    reason = forms.CharField(max_length=1000, required=False, widget=forms.TextInput)


def _with_reason(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet[Any],
    *,
    action: str,
    title: str,
    apply: Callable[[str], None],
) -> TemplateResponse | None:
    """An intermediate page asking for a reason; ``apply(reason)`` runs once it is posted.

    "Select all N" (``select_across``) is carried as such, not as N hidden ids, so a
    selection of any size fits in one form post.
    """
    across = request.POST.get("select_across") == "1"
    if request.POST.get("apply") == "yes":
        form = ReasonForm(request.POST)
        if form.is_valid():
            apply(form.cleaned_data["reason"].strip())
            return None
    else:
        form = ReasonForm()
    selected_count = queryset[: ACTION_MAX + 1].count()  # capped: never a full COUNT
    return TemplateResponse(
        request,
        "admin/orchestration/action_reason.html",
        {
            **modeladmin.admin_site.each_context(request),
            "title": title,
            "objects": list(queryset[:100]),
            "count": min(selected_count, ACTION_MAX),
            "capped": selected_count > ACTION_MAX,
            "select_across": across,
            # With select_across, Django still wants one id to know an action was chosen.
            "selected": [
                str(pk) for pk in queryset.values_list("pk", flat=True)[: 1 if across else None]
            ],
            "action": action,
            "form": form,
            "opts": modeladmin.model._meta,
        },
    )


# --- work items ------------------------------------------------------------------------------


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


def _review_inline() -> type[admin.TabularInline]:
    from reviews.models import PRReview

    class ReviewInline(admin.TabularInline):
        model = PRReview
        extra = 0
        can_delete = False
        verbose_name_plural = "reviews"
        fields = ("created_at", "pr_number", "model_used", "findings")
        readonly_fields = fields

        def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
            return False

    return ReviewInline


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
        "created_at",
    )
    list_display_links = ("short_id",)
    list_filter = ("status", "priority", "type", RecentValuesFilter, "created_at")
    search_fields = ("=id", "repo", "branch", "error")
    date_hierarchy = "created_at"
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
        "priority_critical",
        "priority_high",
        "priority_medium",
        "priority_low",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_inlines(self, request: HttpRequest, obj: Any) -> list[type[Any]]:
        return [WorkerInline, EventInline, _review_inline()]

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

    @admin.action(description="Cancel selected work items (asks for a reason)")
    def cancel(self, request: HttpRequest, queryset: QuerySet[WorkItem]) -> HttpResponse | None:
        actor = _actor(request)

        def apply(reason: str) -> None:
            _each(
                request,
                queryset,
                "Cancel",
                lambda o: work_items.work_item_cancel(
                    work_item_id=o.pk, actor=actor, reason=reason or f"cancelled by {actor}"
                ),
            )

        return _with_reason(
            self, request, queryset, action="cancel", title="Cancel work items", apply=apply
        )

    def _requeue(
        self, request: HttpRequest, queryset: QuerySet[WorkItem], reset: bool
    ) -> HttpResponse | None:
        actor = _actor(request)

        def one(o: WorkItem, reason: str) -> bool:
            # Re-read: a second click (or admin) finds it queued already and does nothing.
            if WorkItem.objects.filter(pk=o.pk, status=WorkItemStatus.QUEUED).exists():
                return False
            work_items.work_item_requeue(
                work_item_id=o.pk, reset_retries=reset, actor=actor, reason=reason
            )
            return True

        return _with_reason(
            self,
            request,
            queryset,
            action="requeue_reset" if reset else "requeue",
            title="Requeue work items" + (", resetting retries" if reset else ""),
            apply=lambda reason: _each(request, queryset, "Requeue", lambda o: one(o, reason)),
        )

    @admin.action(description="Requeue selected work items (asks for a reason)")
    def requeue(self, request: HttpRequest, queryset: QuerySet[WorkItem]) -> HttpResponse | None:
        return self._requeue(request, queryset, reset=False)

    @admin.action(description="Requeue selected work items, resetting retries (asks for a reason)")
    def requeue_reset(
        self, request: HttpRequest, queryset: QuerySet[WorkItem]
    ) -> HttpResponse | None:
        return self._requeue(request, queryset, reset=True)

    def _priority(
        self, request: HttpRequest, queryset: QuerySet[WorkItem], to: str
    ) -> HttpResponse | None:
        actor = _actor(request)

        def apply(reason: str) -> None:
            _each(
                request,
                queryset,
                f"Priority {to}",
                lambda o: work_items.work_item_set_priority(
                    work_item_id=o.pk, priority=to, actor=actor, reason=reason
                ),
            )

        return _with_reason(
            self,
            request,
            queryset,
            action=f"priority_{to}",
            title=f"Set priority {to}",
            apply=apply,
        )

    @admin.action(description="Set priority: critical")
    def priority_critical(
        self, request: HttpRequest, queryset: QuerySet[WorkItem]
    ) -> HttpResponse | None:
        return self._priority(request, queryset, Priority.CRITICAL)

    @admin.action(description="Set priority: high")
    def priority_high(
        self, request: HttpRequest, queryset: QuerySet[WorkItem]
    ) -> HttpResponse | None:
        return self._priority(request, queryset, Priority.HIGH)

    @admin.action(description="Set priority: medium")
    def priority_medium(
        self, request: HttpRequest, queryset: QuerySet[WorkItem]
    ) -> HttpResponse | None:
        return self._priority(request, queryset, Priority.MEDIUM)

    @admin.action(description="Set priority: low")
    def priority_low(
        self, request: HttpRequest, queryset: QuerySet[WorkItem]
    ) -> HttpResponse | None:
        return self._priority(request, queryset, Priority.LOW)


# --- workers ---------------------------------------------------------------------------------


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
    date_hierarchy = "created_at"
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
    actions = ("kill", "show_logs")

    @admin.display(description="id", ordering="id")
    def short_id(self, obj: Worker) -> str:
        return str(obj.pk)[:8]

    @admin.display(description="console")
    def console_link(self, obj: Worker) -> str:
        url = reverse("work-detail", args=[obj.work_item_id])
        return format_html('<a href="{}">open its work item page</a> (live log)', url)

    @admin.action(description="Kill selected workers (asks for a reason)")
    def kill(self, request: HttpRequest, queryset: QuerySet[Worker]) -> HttpResponse | None:
        actor = _actor(request)

        def apply(reason: str) -> None:
            _each(
                request,
                queryset,
                "Kill",
                lambda o: workers.worker_kill(
                    worker_id=o.pk, reason=reason or f"killed by {actor}", actor=actor
                ),
            )

        return _with_reason(
            self, request, queryset, action="kill", title="Kill workers", apply=apply
        )

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


# --- locks, events, usage, keys --------------------------------------------------------------


@admin.register(FileLock)
class FileLockAdmin(FastListAdmin):
    list_display = ("repo", "path", "worker", "acquired_at", "expires_at")
    list_filter = ("acquired_at", "expires_at")
    search_fields = ("repo", "path", "=worker__id")
    list_select_related = ("worker",)
    ordering = ("repo", "path")
    actions = ("release",)

    @admin.action(description="Release selected locks (asks for a reason)")
    def release(self, request: HttpRequest, queryset: QuerySet[FileLock]) -> HttpResponse | None:
        actor = _actor(request)

        def apply(reason: str) -> None:
            _each(
                request,
                queryset,
                "Release",
                lambda o: locks.lock_release(lock_id=o.pk, actor=actor, reason=reason),
            )

        return _with_reason(
            self, request, queryset, action="release", title="Release file locks", apply=apply
        )


@admin.register(WorkItemEvent)
class WorkItemEventAdmin(FastListAdmin):
    list_display = ("created_at", "work_item", "kind", "from_status", "to_status", "actor")
    list_filter = (EventKindFilter, "created_at")
    search_fields = ("=work_item__id", "actor", "message")
    list_select_related = ("work_item",)
    date_hierarchy = "created_at"
    ordering = ("-created_at",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(DailyUsage)
class DailyUsageAdmin(FastListAdmin):
    """The budget's ledger: read-only (an edited count would silently move the budget)."""

    list_display = ("date", "spawns", "iterations")
    ordering = ("-date",)

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
        "duration_ms",
        "files_modified",
        "tests_passed",
        "tests_failed",
        "created_at",
    )
    list_select_related = ("worker", "work_item")
    search_fields = ("=work_item__id", "=worker__id")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "created_at", "last_used_at", "revoked_at", "active")
    list_filter = ("revoked_at",)
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

    @admin.action(description="Revoke selected keys (asks for a reason)")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> HttpResponse | None:
        def one(key: ApiKey, reason: str) -> bool:
            revoked = apikeys.apikey_revoke(key_id=key.pk)
            if revoked:  # the admin's history: who, what, why
                self.log_change(request, key, f"Revoked: {reason or 'no reason given'}")
            return revoked

        return _with_reason(
            self,
            request,
            queryset,
            action="revoke",
            title="Revoke API keys",
            apply=lambda reason: _each(request, queryset, "Revoke", lambda o: one(o, reason)),
        )


class AuditedPeriodicTaskAdmin(PeriodicTaskAdmin):
    """django-celery-beat's schedules, whose enable / disable / toggle / run actions now ask
    why and leave an entry in the admin's history (who, what, why)."""

    def _audited(
        self, request: HttpRequest, queryset: QuerySet[Any], action: str, run: Any
    ) -> HttpResponse | None:
        title = str(getattr(self, action).short_description)

        def apply(reason: str) -> None:
            schedules = list(queryset)
            run(request, queryset)
            for schedule in schedules:
                schedule.refresh_from_db(fields=["enabled"])
                state = "enabled" if schedule.enabled else "disabled"
                why = reason or "no reason given"
                self.log_change(request, schedule, f"{title} (now {state}): {why}")

        return _with_reason(self, request, queryset, action=action, title=title, apply=apply)

    @admin.action(description="Enable selected tasks")
    def enable_tasks(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        return self._audited(request, queryset, "enable_tasks", super().enable_tasks)

    @admin.action(description="Disable selected tasks")
    def disable_tasks(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        return self._audited(request, queryset, "disable_tasks", super().disable_tasks)

    @admin.action(description="Toggle activity of selected tasks")
    def toggle_tasks(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        return self._audited(request, queryset, "toggle_tasks", super().toggle_tasks)

    @admin.action(description="Run selected tasks now")
    def run_tasks(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        self.celery_app.loader.import_default_modules()
        unknown = sorted({s.task for s in queryset if self.celery_app.tasks.get(s.task) is None})
        if unknown:  # refused before asking why, so no history entry claims it ran
            messages.error(request, f"Not run: no such task {', '.join(unknown)}")
            return None
        return self._audited(request, queryset, "run_tasks", super().run_tasks)


admin.site.unregister(PeriodicTask)
admin.site.register(PeriodicTask, AuditedPeriodicTaskAdmin)
