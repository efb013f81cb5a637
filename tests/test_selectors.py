"""The read side: status and metrics summaries and the queue listing, on a known dataset.

The database clock is pinned (``orchestration.selectors.db_now``) so that "today" is a fixed
day whatever the hour the suite runs at.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest

from orchestration.models import (
    DailyUsage,
    DispatchState,
    Worker,
    WorkerMetrics,
    WorkerStatus,
    WorkItem,
    WorkItemStatus,
    WorkItemType,
)
from orchestration.selectors import metrics_summary, queue_list, status_summary
from tests.factories import WorkerFactory, WorkItemFactory

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2030, 1, 15, 12, 0, tzinfo=dt.UTC)
TODAY = NOW.date()


def ago(delta: dt.timedelta) -> dt.datetime:
    return NOW - delta


@pytest.fixture(autouse=True)
def _pinned_clock(settings: Any) -> Iterator[None]:
    settings.WHIM_TIMEZONE = "UTC"
    with mock.patch("orchestration.selectors.db_now", return_value=NOW):
        yield


def item(
    status: str,
    *,
    created: dt.datetime,
    completed: dt.datetime | None = None,
    **fields: Any,
) -> WorkItem:
    """A work item with its timestamps set (``created_at`` is auto_now_add, so updated after)."""
    row = WorkItemFactory.create(status=status, **fields)
    WorkItem.objects.filter(pk=row.pk).update(created_at=created, completed_at=completed)
    row.refresh_from_db()
    return row


def metrics(row: WorkItem, tokens_in: int, tokens_out: int) -> None:
    worker = WorkerFactory.create(work_item=row, status=WorkerStatus.COMPLETED)
    WorkerMetrics.objects.create(
        worker=worker, work_item=row, tokens_in=tokens_in, tokens_out=tokens_out
    )


@dataclasses.dataclass
class Dataset:
    oldest_queued: WorkItem
    newer_queued: WorkItem
    generating: WorkItem
    assigned: WorkItem
    in_progress: WorkItem
    finished: list[WorkItem]


@pytest.fixture
def dataset(settings: Any) -> Dataset:
    """Two queued, one generating, two active (one starting, one running worker), finished
    items today and before today, verification items, usage rows and token metrics."""
    settings.MAX_WORKERS = 7
    settings.DAILY_BUDGET = 40
    settings.COOLDOWN_SECONDS = 30
    settings.TOKEN_PRICE_IN_PER_MILLION = 2.0
    settings.TOKEN_PRICE_OUT_PER_MILLION = 10.0

    oldest_queued = item(WorkItemStatus.QUEUED, created=ago(dt.timedelta(hours=3)))
    newer_queued = item(WorkItemStatus.QUEUED, created=ago(dt.timedelta(hours=1)))
    generating = item(WorkItemStatus.GENERATING, created=ago(dt.timedelta(hours=5)), spec="")
    assigned = item(WorkItemStatus.ASSIGNED, created=ago(dt.timedelta(minutes=30)))
    WorkerFactory.create(work_item=assigned, status=WorkerStatus.STARTING)
    in_progress = item(WorkItemStatus.IN_PROGRESS, created=ago(dt.timedelta(minutes=40)))
    WorkerFactory.create(work_item=in_progress, status=WorkerStatus.RUNNING)
    # Finished workers are not active.
    WorkerFactory.create(work_item=in_progress, status=WorkerStatus.FAILED)

    # Completed today: 5 and 10 minutes of work (mean 7.5 minutes = 450,000 ms).
    done_a = item(
        WorkItemStatus.COMPLETED,
        created=ago(dt.timedelta(minutes=15)),
        completed=ago(dt.timedelta(minutes=10)),
    )
    done_b = item(
        WorkItemStatus.COMPLETED,
        created=ago(dt.timedelta(minutes=30)),
        completed=ago(dt.timedelta(minutes=20)),
    )
    failed_today = item(
        WorkItemStatus.FAILED,
        created=ago(dt.timedelta(hours=2)),
        completed=ago(dt.timedelta(hours=1)),
    )
    cancelled_today = item(
        WorkItemStatus.CANCELLED,
        created=ago(dt.timedelta(hours=2)),
        completed=ago(dt.timedelta(hours=1)),
    )
    # Finished yesterday (23:00): not today, and a long run that must not enter the mean.
    done_yesterday = item(
        WorkItemStatus.COMPLETED,
        created=ago(dt.timedelta(days=3)),
        completed=ago(dt.timedelta(hours=13)),
    )
    failed_yesterday = item(
        WorkItemStatus.FAILED,
        created=ago(dt.timedelta(days=2)),
        completed=ago(dt.timedelta(days=1)),
    )
    # Verification items, finished days ago: 2 passed, 1 failed, 1 without a verdict.
    verifications = [
        item(
            WorkItemStatus.COMPLETED,
            created=ago(dt.timedelta(days=5)),
            completed=ago(dt.timedelta(days=4)),
            type=WorkItemType.VERIFICATION,
            verification_passed=verdict,
        )
        for verdict in (True, True, False, None)
    ]
    # Tokens over every completed attempt, not just today's.
    metrics(done_a, 1_000_000, 200_000)
    metrics(done_b, 400_000, 50_000)
    metrics(done_yesterday, 100_000, 50_000)

    DailyUsage.objects.create(date=TODAY, spawns=7, iterations=123)
    DailyUsage.objects.create(date=TODAY - dt.timedelta(days=1), spawns=99, iterations=999)
    DispatchState.objects.create(pk=1, last_spawn_at=ago(dt.timedelta(minutes=2)))
    return Dataset(
        oldest_queued=oldest_queued,
        newer_queued=newer_queued,
        generating=generating,
        assigned=assigned,
        in_progress=in_progress,
        finished=[
            done_a,
            done_b,
            failed_today,
            cancelled_today,
            done_yesterday,
            failed_yesterday,
            *verifications,
        ],
    )


# --- status_summary ------------------------------------------------------------------------


def test_status_summary_reports_workers_queue_and_rate_limits(dataset: Dataset) -> None:
    summary = status_summary(broker_ok=True)

    assert summary == {
        "status": "healthy",
        "runtime": {"name": "fake", "isolated": False},  # the autouse test runtime
        "workers": {"active": 2, "maxWorkers": 7},
        "queue": {"size": 2, "oldest": dataset.oldest_queued.created_at.isoformat()},
        # The original client's ``status`` command reads these (today's finished items).
        "metrics": {"activeWorkers": 2, "queuedItems": 2, "completedToday": 2, "failedToday": 1},
        "reviews": {"queued": 0, "running": 0, "completedToday": 0, "failedToday": 0},
        "rateLimits": {
            "iterationsToday": 7,  # today's spawns, not yesterday's, not heartbeat iterations
            "dailyBudget": 40,
            "lastSpawn": ago(dt.timedelta(minutes=2)).isoformat(),
            "cooldownSeconds": 30,
        },
    }


def test_status_is_degraded_when_the_broker_is_unreachable(dataset: Dataset) -> None:
    assert status_summary(broker_ok=False)["status"] == "degraded"


def test_status_summary_of_an_empty_system() -> None:
    summary = status_summary(broker_ok=True)

    assert summary["workers"]["active"] == 0
    assert summary["queue"] == {"size": 0, "oldest": None}
    assert summary["rateLimits"]["iterationsToday"] == 0
    assert summary["rateLimits"]["lastSpawn"] is None


# --- metrics_summary -----------------------------------------------------------------------


def test_metrics_summary_counts_todays_throughput(dataset: Dataset) -> None:
    summary = metrics_summary()

    assert summary["activeWorkers"] == 2
    assert summary["queuedItems"] == 2
    assert summary["completedToday"] == 2
    assert summary["failedToday"] == 1
    assert summary["iterationsToday"] == 7
    assert summary["dailyBudget"] == 40
    assert summary["successRate"] == pytest.approx(0.6667)


def test_average_completion_time_is_todays_mean_in_milliseconds(dataset: Dataset) -> None:
    assert metrics_summary()["avgCompletionTime"] == 450_000


def test_token_usage_and_cost_follow_the_configured_prices(dataset: Dataset) -> None:
    usage = metrics_summary()["tokenUsage"]

    assert usage["tokensIn"] == 1_500_000
    assert usage["tokensOut"] == 300_000
    # 1.5M in at $2/M + 0.3M out at $10/M
    assert usage["estimatedCostUsd"] == pytest.approx(6.0)


def test_verification_counts_passed_failed_and_the_pass_rate(dataset: Dataset) -> None:
    assert metrics_summary()["verification"] == {
        "total": 4,
        "passed": 2,
        "failed": 1,
        "pending": 0,  # all finished days ago
        "passRate": pytest.approx(0.6667),
    }


def test_metrics_of_an_empty_system_are_zero_not_errors() -> None:
    summary = metrics_summary()

    assert summary["completedToday"] == summary["failedToday"] == 0
    assert summary["successRate"] == 0.0
    assert summary["avgCompletionTime"] == 0
    assert summary["tokenUsage"] == {"tokensIn": 0, "tokensOut": 0, "estimatedCostUsd": 0.0}
    assert summary["verification"]["passRate"] == 0.0


def test_today_is_the_calendar_day_of_the_configured_time_zone(settings: Any) -> None:
    settings.WHIM_TIMEZONE = "America/New_York"
    # 03:00 UTC on the 15th is 22:00 on the 14th in New York (UTC-5).
    late_evening = dt.datetime(2030, 1, 15, 3, 0, tzinfo=dt.UTC)
    local_midnight = dt.datetime(2030, 1, 14, 5, 0, tzinfo=dt.UTC)
    DailyUsage.objects.create(date=dt.date(2030, 1, 14), spawns=3)
    DailyUsage.objects.create(date=dt.date(2030, 1, 15), spawns=50)
    item(
        WorkItemStatus.COMPLETED,
        created=local_midnight - dt.timedelta(hours=1),
        completed=local_midnight + dt.timedelta(minutes=1),
    )
    item(
        WorkItemStatus.COMPLETED,
        created=local_midnight - dt.timedelta(hours=2),
        completed=local_midnight - dt.timedelta(minutes=1),
    )

    with mock.patch("orchestration.selectors.db_now", return_value=late_evening):
        summary = metrics_summary()
        status = status_summary(broker_ok=True)

    assert summary["iterationsToday"] == status["rateLimits"]["iterationsToday"] == 3
    assert summary["completedToday"] == 1


# --- queue_list ----------------------------------------------------------------------------


def test_the_default_queue_view_shows_pending_and_active_items_only(dataset: Dataset) -> None:
    listing = queue_list()

    assert [row.pk for row in listing["items"]] == [
        # newest first
        dataset.assigned.pk,
        dataset.in_progress.pk,
        dataset.newer_queued.pk,
        dataset.oldest_queued.pk,
        dataset.generating.pk,
    ]
    assert listing["nextCursor"] is None


def test_queue_stats_count_every_status(dataset: Dataset) -> None:
    stats = queue_list()["stats"]

    assert stats["total"] == 5 + len(dataset.finished) == 15
    assert stats["byStatus"] == {
        "generating": 1,
        "queued": 2,
        "assigned": 1,
        "in_progress": 1,
        "paused": 0,
        "completed": 7,
        "failed": 2,
        "cancelled": 1,
    }
    assert stats["byPriority"] == {"low": 0, "medium": 15, "high": 0, "critical": 0}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("all", 15),
        ("active", 2),
        ("queued", 2),
        ("generating", 1),
        ("failed", 2),
        ("completed", 7),
        ("cancelled", 1),
    ],
)
def test_a_status_filter_narrows_the_listing(dataset: Dataset, status: str, expected: int) -> None:
    listing = queue_list(status=status)

    assert len(listing["items"]) == expected
    if status not in ("all", "active"):
        assert {row.status for row in listing["items"]} == {status}


def test_type_and_repo_filters_narrow_items_and_stats(dataset: Dataset) -> None:
    listing = queue_list(status="all", type=WorkItemType.VERIFICATION)

    assert len(listing["items"]) == 4
    assert listing["stats"]["total"] == 4

    repo = dataset.oldest_queued.repo
    by_repo = queue_list(status="all", repo=repo)
    assert by_repo["items"]
    assert {row.repo for row in by_repo["items"]} == {repo}
    assert by_repo["stats"]["total"] == WorkItem.objects.filter(repo=repo).count()


def test_the_cursor_pages_through_every_item_once(dataset: Dataset) -> None:
    seen: list[Any] = []
    cursor = ""
    pages = 0
    while True:
        listing = queue_list(status="all", cursor=cursor, limit=4)
        seen += [row.pk for row in listing["items"]]
        pages += 1
        if listing["nextCursor"] is None:
            break
        cursor = listing["nextCursor"]

    assert pages == 4
    assert len(seen) == len(set(seen)) == 15
    assert seen == list(
        WorkItem.objects.order_by("-created_at", "-pk").values_list("pk", flat=True)
    )


def test_active_workers_count_starting_and_running_only(dataset: Dataset) -> None:
    assert Worker.objects.count() == 6  # 2 active, 4 finished
    assert status_summary(broker_ok=True)["workers"]["active"] == 2


def test_status_summary_counts_the_review_queue(dataset: Dataset) -> None:
    now = ago(dt.timedelta(minutes=1))
    for status in ("queued", "queued", "in_progress", "completed", "failed", "cancelled"):
        WorkItemFactory.create(
            type=WorkItemType.REVIEW,
            status=status,
            completed_at=now if status in ("completed", "failed", "cancelled") else None,
        )
    WorkItemFactory.create(status="queued")  # not a review

    assert status_summary(broker_ok=True)["reviews"] == {
        "queued": 2,
        "running": 1,
        "completedToday": 1,
        "failedToday": 1,
    }
