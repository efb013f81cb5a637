"""A request id crosses a real broker (issue 14 §3): real Celery worker processes, real Redis
and PostgreSQL. A claim made under a request id enqueues the container start with the id in a
message header; the worker's task binds it again, so the ``started`` event the start records,
and the fake run the start enqueues in turn, carry it too."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import transaction

from orchestration import requestid
from orchestration.models import WorkItem, WorkItemEvent, WorkItemStatus
from orchestration.services.dispatch import dispatch_claim_one
from tests.factories import WorkItemFactory
from tests.helpers import wait_for

pytestmark = [pytest.mark.celery, pytest.mark.django_db(transaction=True)]


def test_the_tasks_a_request_caused_carry_its_id_through_the_broker(celery_workers: Any) -> None:
    workers = celery_workers(LOG_FORMAT="json")
    workers.start()
    # Made and claimed in one transaction: no dispatch of the worker's own (its startup one)
    # can claim the item first; the start message is sent when this commits.
    with requestid.bound("celery-rid-1"), transaction.atomic():
        item = WorkItemFactory.create(metadata={"mockSeconds": 0.2})
        worker_id = dispatch_claim_one(use_gate=False)
        assert worker_id is not None

    wait_for(
        lambda: WorkItem.objects.get(pk=item.pk).status == WorkItemStatus.COMPLETED,
        timeout=90,
        what="the item to complete",
    )

    events = {e.kind: e.data for e in WorkItemEvent.objects.filter(work_item=item)}
    assert events["started"].get("requestId") == "celery-rid-1", events  # start_worker's
    assert events["completed"].get("requestId") == "celery-rid-1", events  # fake_run's
    # The worker process logs JSON lines (LOG_FORMAT=json reached its logging settings), and
    # the completion fake_run reported is logged under the id.
    entries = [
        json.loads(line)
        for log in workers.logs
        for line in log.read_text().splitlines()
        if line.startswith("{")
    ]
    done = [
        e for e in entries if e["message"] == f"worker {worker_id} completed work item {item.pk}"
    ]
    assert done and done[0]["requestId"] == "celery-rid-1", entries
