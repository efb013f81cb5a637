"""The beat schedules' admin: django-celery-beat's ``PeriodicTask`` admin, replaced by one
whose enable / disable / toggle / run actions ask why and leave an entry in the admin's
history (who, what, why)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django_celery_beat.admin import PeriodicTaskAdmin
from django_celery_beat.models import PeriodicTask

from orchestration.admin.base import with_reason


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

        return with_reason(self, request, queryset, action=action, title=title, apply=apply)

    @admin.action(description="Enable selected tasks", permissions=["change"])
    def enable_tasks(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        return self._audited(request, queryset, "enable_tasks", super().enable_tasks)

    @admin.action(description="Disable selected tasks", permissions=["change"])
    def disable_tasks(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        return self._audited(request, queryset, "disable_tasks", super().disable_tasks)

    @admin.action(description="Toggle activity of selected tasks", permissions=["change"])
    def toggle_tasks(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        return self._audited(request, queryset, "toggle_tasks", super().toggle_tasks)

    @admin.action(description="Run selected tasks now", permissions=["change"])
    def run_tasks(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        self.celery_app.loader.import_default_modules()
        unknown = sorted({s.task for s in queryset if self.celery_app.tasks.get(s.task) is None})
        if unknown:  # refused before asking why, so no history entry claims it ran
            messages.error(request, f"Not run: no such task {', '.join(unknown)}")
            return None
        return self._audited(request, queryset, "run_tasks", super().run_tasks)


# django-celery-beat registers its own admin first (it is listed before orchestration in
# INSTALLED_APPS, and autodiscover follows that order); this one takes its place.
admin.site.unregister(PeriodicTask)
admin.site.register(PeriodicTask, AuditedPeriodicTaskAdmin)
