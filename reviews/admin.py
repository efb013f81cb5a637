"""Admin for PR reviews and GitHub webhook deliveries: read-only lists, fast at any size."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils.safestring import SafeString

from intake.issues import Outcome
from orchestration.admin.base import FastListAdmin, RecentValuesFilter
from reviews.models import PRReview, WebhookDelivery


@admin.register(PRReview)
class PRReviewAdmin(FastListAdmin):
    """Reviews as stored (by a worker's complete call or the GitHub webhook): read-only."""

    list_display = ("repo", "pr_number", "work_item", "model_used", "created_at")
    list_filter = (RecentValuesFilter,)
    search_fields = ("repo", "=work_item__id", "=pr_number")
    date_hierarchy = "created_at"
    list_select_related = ("work_item",)
    exclude = ("findings",)  # shown rendered instead (``findings_shown``)

    @admin.display(description="findings")
    def findings_shown(self, obj: PRReview) -> SafeString:
        """The findings as the console shows them (either shape), every string escaped."""
        return SafeString(render_to_string("reviews/_findings.html", {"findings": obj.findings}))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [f for f in super().get_readonly_fields(request, obj) if f != "findings"] + [
            "findings_shown"
        ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


INTAKE_OUTCOMES = (
    Outcome.ITEM_CREATED,
    Outcome.ITEM_EXISTS,
    Outcome.ITEM_REQUEUED,
    Outcome.ITEM_CANCELLED,
    Outcome.QUEUE_FULL,
    Outcome.IGNORED,
)


class DeliveryEventFilter(RecentValuesFilter):
    title = "event"
    parameter_name = "event"
    field = "event"
    order_by = "-received_at"


class DeliveryOutcomeFilter(admin.SimpleListFilter):
    title = "outcome"
    parameter_name = "outcome"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        outcomes = ("review_stored", *INTAKE_OUTCOMES)
        return [(o, o.replace("_", " ")) for o in outcomes]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        return queryset.filter(outcome=self.value()) if self.value() else queryset


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(FastListAdmin):
    """What GitHub sent and what Whim did with it (read-only: the log of deliveries)."""

    list_display = ("received_at", "event", "action", "repo", "pr_number", "outcome", "note")
    list_filter = (DeliveryEventFilter, DeliveryOutcomeFilter)
    search_fields = ("=delivery_id", "repo")
    date_hierarchy = "received_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
