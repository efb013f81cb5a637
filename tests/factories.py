"""factory-boy factories, in one place."""

from __future__ import annotations

from typing import Any

import factory
from django.utils import timezone

from orchestration.models import (
    PRIORITY_RANK,
    Priority,
    Worker,
    WorkerStatus,
    WorkItem,
    WorkItemStatus,
)
from orchestration.services.dispatch import dispatch_claim_one
from orchestration.services.workers import worker_mark_started


class WorkItemFactory(factory.django.DjangoModelFactory[WorkItem]):
    class Meta:
        model = WorkItem

    repo = factory.Sequence(lambda n: f"acme/repo-{n % 5}")
    branch = factory.Sequence(lambda n: f"task-{n}")
    spec = "# Do the thing\n\nPlease."
    priority = Priority.MEDIUM
    priority_rank = factory.LazyAttribute(lambda o: PRIORITY_RANK[Priority(o.priority)])
    metadata = factory.LazyFunction(lambda: {"mockSeconds": 0})


class WorkerFactory(factory.django.DjangoModelFactory[Worker]):
    class Meta:
        model = Worker

    work_item = factory.SubFactory(WorkItemFactory)


def running_attempt(
    item: WorkItem | None = None, *, use_gate: bool = True, **item_fields: Any
) -> tuple[WorkItem, Worker]:
    """An item ``in_progress`` with a ``running`` worker, made the real way: claimed through
    the dispatch service, then started. ``item`` (or the new one) must be the only claimable
    item; ``use_gate=False`` claims past capacity, cooldown and budget."""
    item = item or WorkItemFactory.create(**item_fields)
    worker_id = dispatch_claim_one(use_gate=use_gate)
    assert worker_id is not None, "the claim found nothing to claim"
    assert worker_mark_started(worker_id=worker_id, container_id=f"c-{worker_id}")
    worker = Worker.objects.get(pk=worker_id)
    assert worker.work_item_id == item.pk
    item.refresh_from_db()
    return item, worker


def running_item(*, iteration: int = 0, **item_fields: Any) -> tuple[WorkItem, Worker]:
    """An item ``in_progress`` with a ``running`` worker, written directly (no claim, no
    budget charge): for tests of the edges that only read or act on such a pair."""
    item = WorkItemFactory.create(status=WorkItemStatus.IN_PROGRESS, **item_fields)
    now = timezone.now()
    worker = WorkerFactory.create(
        work_item=item,
        status=WorkerStatus.RUNNING,
        container_id=f"c-{item.pk}",
        iteration=iteration,
        started_at=now,
        last_heartbeat=now,
    )
    WorkItem.objects.filter(pk=item.pk).update(worker=worker)
    item.refresh_from_db()
    return item, worker
