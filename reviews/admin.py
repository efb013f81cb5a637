from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from orchestration.admin import FastListAdmin
from reviews.models import PRReview, WebhookDelivery


@admin.register(PRReview)
class PRReviewAdmin(admin.ModelAdmin):
    list_display = ("repo", "pr_number", "work_item", "model_used", "created_at")
    search_fields = ("repo", "=work_item__id")
    list_select_related = ("work_item",)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(FastListAdmin):
    """What GitHub sent and what Whim did with it (read-only: the log of deliveries)."""

    list_display = ("received_at", "event", "action", "repo", "pr_number", "outcome", "note")
    list_filter = ("event", "outcome")
    search_fields = ("=delivery_id", "repo")
    date_hierarchy = "received_at"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
