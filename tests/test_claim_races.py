"""The claim under contention: real PostgreSQL, many connections at once."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from django.db import connection

from orchestration.models import DailyUsage, Worker, WorkItem, WorkItemStatus
from orchestration.services.dispatch import dispatch_claim_one
from tests.factories import WorkItemFactory

pytestmark = pytest.mark.django_db(transaction=True)


def run_concurrently(n: int, target: Callable[[], Any]) -> list[Any]:
    """Run ``target`` in ``n`` threads (each with its own database connection), released
    together by a barrier; returns every result, re-raising the first error."""
    barrier = threading.Barrier(n)
    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def body() -> None:
        try:
            barrier.wait(timeout=30)
            out = target()
            with lock:
                results.append(out)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=body) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    if errors:
        raise errors[0]
    return results


def claim_until_empty(use_gate: bool) -> Callable[[], list[str]]:
    def loop() -> list[str]:
        claimed = []
        while (worker_id := dispatch_claim_one(use_gate=use_gate)) is not None:
            claimed.append(str(worker_id))
        return claimed

    return loop


def test_twenty_claimers_over_a_hundred_items_claim_each_exactly_once() -> None:
    WorkItemFactory.create_batch(100)

    per_thread = run_concurrently(20, claim_until_empty(use_gate=False))

    worker_ids = [w for batch in per_thread for w in batch]
    assert len(worker_ids) == len(set(worker_ids)) == 100
    claimed_items = Counter(
        Worker.objects.filter(pk__in=worker_ids).values_list("work_item_id", flat=True)
    )
    assert len(claimed_items) == 100
    assert set(claimed_items.values()) == {1}
    assert WorkItem.objects.filter(status=WorkItemStatus.ASSIGNED).count() == 100
    assert sum(1 for batch in per_thread if batch) > 1, "the claimers did not actually race"


def test_gated_claimers_never_exceed_capacity_and_leave_the_rest_queued(settings: Any) -> None:
    settings.MAX_WORKERS = 3
    WorkItemFactory.create_batch(20)

    run_concurrently(10, claim_until_empty(use_gate=True))

    assert Worker.objects.filter(status__in=Worker.ACTIVE).count() == 3
    assert WorkItem.objects.filter(status=WorkItemStatus.ASSIGNED).count() == 3
    # Whim's bug: an item claimed while at capacity stayed `assigned` forever. Here the gate
    # closes before the item is taken, so everything else is still plainly queued.
    assert WorkItem.objects.filter(status=WorkItemStatus.QUEUED).count() == 17


def test_claim_order_is_execution_first_then_priority_then_age() -> None:
    old_low = WorkItemFactory.create(priority="low")
    verification = WorkItemFactory.create(priority="critical", type="verification")
    medium = WorkItemFactory.create(priority="medium")
    critical = WorkItemFactory.create(priority="critical")
    newer_critical = WorkItemFactory.create(priority="critical")
    order = []
    while (worker_id := dispatch_claim_one(use_gate=False)) is not None:
        order.append(Worker.objects.get(pk=worker_id).work_item_id)
    assert order == [critical.pk, newer_critical.pk, medium.pk, old_low.pk, verification.pk]


def test_an_item_waiting_for_its_retry_time_is_not_claimed() -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    WorkItemFactory.create(next_retry_at=later)
    assert dispatch_claim_one(use_gate=False) is None


def test_ten_claims_racing_at_the_budget_boundary_never_overspend(settings: Any) -> None:
    settings.DAILY_BUDGET = 5
    WorkItemFactory.create_batch(30)
    # Two units already spent today: three remain.
    from orchestration.clock import budget_date, db_now

    DailyUsage.objects.create(date=budget_date(db_now()), spawns=2)

    results = run_concurrently(10, lambda: dispatch_claim_one())

    assert sum(1 for r in results if r is not None) == 3
    assert DailyUsage.objects.get().spawns == 5
    assert Worker.objects.count() == 3
    assert WorkItem.objects.filter(status=WorkItemStatus.ASSIGNED).count() == 3


def test_the_day_boundary_in_a_non_utc_zone_starts_a_fresh_budget(settings: Any) -> None:
    settings.DAILY_BUDGET = 2
    settings.WHIM_TIMEZONE = "America/New_York"
    WorkItemFactory.create_batch(5)
    zone = ZoneInfo("America/New_York")
    before_midnight = dt.datetime(2026, 3, 7, 23, 59, 30, tzinfo=zone)  # 04:59:30 UTC
    after_midnight = dt.datetime(2026, 3, 8, 0, 0, 30, tzinfo=zone)

    def database_clock(at: dt.datetime) -> Any:  # the claim reads it in SQL
        return mock.patch("orchestration.clock.CLOCK_SQL", f"'{at.isoformat()}'::timestamptz")

    with database_clock(before_midnight):
        spent = [dispatch_claim_one() for _ in range(3)]
    assert [w is not None for w in spent] == [True, True, False]  # budget exhausted

    with database_clock(after_midnight):
        assert dispatch_claim_one() is not None

    usage = dict(DailyUsage.objects.values_list("date", "spawns"))
    assert usage == {dt.date(2026, 3, 7): 2, dt.date(2026, 3, 8): 1}


def test_cooldown_holds_the_next_claim_back(settings: Any) -> None:
    settings.COOLDOWN_SECONDS = 60
    WorkItemFactory.create_batch(2)
    assert dispatch_claim_one() is not None
    assert dispatch_claim_one() is None
    assert WorkItem.objects.filter(status=WorkItemStatus.QUEUED).count() == 1
