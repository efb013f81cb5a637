"""PR review rows."""

from __future__ import annotations

from django.db import models

from orchestration.models import WorkItem


class PRReview(models.Model):
    """A review of a work item's pull request: the model used and its findings."""

    work_item = models.ForeignKey(
        WorkItem, null=True, blank=True, on_delete=models.SET_NULL, related_name="reviews"
    )
    repo = models.CharField(max_length=200, blank=True, default="")
    pr_number = models.PositiveIntegerField(null=True, blank=True, db_index=True)
    model_used = models.CharField(max_length=100, blank=True, default="")
    findings = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"review of {self.repo}#{self.pr_number}"


class WebhookDelivery(models.Model):
    """A GitHub webhook delivery seen once: a redelivery with the same id is a no-op."""

    delivery_id = models.CharField(max_length=100, unique=True)
    event = models.CharField(max_length=50)
    action = models.CharField(max_length=50, blank=True, default="")
    repo = models.CharField(max_length=200, blank=True, default="")
    pr_number = models.PositiveIntegerField(null=True, blank=True)
    # What it did: "review_stored" or "ignored" (with why in ``note``).
    outcome = models.CharField(max_length=20)
    note = models.CharField(max_length=200, blank=True, default="")
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event} {self.delivery_id}"
