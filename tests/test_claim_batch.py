"""The batch claim (issue 12): up to n items in one transaction under one gate lock, decided
as n single claims would be — capacity per node and overall, the day's attempts, today's
money, the cooldown, labels, reviews per repository — in a bounded number of statements.
Real PostgreSQL; the concurrency test races real connections (as test_claim_races does)."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from orchestration.choices import EventKind
from orchestration.clock import budget_date, db_now
from orchestration.models import (
    CostUsage,
    DailyUsage,
    Worker,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
    WorkItemType,
)
from orchestration.services.claim_walk import claim_open, claim_page
from orchestration.services.dispatch import dispatch_claim, dispatch_run
from orchestration.services.nodes import node_register
from tests.factories import WorkItemFactory
from tests.test_claim_races import run_concurrently


def node(name: str, capacity: int, labels: list[str] | None = None) -> None:
    node_register(name=name, runtime="fake", capacity=capacity, labels=labels or [])


@pytest.mark.django_db(transaction=True)
def test_racing_batch_claimers_stay_within_every_nodes_capacity_and_max_workers(
    settings: Any,
) -> None:
    settings.MAX_WORKERS = 7
    for name in ("a", "b", "c"):
        node(name, capacity=3)  # 9 slots, but only 7 attempts may run
    WorkItemFactory.create_batch(30)

    def claim_batches() -> list[str]:
        got: list[str] = []
        while batch := dispatch_claim(4):
            got += [str(w) for w in batch]
        return got

    per_thread = run_concurrently(8, claim_batches)

    ids = [w for batch in per_thread for w in batch]
    assert len(ids) == len(set(ids)) == 7
    per_node = Counter(
        Worker.objects.filter(status__in=Worker.ACTIVE).values_list("node_id", flat=True)
    )
    assert sum(per_node.values()) == 7
    assert max(per_node.values()) <= 3
    items = Counter(Worker.objects.values_list("work_item_id", flat=True))
    assert set(items.values()) == {1}  # one attempt per item
    assert WorkItem.objects.filter(status=WorkItemStatus.ASSIGNED).count() == 7
    assert sum(DailyUsage.objects.values_list("spawns", flat=True)) == 7
    assert WorkItemEvent.objects.filter(kind=EventKind.CLAIMED).count() == 7


@pytest.mark.django_db(transaction=True)
def test_racing_batch_claimers_take_each_item_once_per_node_capacity(settings: Any) -> None:
    settings.MAX_WORKERS = 1000
    node("a", capacity=5)
    node("b", capacity=6)
    WorkItemFactory.create_batch(40)

    per_thread = run_concurrently(6, lambda: [str(w) for w in dispatch_claim(50)])

    ids = [w for batch in per_thread for w in batch]
    assert len(ids) == len(set(ids)) == 11
    per_node = Counter(Worker.objects.values_list("node_id", flat=True))
    assert per_node == {"a": 5, "b": 6}


pytestmark = pytest.mark.django_db


def test_the_days_attempt_budget_is_counted_down_inside_a_batch(settings: Any) -> None:
    settings.DAILY_BUDGET = 3
    WorkItemFactory.create_batch(10)
    assert len(dispatch_claim(10)) == 3
    assert dispatch_claim(10) == []
    assert list(DailyUsage.objects.values_list("spawns", flat=True)) == [3]


def test_a_cooldown_makes_the_batch_one(settings: Any) -> None:
    settings.COOLDOWN_SECONDS = 60
    WorkItemFactory.create_batch(5)
    assert len(dispatch_claim(5)) == 1
    assert dispatch_claim(5) == []
    assert dispatch_run() == 0


def test_max_workers_bounds_a_batch(settings: Any) -> None:
    settings.MAX_WORKERS = 4
    WorkItemFactory.create_batch(10)
    assert len(dispatch_claim(50)) == 4
    assert dispatch_claim(50) == []


def test_the_daily_cost_budget_holds_a_whole_batch(settings: Any) -> None:
    settings.DAILY_COST_BUDGET = 1.0
    WorkItemFactory.create_batch(5)
    CostUsage.objects.create(
        date=budget_date(db_now()), repo="acme/x", model="m", cost_usd=Decimal("1.5")
    )
    assert dispatch_claim(5) == []


def test_labels_are_honoured_and_an_item_no_node_can_take_does_not_hold_up_the_rest(
    settings: Any,
) -> None:
    settings.MAX_WORKERS = 100
    node("gpu", capacity=1, labels=["gpu"])
    node("cpu", capacity=5)
    gpu = [WorkItemFactory.create(metadata={"nodeLabels": ["gpu"]}) for _ in range(3)]
    arm = WorkItemFactory.create(metadata={"nodeLabels": ["arm"]})
    plain = WorkItemFactory.create_batch(3)

    claimed = Worker.objects.filter(pk__in=dispatch_claim(10))

    placed = {w.work_item_id: w.node_id for w in claimed}
    assert placed == {gpu[0].pk: "gpu", **{p.pk: "cpu" for p in plain}}
    assert arm.pk not in placed
    assert set(
        WorkItem.objects.filter(pk__in=[g.pk for g in gpu[1:]]).values_list("status", flat=True)
    ) == {WorkItemStatus.QUEUED}


def test_a_batch_takes_one_review_per_repository_when_reviews_are_limited(
    settings: Any,
) -> None:
    settings.REVIEW_CONCURRENCY_PER_REPO = 1
    WorkItemFactory.create_batch(3, type=WorkItemType.REVIEW, repo="acme/one")
    total = sum(len(dispatch_claim(10)) for _ in range(3))
    assert total == 1
    running = WorkItem.objects.filter(status=WorkItemStatus.ASSIGNED, type=WorkItemType.REVIEW)
    assert running.count() == 1


def test_attempt_numbers_and_events_per_item(settings: Any) -> None:
    items = WorkItemFactory.create_batch(3)
    first = Worker.objects.filter(pk__in=dispatch_claim(3))
    assert {w.attempt for w in first} == {1}
    WorkItem.objects.filter(pk__in=[i.pk for i in items]).update(status=WorkItemStatus.QUEUED)
    Worker.objects.update(status="failed")
    second = Worker.objects.filter(pk__in=dispatch_claim(3))
    assert {w.attempt for w in second} == {2}
    events = WorkItemEvent.objects.filter(kind=EventKind.CLAIMED)
    assert events.count() == 6
    assert all(e.data["node"] and e.data["attempt"] in (1, 2) for e in events)
    for w in second:
        assert WorkItem.objects.get(pk=w.work_item_id).worker_id == w.pk


def test_a_batch_costs_the_same_statements_as_a_single_claim(settings: Any) -> None:
    settings.MAX_WORKERS = 1000
    WorkItemFactory.create_batch(41)
    dispatch_claim(1)  # the gate row, the implicit node and the day's usage row exist now
    with CaptureQueriesContext(connection) as one:
        assert len(dispatch_claim(1)) == 1
    with CaptureQueriesContext(connection) as many:
        assert len(dispatch_claim(30)) == 30
    assert len(many.captured_queries) <= len(one.captured_queries) + 1
    assert len(many.captured_queries) <= 14, [q["sql"][:80] for q in many.captured_queries]


def test_items_no_node_takes_do_not_hold_up_the_rest_when_the_room_is_small(
    settings: Any,
) -> None:
    settings.MAX_WORKERS = 2  # the first page is as long as the room: two rows
    arm = [WorkItemFactory.create(metadata={"nodeLabels": ["arm"]}) for _ in range(3)]
    plain = WorkItemFactory.create_batch(2)

    claimed = Worker.objects.filter(pk__in=dispatch_claim(10))

    assert {w.work_item_id for w in claimed} == {p.pk for p in plain}
    assert set(
        WorkItem.objects.filter(pk__in=[a.pk for a in arm]).values_list("status", flat=True)
    ) == {WorkItemStatus.QUEUED}


def lockable_elsewhere() -> int:
    """How many queued rows another connection could lock now."""

    def count() -> int:
        with transaction.atomic():
            return len(
                list(
                    WorkItem.objects.select_for_update(skip_locked=True)
                    .filter(status=WorkItemStatus.QUEUED)
                    .values_list("pk", flat=True)
                )
            )

    [n] = run_concurrently(1, count)
    return int(n)


@pytest.mark.django_db(transaction=True)
def test_a_claim_locks_no_more_queued_rows_than_the_room_and_none_at_capacity(
    settings: Any,
) -> None:
    settings.MAX_WORKERS = 3
    WorkItemFactory.create_batch(2)
    assert len(dispatch_claim(2)) == 2  # one slot left
    WorkItemFactory.create_batch(5)

    with transaction.atomic():
        opening = claim_open(gate=True, page=claim_page(50))
        assert opening is not None and len(opening.rows) == 1
        assert lockable_elsewhere() == 4

    assert len(dispatch_claim(50)) == 1  # at capacity now
    with transaction.atomic():
        opening = claim_open(gate=True, page=claim_page(50))
        assert opening is not None and opening.rows == []
        assert lockable_elsewhere() == 4
