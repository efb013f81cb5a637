"""What the state-machine tests (``test_transitions_*.py``) share: the retry numbers they
assert against and small steps that set rows up or read them back."""

from __future__ import annotations

import datetime as dt
from typing import Any

from orchestration.clock import db_now
from orchestration.models import FileLock, Worker, WorkItem, WorkItemEvent
from orchestration.services.dispatch import dispatch_claim_one
from tests.helpers import RETRY_DELAYS

DELAYS = RETRY_DELAYS  # under the ``retry_policy`` fixture
TOLERANCE = dt.timedelta(seconds=2)


def events_of(item: WorkItem) -> list[tuple[str, str, str]]:
    return list(
        WorkItemEvent.objects.filter(work_item=item).values_list("kind", "from_status", "to_status")
    )


def claim(item: WorkItem) -> Worker:
    """Claim ``item`` through the gated claim; it must be the only claimable item."""
    worker_id = dispatch_claim_one()
    assert worker_id is not None, "the claim found nothing to claim"
    worker = Worker.objects.get(pk=worker_id)
    assert worker.work_item_id == item.pk
    return worker


def lock(worker: Worker, *paths: str, repo: str = "") -> None:
    for path in paths:
        FileLock.objects.create(
            repo=repo or worker.work_item.repo,
            path=path,
            worker=worker,
            expires_at=db_now() + dt.timedelta(minutes=5),
        )


def make_due(item: WorkItem) -> None:
    """Skip the backoff wait so the next claim can take the item."""
    WorkItem.objects.filter(pk=item.pk).update(next_retry_at=db_now() - dt.timedelta(seconds=1))


def refreshed(*rows: Any) -> None:
    for row in rows:
        row.refresh_from_db()
