"""Spec generation by an agent (SPEC_GENERATOR=agent), through the services and the worker
callbacks on PostgreSQL: a ``generating`` item is claimed as a ``spec`` attempt under the same
gate; its ``complete {spec}`` queues the item; an invalid spec, a failed or a swept attempt send it
back to ``generating`` (never ``queued``) with a backoff, and SPEC_MAX_ATTEMPTS tries fail it."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.test import Client

from orchestration.choices import ErrorCategory, EventKind
from orchestration.clock import db_now
from orchestration.models import AttemptKind, Worker, WorkerStatus, WorkItem, WorkItemStatus
from orchestration.services.dispatch import (
    dispatch_claim_one,
    dispatch_renudge_generation,
    worker_token,
)
from orchestration.services.sweeps import sweep_heartbeats, work_item_recover
from orchestration.services.work_items import work_item_submit
from orchestration.services.workers import worker_mark_started
from tests.callbacks_support import SHA, call
from tests.factories import running_attempt
from tests.helpers import RETRY_DELAYS, assert_error
from tests.transitions_support import events_of, make_due
from workers.runtime import worker_environment

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("retry_policy")]

DESCRIPTION = "# Add dark mode\n\nThe settings page needs a toggle."
SPEC = "# Dark mode\n\n## Tasks\n\n- [ ] add the toggle\n"


@pytest.fixture(autouse=True)
def agent_generator(settings: Any) -> None:
    settings.SPEC_GENERATOR = "agent"
    settings.SPEC_MAX_ATTEMPTS = 3


def spec_attempt(item: WorkItem | None = None) -> tuple[WorkItem, Worker]:
    """A ``generating`` item claimed (through the gate) and started."""
    if item is None:
        item, _ = work_item_submit(repo="acme/widgets", description=DESCRIPTION)
    worker_id = dispatch_claim_one()
    assert worker_id is not None, "the claim found nothing to claim"
    assert worker_mark_started(worker_id=worker_id, container_id=f"c-{worker_id}")
    worker = Worker.objects.get(pk=worker_id)
    assert worker.work_item_id == item.pk
    item.refresh_from_db()
    return item, worker


def claimed() -> Worker:
    worker_id = dispatch_claim_one()
    assert worker_id is not None, "the claim found nothing to claim"
    return Worker.objects.get(pk=worker_id)


def test_a_generating_item_is_claimed_as_a_spec_attempt(settings: Any) -> None:
    item, _ = work_item_submit(repo="acme/widgets", description=DESCRIPTION)

    worker = claimed()

    item.refresh_from_db()
    assert (worker.work_item_id, worker.kind) == (item.pk, AttemptKind.SPEC)
    assert (item.status, item.worker_id) == (WorkItemStatus.ASSIGNED, worker.pk)
    assert events_of(item)[-1] == (EventKind.CLAIMED, "generating", "assigned")
    env = worker_environment(
        worker=worker, work_item=item, token=worker_token(worker.pk), callback_base="http://x"
    )
    assert env["WORKER_MODE"] == "spec"
    assert env["SPEC_TIMEOUT"] == str(settings.SPEC_TIMEOUT)


def test_the_claim_takes_generating_items_under_the_same_gate(settings: Any) -> None:
    settings.MAX_WORKERS = 1
    first, _ = work_item_submit(repo="acme/widgets", description="one")
    work_item_submit(repo="acme/widgets", description="two")

    assert dispatch_claim_one() is not None
    assert dispatch_claim_one() is None  # capacity: the second waits like any item
    assert Worker.objects.get().work_item_id == first.pk


def test_other_generators_leave_generating_items_to_their_task(settings: Any) -> None:
    settings.SPEC_GENERATOR = "template"
    work_item_submit(repo="acme/widgets", description=DESCRIPTION)

    assert dispatch_claim_one() is None


def test_a_work_attempt_is_still_a_work_attempt() -> None:
    _, worker = running_attempt(spec=SPEC, branch="b")
    assert worker.kind == AttemptKind.WORK


def test_complete_with_a_spec_queues_the_item_without_a_commit_check(client: Client) -> None:
    item, worker = spec_attempt()

    resp = call(client, worker, "complete", {"spec": SPEC, "metrics": {"tokensIn": 10}})

    assert resp.status_code == 200, resp.content
    item.refresh_from_db()
    worker.refresh_from_db()
    assert worker.status == WorkerStatus.COMPLETED
    assert (item.status, item.spec, item.branch) == (WorkItemStatus.QUEUED, SPEC, "dark-mode")
    assert (item.worker_id, item.retry_count, item.next_retry_at) == (None, 0, None)
    assert item.tokens_in == 10  # charged like any attempt
    assert events_of(item)[-1] == (EventKind.SPEC_GENERATED, "in_progress", "queued")
    # Repeated: a no-op, not a second move.
    assert call(client, worker, "complete", {"spec": SPEC}).status_code == 200
    assert [k for k, _, _ in events_of(item)].count(EventKind.SPEC_GENERATED) == 1
    # Now it is a change with its spec: the next claim is a work attempt.
    assert claimed().kind == AttemptKind.WORK


def test_a_branch_given_at_submit_is_kept(client: Client) -> None:
    item, _ = work_item_submit(repo="acme/widgets", description=DESCRIPTION, branch="whim/i-1")
    item, worker = spec_attempt(item)

    call(client, worker, "complete", {"spec": SPEC})

    item.refresh_from_db()
    assert item.branch == "whim/i-1"


def test_a_spec_from_a_work_attempt_is_refused(client: Client) -> None:
    item, worker = running_attempt(spec=SPEC, branch="b")

    resp = call(client, worker, "complete", {"spec": "# other", "commitSha": SHA})

    assert_error(resp, 400, "VALIDATION_ERROR", details=["spec"])
    item.refresh_from_db()
    assert (item.status, item.spec) == (WorkItemStatus.IN_PROGRESS, SPEC)


def test_a_spec_attempt_must_report_the_spec(client: Client) -> None:
    item, worker = spec_attempt()

    assert_error(call(client, worker, "complete", {}), 400, "VALIDATION_ERROR", details=["spec"])

    item.refresh_from_db()
    assert item.status == WorkItemStatus.IN_PROGRESS


def test_a_spec_past_spec_max_bytes_is_refused_with_400(client: Client, settings: Any) -> None:
    settings.SPEC_MAX_BYTES = 20
    item, worker = spec_attempt()

    resp = call(client, worker, "complete", {"spec": "# T\n" + "x" * 40})

    body = assert_error(resp, 400, "VALIDATION_ERROR", details=["spec"])
    assert "SPEC_MAX_BYTES" in body["details"]["spec"]
    item.refresh_from_db()
    assert item.status == WorkItemStatus.IN_PROGRESS


def test_an_invalid_spec_fails_the_attempt_and_the_item_waits_in_generating(
    client: Client,
) -> None:
    item, worker = spec_attempt()
    before = db_now()

    resp = call(client, worker, "complete", {"spec": "no structure at all"})

    assert resp.status_code == 200, resp.content
    worker.refresh_from_db()
    item.refresh_from_db()
    assert (worker.status, worker.error_category) == (WorkerStatus.FAILED, "AGENT_ERROR")
    assert worker.error.startswith("generated spec rejected: the spec has neither")
    assert (item.status, item.spec, item.retry_count) == (WorkItemStatus.GENERATING, "", 1)
    assert item.next_retry_at is not None
    assert item.next_retry_at >= before + dt.timedelta(seconds=RETRY_DELAYS[0])
    assert dispatch_claim_one() is None  # its backoff holds it
    make_due(item)
    assert claimed().kind == AttemptKind.SPEC


def test_three_failed_spec_attempts_fail_the_item_with_the_reason(client: Client) -> None:
    item, _ = work_item_submit(repo="acme/widgets", description=DESCRIPTION)
    for attempt in (1, 2, 3):
        item, worker = spec_attempt(item)
        assert worker.attempt == attempt
        resp = call(client, worker, "fail", {"error": f"agent crashed #{attempt}"})
        assert resp.status_code == 200
        item.refresh_from_db()
        if attempt < 3:
            assert (item.status, item.retry_count) == (WorkItemStatus.GENERATING, attempt)
            make_due(item)

    assert item.status == WorkItemStatus.FAILED
    assert item.error == "spec generation failed after 3 attempt(s): agent crashed #3"
    assert item.error_category == ErrorCategory.AGENT_ERROR
    assert events_of(item)[-1] == (EventKind.SPEC_FAILED, "in_progress", "failed")
    assert [k for k, _, _ in events_of(item)].count(EventKind.RETRY_SCHEDULED) == 2


def test_a_permanent_category_fails_the_spec_at_once(client: Client) -> None:
    item, worker = spec_attempt()

    call(client, worker, "fail", {"error": "no such agent", "category": "CONFIG_ERROR"})

    item.refresh_from_db()
    assert (item.status, item.error_category) == (WorkItemStatus.FAILED, "CONFIG_ERROR")
    assert events_of(item)[-1][0] == EventKind.SPEC_FAILED


def test_a_stale_spec_attempt_swept_goes_back_to_generating_not_queued(settings: Any) -> None:
    item, worker = spec_attempt()
    Worker.objects.filter(pk=worker.pk).update(last_heartbeat=db_now() - dt.timedelta(hours=1))

    assert sweep_heartbeats() == {"lost": 1}

    item.refresh_from_db()
    assert (item.status, item.spec, item.retry_count) == (WorkItemStatus.GENERATING, "", 1)
    assert item.error_category == ErrorCategory.HEARTBEAT_TIMEOUT


def test_an_orphaned_spec_less_item_is_recovered_to_generating() -> None:
    item, worker = spec_attempt()
    Worker.objects.filter(pk=worker.pk).update(status=WorkerStatus.LOST)
    WorkItem.objects.filter(pk=item.pk).update(updated_at=db_now() - dt.timedelta(minutes=5))

    assert work_item_recover(work_item_id=item.pk, cutoff=db_now() - dt.timedelta(seconds=60))

    item.refresh_from_db()
    assert (item.status, item.worker_id) == (WorkItemStatus.GENERATING, None)
    assert events_of(item)[-1] == (EventKind.RECOVERED, "in_progress", "generating")


def test_the_generation_re_nudge_leaves_the_agents_items_to_the_claim() -> None:
    item, _ = work_item_submit(repo="acme/widgets", description=DESCRIPTION)
    WorkItem.objects.filter(pk=item.pk).update(updated_at=db_now() - dt.timedelta(hours=1))

    assert dispatch_renudge_generation() == 0
