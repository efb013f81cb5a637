"""The ledgers: what was spent per calendar day in WHIM_TIMEZONE.

``DailyUsage`` counts attempts started (the spawn budget, DAILY_BUDGET); ``CostUsage`` holds the
tokens and money the cost ledger (``services.costs``) charged per day, repository and model (the
cost budget, DAILY_COST_BUDGET, and the dashboard). A new date is a new row: nothing resets.
Re-exported by ``orchestration.models``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

from django.db import models


class DailyUsage(models.Model):
    """Budget spent on one calendar date in WHIM_TIMEZONE. A new date is a new row: no reset."""

    date = models.DateField(primary_key=True)
    spawns = models.PositiveIntegerField(default=0)
    iterations = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.date}: {self.spawns} spawns"


class CostUsage(models.Model):
    """Tokens and money charged on one date (WHIM_TIMEZONE) to one repo and model: the cost
    ledger's totals (services.costs), read by the dashboard and the daily cost budget."""

    date = models.DateField()
    repo = models.CharField(max_length=200)
    model = models.CharField(max_length=100, blank=True, default="")
    tokens_in = models.BigIntegerField(default=0)
    tokens_out = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal(0))

    class Meta:
        verbose_name_plural = "cost usage"
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["date", "repo", "model"], name="costusage_day"),
        ]

    def __str__(self) -> str:
        return f"{self.date} {self.repo} {self.model or '(model unknown)'}: ${self.cost_usd}"
