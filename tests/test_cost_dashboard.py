"""The dashboard's money panel (orchestration/pages/costs.py): tokens and cost today and over 7
days per repository and per model, when the daily cost budget runs out at today's rate, a
bounded number of queries however many rows the ledger holds; the settings' checks and the
retention of the ledger's rows."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.core.checks import run_checks
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from orchestration.clock import budget_date, db_now
from orchestration.models import CostUsage
from orchestration.pages.costs import budget_outlook, cost_panel
from orchestration.services.sweeps import sweep_retention

NOON = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


def usage(day: dt.date, repo: str, model: str, cost: str, tokens: int = 100) -> None:
    CostUsage.objects.create(
        date=day,
        repo=repo,
        model=model,
        tokens_in=tokens,
        tokens_out=tokens // 10,
        cost_usd=Decimal(cost),
    )


@pytest.mark.django_db
def test_the_panel_groups_today_and_the_week_by_repo_and_by_model() -> None:
    now = db_now()
    today = budget_date(now)
    usage(today, "acme/widgets", "sonnet", "1.50")
    usage(today, "acme/gadgets", "opus", "2.00")
    usage(today - dt.timedelta(days=3), "acme/widgets", "opus", "4.00")
    usage(today - dt.timedelta(days=7), "acme/widgets", "sonnet", "99")  # 8 days ago: out

    panel = cost_panel(now)

    assert (panel.total.cost_today, panel.total.cost_week) == (Decimal("3.5"), Decimal("7.5"))
    repos = {r.name: (r.cost_today, r.cost_week, r.tokens_week) for r in panel.by_repo}
    assert repos == {
        "acme/widgets": (Decimal("1.5"), Decimal("5.5"), 220),
        "acme/gadgets": (Decimal("2"), Decimal("2"), 110),
    }
    models = {r.name: (r.cost_today, r.cost_week) for r in panel.by_model}
    assert models == {
        "opus": (Decimal("2"), Decimal("6")),
        "sonnet": (Decimal("1.5"), Decimal("1.5")),
    }
    assert [r.name for r in panel.by_model] == ["opus", "sonnet"]  # biggest spender first


@pytest.mark.django_db
def test_the_dashboard_shows_the_tables_and_the_outlook(
    staff_client: Client, settings: Any
) -> None:
    settings.DAILY_COST_BUDGET = 1_000_000.0
    usage(budget_date(db_now()), "acme/widgets", "claude-sonnet-4-5", "0.25", tokens=1234)

    page = staff_client.get("/").content.decode()

    assert 'id="cost-by-repo"' in page and 'id="cost-by-model"' in page
    assert "acme/widgets" in page and "claude-sonnet-4-5" in page
    assert "$0.2500" in page and "1357" in page  # 1234 in + 123 out
    assert 'id="cost-outlook"' in page and "daily cost budget $1,000,000.00" in page


@pytest.mark.django_db
def test_without_a_cost_budget_there_is_no_outlook(staff_client: Client, settings: Any) -> None:
    settings.DAILY_COST_BUDGET = 0.0
    page = staff_client.get("/").content.decode()
    assert 'id="cost-outlook"' not in page
    assert 'id="no-cost"' in page


def test_at_this_rate_the_budget_runs_out_at_a_time_today() -> None:
    # $6 by noon is $0.50 an hour: the $4 left last 8 hours.
    sentence = budget_outlook(now=NOON, spent=Decimal(6), budget=Decimal(10))
    assert sentence.startswith("At this rate the daily budget runs out at 20:00")


def test_a_slow_day_does_not_run_out(settings: Any) -> None:
    assert budget_outlook(now=NOON, spent=Decimal(3), budget=Decimal(10)).startswith(
        "Not at this rate"
    )
    assert budget_outlook(now=NOON, spent=Decimal(0), budget=Decimal(10)).startswith(
        "Not at this rate"
    )
    assert budget_outlook(now=NOON, spent=Decimal(3), budget=None) == ""


def test_a_budget_that_would_last_for_ages_does_not_break_the_page() -> None:
    # A cent by noon of a million dollars: at this rate it runs out some 100,000 years on.
    sentence = budget_outlook(now=NOON, spent=Decimal("0.01"), budget=Decimal(1_000_000))
    assert sentence.startswith("Not at this rate")


def test_a_spent_budget_says_until_when() -> None:
    sentence = budget_outlook(now=NOON, spent=Decimal(10), budget=Decimal(10))
    assert sentence == "The daily cost budget ($10) is spent: new attempts wait until 00:00."


def test_the_outlook_reads_the_clock_in_the_budgets_time_zone(settings: Any) -> None:
    settings.WHIM_TIMEZONE = "Asia/Kolkata"  # UTC+5:30: noon UTC is 17:30, the day began 18:30 UTC
    sentence = budget_outlook(now=NOON, spent=Decimal("17.5"), budget=Decimal(20))
    # $17.50 in 17.5 hours: $1 an hour, $2.50 left: 20:00 local.
    assert sentence.startswith("At this rate the daily budget runs out at 20:00")


@pytest.mark.django_db
def test_the_dashboards_queries_do_not_grow_with_the_ledger(staff_client: Client) -> None:
    staff_client.get("/")  # warm caches (session, permissions)
    with CaptureQueriesContext(connection) as few:
        staff_client.get("/")
    today = budget_date(db_now())
    CostUsage.objects.bulk_create(
        CostUsage(
            date=today - dt.timedelta(days=d),
            repo=f"acme/repo-{r}",
            model=f"model-{m}",
            cost_usd=Decimal(1),
        )
        for d in range(7)
        for r in range(40)
        for m in range(3)
    )
    with CaptureQueriesContext(connection) as many:
        page = staff_client.get("/").content.decode()
    assert len(many) == len(few)
    assert page.count('<tr><td class="mono">acme/repo-') == 10  # the top spenders only


# --- checks and retention -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "check_id"),
    [
        ("DAILY_COST_BUDGET", -1.0, "orchestration.E060"),
        ("ITEM_COST_CAP", float("nan"), "orchestration.E061"),
        ("MAX_COST_PER_ATTEMPT_USD", 0.0, "orchestration.E063"),
        ("AGENT_IDLE_TIMEOUT", 0, "orchestration.E064"),
        ("TEST_TIMEOUT", 0, "orchestration.E065"),
        ("FIX_ITERATIONS", -1, "orchestration.E066"),
        ("FIX_ITERATIONS", 21, "orchestration.E066"),
        ("WHIM_REVIEWER", "gpt", "orchestration.E067"),
        ("ANTHROPIC_BASE_URL", "ftp://x", "orchestration.E068"),
    ],
)
def test_bad_pipeline_settings_stop_startup(
    settings: Any, name: str, value: Any, check_id: str
) -> None:
    setattr(settings, name, value)
    assert check_id in {m.id for m in run_checks()}


def test_the_default_pipeline_settings_pass_the_checks() -> None:
    assert not [m for m in run_checks() if m.id and m.id.startswith("orchestration.E06")]


@pytest.mark.django_db
def test_retention_drops_ledger_rows_older_than_a_year_and_a_half() -> None:
    today = budget_date(db_now())
    usage(today - dt.timedelta(days=600), "a/b", "m", "1")
    usage(today - dt.timedelta(days=30), "a/b", "m", "1")

    counts = sweep_retention()

    assert counts["usage"] == 1
    assert list(CostUsage.objects.values_list("date", flat=True)) == [today - dt.timedelta(days=30)]
