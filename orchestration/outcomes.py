"""What attempts leave behind: their reported metrics and the learnings handed to later
attempts on the same repository. Re-exported by ``orchestration.models``."""

from __future__ import annotations

from decimal import Decimal

from django.db import models


class WorkerMetrics(models.Model):
    """What an attempt reported on completion: tokens, duration, files, tests."""

    worker = models.OneToOneField(
        "orchestration.Worker", on_delete=models.CASCADE, related_name="metrics"
    )
    work_item = models.ForeignKey(
        "orchestration.WorkItem", on_delete=models.CASCADE, related_name="metrics"
    )
    tokens_in = models.BigIntegerField(default=0)
    tokens_out = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal(0))
    iterations = models.PositiveIntegerField(default=0)
    duration_ms = models.BigIntegerField(default=0)
    files_modified = models.PositiveIntegerField(default=0)
    tests_run = models.PositiveIntegerField(default=0)
    tests_passed = models.PositiveIntegerField(default=0)
    tests_failed = models.PositiveIntegerField(default=0)
    test_status = models.CharField(max_length=40, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name_plural = "worker metrics"

    def __str__(self) -> str:
        return f"metrics of {self.worker_id}"


class Learning(models.Model):
    """Something an attempt learned about its repo, handed to later attempts there
    (``GET /api/learnings``). Outlives its item (SET_NULL); retention goes by its own age."""

    repo = models.CharField(max_length=200, db_index=True)
    spec = models.TextField(blank=True, default="")  # the spec of the item it came from
    content = models.TextField()
    work_item = models.ForeignKey(
        "orchestration.WorkItem",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="learnings",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"learning for {self.repo}"
