"""Dispatch nudges are coalesced: a burst of submissions sends one dispatch run while one is
pending (one run claims up to a batch), the run clears the flag before it claims, a full batch
nudges the next run, and a lost message delays work by at most the flag's expiry — while the
beat's level-triggered tick claims whatever is claimable regardless of the flag."""

from __future__ import annotations

import time
from typing import Any
from unittest import mock

import pytest

from orchestration import nudge
from orchestration.models import Worker, WorkItemStatus
from orchestration.nudge import TaskName
from orchestration.services.dispatch import DISPATCH_BATCH
from orchestration.services.work_items import work_item_submit
from orchestration.tasks import dispatch
from tests.factories import WorkItemFactory
from tests.helpers import task_mocks

pytestmark = pytest.mark.django_db(transaction=True)


def submit(n: int) -> None:
    for i in range(n):
        work_item_submit(repo=f"acme/r{i % 3}", spec=f"# Item {i}")


def test_a_burst_of_submissions_sends_one_dispatch_run() -> None:
    with task_mocks(TaskName.DISPATCH) as sent:
        submit(20)
    assert sent[TaskName.DISPATCH].call_count == 1


def test_the_run_clears_the_flag_so_a_later_submission_sends_a_new_run() -> None:
    with task_mocks(TaskName.DISPATCH) as sent:
        submit(3)
        dispatch()  # the run that was sent: claims the three
        submit(1)
    assert sent[TaskName.DISPATCH].call_count == 2


def test_a_lost_run_delays_the_next_nudge_by_at_most_the_flags_expiry() -> None:
    with (
        mock.patch.object(nudge, "DISPATCH_PENDING_SECONDS", 0.3),
        task_mocks(TaskName.DISPATCH) as sent,
    ):
        submit(1)  # its run is "lost": never runs, never clears the flag
        submit(1)
        assert sent[TaskName.DISPATCH].call_count == 1
        time.sleep(0.4)
        submit(1)
    assert sent[TaskName.DISPATCH].call_count == 2


def test_the_tick_claims_despite_a_pending_flag_whose_run_was_lost(settings: Any) -> None:
    with task_mocks(TaskName.DISPATCH, TaskName.START_WORKER) as sent:
        submit(2)  # flag set, message "lost"
        assert dispatch() == 2  # the beat's tick: level-triggered, no flag consulted
    # Both attempts are on the one node: one start message carries both.
    (started,) = sent[TaskName.START_WORKER].call_args_list
    assert sorted(started.args) == sorted(
        str(pk) for pk in Worker.objects.values_list("pk", flat=True)
    )


def test_a_run_that_claims_a_full_batch_nudges_the_next_one(settings: Any) -> None:
    settings.MAX_WORKERS = 1000
    WorkItemFactory.create_batch(DISPATCH_BATCH + 5, status=WorkItemStatus.QUEUED)
    with task_mocks(TaskName.DISPATCH) as sent:
        assert dispatch() == DISPATCH_BATCH
        assert sent[TaskName.DISPATCH].call_count == 1
        assert dispatch() == 5
    assert sent[TaskName.DISPATCH].call_count == 1  # a partial batch: nothing more waits


def test_a_process_looks_for_lost_nudges_at_most_once_per_half_loop_interval(
    settings: Any,
) -> None:
    settings.LOOP_INTERVAL = 5.0
    clock = [1000.0]
    with (
        mock.patch("orchestration.tasks._recovered_at", [-float("inf")]),
        mock.patch("orchestration.tasks.time.monotonic", lambda: clock[0]),
        mock.patch("orchestration.tasks.dispatch_renudge_starts") as starts,
        mock.patch("orchestration.tasks.dispatch_renudge_generation") as generations,
    ):
        dispatch()  # the first run in this process looks
        clock[0] += 2.4
        dispatch()  # a nudged run soon after does not
        assert (starts.call_count, generations.call_count) == (1, 1)
        clock[0] += 0.1  # half LOOP_INTERVAL since the last look
        dispatch()
        assert (starts.call_count, generations.call_count) == (2, 2)
