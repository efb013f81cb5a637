"""The dashboard's money panel: tokens and cost today and over the last 7 days, per repository
and per model, from the cost ledger's ``CostUsage`` rows (one query), and when, at today's
rate, the daily cost budget runs out. Reads only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Q, Sum

from orchestration.clock import budget_date, next_budget_day_start
from orchestration.models import CostUsage
from orchestration.services.costs import daily_cost_budget, usd_text

# Rows per table: the biggest spenders of the week (the admin lists every row).
ROWS_SHOWN = 10
# (repo, model) groups read at most: bounded whatever the week held.
GROUPS_READ = 2000


@dataclasses.dataclass(frozen=True)
class CostRow:
    """One repository's or model's spend: today and over the last 7 days (today included)."""

    name: str
    tokens_today: int = 0
    cost_today: Decimal = Decimal(0)
    tokens_week: int = 0
    cost_week: Decimal = Decimal(0)

    def plus(self, other: CostRow) -> CostRow:
        return dataclasses.replace(
            self,
            tokens_today=self.tokens_today + other.tokens_today,
            cost_today=self.cost_today + other.cost_today,
            tokens_week=self.tokens_week + other.tokens_week,
            cost_week=self.cost_week + other.cost_week,
        )


@dataclasses.dataclass(frozen=True)
class CostPanel:
    total: CostRow
    by_repo: list[CostRow]
    by_model: list[CostRow]
    # DAILY_COST_BUDGET, or None when it is off; the sentence saying when it runs out.
    budget: Decimal | None
    runs_out: str

    @property
    def tables(self) -> list[tuple[str, list[CostRow]]]:
        """The two tables the dashboard draws, titled by what they group on."""
        return [("repo", self.by_repo), ("model", self.by_model)]


def _top(rows: dict[str, CostRow]) -> list[CostRow]:
    ordered = sorted(rows.values(), key=lambda r: (-r.cost_week, -r.tokens_week, r.name))
    return ordered[:ROWS_SHOWN]


def cost_panel(now: dt.datetime) -> CostPanel:
    """The week's spend grouped by repo and by model, and the budget's outlook."""
    today = budget_date(now)
    groups = (
        CostUsage.objects.filter(date__gte=today - dt.timedelta(days=6), date__lte=today)
        .values("repo", "model")
        .annotate(
            ti=Sum("tokens_in", filter=Q(date=today)),
            to=Sum("tokens_out", filter=Q(date=today)),
            ct=Sum("cost_usd", filter=Q(date=today)),
            wi=Sum("tokens_in"),
            wo=Sum("tokens_out"),
            cw=Sum("cost_usd"),
        )
        .order_by("-cw", "repo", "model")[:GROUPS_READ]
    )
    total = CostRow(name="all")
    by_repo: dict[str, CostRow] = {}
    by_model: dict[str, CostRow] = {}
    for g in groups:
        amounts = CostRow(
            name="",
            tokens_today=(g["ti"] or 0) + (g["to"] or 0),
            cost_today=g["ct"] or Decimal(0),
            tokens_week=(g["wi"] or 0) + (g["wo"] or 0),
            cost_week=g["cw"] or Decimal(0),
        )
        total = total.plus(amounts)
        repo, model = g["repo"], g["model"] or "(unknown)"
        by_repo[repo] = by_repo.get(repo, CostRow(name=repo)).plus(amounts)
        by_model[model] = by_model.get(model, CostRow(name=model)).plus(amounts)
    budget = daily_cost_budget()
    return CostPanel(
        total=total,
        by_repo=_top(by_repo),
        by_model=_top(by_model),
        budget=budget,
        runs_out=budget_outlook(now=now, spent=total.cost_today, budget=budget),
    )


def budget_outlook(*, now: dt.datetime, spent: Decimal, budget: Decimal | None) -> str:
    """When the daily cost budget runs out at today's rate (today's cost over the time elapsed
    since the day began in WHIM_TIMEZONE); "" when there is no budget."""
    if budget is None:
        return ""
    day_end = next_budget_day_start(now)
    if spent >= budget:
        return (
            f"The daily cost budget (${usd_text(budget)}) is spent: new attempts wait until "
            f"{_clock(day_end)}."
        )
    elapsed = (now - (day_end - dt.timedelta(days=1))).total_seconds()
    if spent <= 0 or elapsed <= 0:
        return f"Not at this rate: nothing spent today of the ${usd_text(budget)} budget."
    rate = float(spent) / elapsed  # dollars per second
    lasts = float(budget - spent) / rate  # seconds; may be ages (a datetime that far overflows)
    if lasts >= (day_end - now).total_seconds():
        return (
            f"Not at this rate: ${usd_text(spent)} of ${usd_text(budget)} spent so far; "
            "the budget lasts the day."
        )
    return (
        f"At this rate the daily budget runs out at {_clock(now + dt.timedelta(seconds=lasts))} "
        f"(${usd_text(spent)} of ${usd_text(budget)} spent so far)."
    )


def _clock(when: dt.datetime) -> str:
    """HH:MM in WHIM_TIMEZONE, the zone the budget's day is counted in."""
    return f"{when.astimezone(ZoneInfo(settings.WHIM_TIMEZONE)):%H:%M}"
