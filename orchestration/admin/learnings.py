"""Admin for learnings: what attempts wrote about their repos, handed to later attempts.

Read-only rows (an agent wrote them; nobody edits them into something else), listed by repo
and searchable. An operator with the delete permission may delete one: a learning is text a
model wrote that later prompts will read, so a misleading one must be removable.
"""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.template.defaultfilters import truncatechars

from orchestration.admin.base import FastListAdmin, RecentValuesFilter
from orchestration.models import Learning


@admin.register(Learning)
class LearningAdmin(FastListAdmin):
    list_display = ("created_at", "repo", "summary", "work_item")
    list_filter = (RecentValuesFilter,)
    search_fields = ("repo", "=work_item__id")
    date_hierarchy = "created_at"
    list_select_related = ("work_item",)
    ordering = ("-created_at",)

    @admin.display(description="learning")
    def summary(self, obj: Learning) -> str:
        return truncatechars(obj.content, 120)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return admin.ModelAdmin.has_delete_permission(self, request, obj)
