"""The claim order is defined once (models.CLAIM_ORDER): the claim, the queue's "ahead of
you" count and the ordering all follow it."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from orchestration.clock import db_now
from orchestration.models import Priority, WorkItem, WorkItemType
from orchestration.services.dispatch import dispatch_claim_one
from tests.factories import WorkItemFactory

pytestmark = pytest.mark.django_db


def test_each_item_has_exactly_its_claim_position_ahead_of_it() -> None:
    start = db_now() - dt.timedelta(hours=1)
    for n, (kind, priority) in enumerate(
        itertools.product(WorkItemType.values, [Priority.LOW, Priority.CRITICAL, Priority.MEDIUM])
    ):
        for copy in range(2):  # equal type and priority: only the age decides
            item = WorkItemFactory.create(type=kind, priority=priority)
            # created_at is auto_now_add: the intended age is set afterwards, newest first.
            age = start - dt.timedelta(minutes=n * 2 + copy)
            WorkItem.objects.filter(pk=item.pk).update(created_at=age)
    now = db_now()
    ordered = list(WorkItem.objects.claimable(now))
    assert len(ordered) == len(WorkItemType.values) * 3 * 2
    for position, item in enumerate(ordered):
        assert WorkItem.objects.claimable(now).claimed_before(item).count() == position


def test_the_claim_takes_items_in_the_claim_order() -> None:
    a = WorkItemFactory.create(type=WorkItemType.VERIFICATION, priority=Priority.CRITICAL)
    b = WorkItemFactory.create(priority=Priority.LOW)
    c = WorkItemFactory.create(priority=Priority.HIGH)
    expected = list(WorkItem.objects.claimable(db_now()).values_list("pk", flat=True))
    assert expected == [c.pk, b.pk, a.pk]
    claimed = [dispatch_claim_one() for _ in range(3)]
    assert [WorkItem.objects.get(worker__pk=w).pk for w in claimed if w is not None] == expected


def test_an_item_waiting_for_its_retry_is_not_claimable_yet() -> None:
    later = WorkItemFactory.create(next_retry_at=db_now() + dt.timedelta(minutes=5))
    assert later not in WorkItem.objects.claimable(db_now())
    assert later in WorkItem.objects.claimable(db_now() + dt.timedelta(minutes=6))
