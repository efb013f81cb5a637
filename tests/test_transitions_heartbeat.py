"""The state machine, services called directly on PostgreSQL: heartbeats.

A heartbeat records liveness, iteration and tokens (never lowering a count), charges the day's
iterations, writes no event (but the ``resumed`` one a resuming attempt's first heartbeat
leaves: tests/test_review_display.py), and is fenced once the worker is no longer active.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from orchestration.clock import budget_date, db_now
from orchestration.errors import Fenced
from orchestration.models import DailyUsage
from orchestration.services.workers import (
    Completion,
    worker_complete,
    worker_fail,
    worker_heartbeat,
    worker_kill,
    worker_stuck,
)
from tests.factories import running_attempt
from tests.transitions_support import events_of, refreshed

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("retry_policy")]


# --- heartbeat -----------------------------------------------------------------------------


def test_a_heartbeat_records_liveness_iteration_and_tokens() -> None:
    item, worker = running_attempt()
    started_beat = worker.last_heartbeat

    worker_heartbeat(worker_id=worker.pk, iteration=2, tokens_in=300, tokens_out=40)

    refreshed(item, worker)
    assert started_beat is not None and worker.last_heartbeat is not None
    assert worker.last_heartbeat > started_beat
    assert worker.last_progress_at == worker.last_heartbeat
    assert (worker.iteration, worker.tokens_in, worker.tokens_out) == (2, 300, 40)
    assert item.iteration == 2


def test_a_heartbeat_without_progress_moves_only_the_liveness_time() -> None:
    _item, worker = running_attempt()
    worker_heartbeat(worker_id=worker.pk, iteration=2, tokens_in=300, tokens_out=40)
    worker.refresh_from_db()
    progress, beat = worker.last_progress_at, worker.last_heartbeat

    worker_heartbeat(worker_id=worker.pk, iteration=2, tokens_in=300, tokens_out=40)

    worker.refresh_from_db()
    assert beat is not None and worker.last_heartbeat is not None
    assert worker.last_heartbeat > beat
    assert worker.last_progress_at == progress


@pytest.mark.parametrize(
    "beat",
    [
        {"iteration": 3},
        {"iteration": 2, "tokens_in": 301},
        {"iteration": 2, "tokens_out": 41},
        {"iteration": 2, "cost_usd": Decimal("0.5")},
    ],
)
def test_any_rising_count_is_progress(beat: dict[str, Any]) -> None:
    _, worker = running_attempt()
    worker_heartbeat(worker_id=worker.pk, iteration=2, tokens_in=300, tokens_out=40)
    worker.refresh_from_db()
    progress = worker.last_progress_at

    worker_heartbeat(worker_id=worker.pk, **beat)

    worker.refresh_from_db()
    assert progress is not None and worker.last_progress_at is not None
    assert worker.last_progress_at > progress


def test_a_late_heartbeat_with_lower_counts_never_lowers_them() -> None:
    item, worker = running_attempt()
    worker_heartbeat(worker_id=worker.pk, iteration=5, tokens_in=500, tokens_out=50)
    worker.refresh_from_db()
    progress = worker.last_progress_at

    worker_heartbeat(worker_id=worker.pk, iteration=3, tokens_in=100, tokens_out=10)

    refreshed(item, worker)
    assert (worker.iteration, worker.tokens_in, worker.tokens_out) == (5, 500, 50)
    assert item.iteration == 5
    assert worker.last_progress_at == progress


def test_heartbeats_charge_the_days_iterations_by_how_far_they_rose() -> None:
    _, worker = running_attempt()
    today = budget_date(db_now())

    worker_heartbeat(worker_id=worker.pk, iteration=2)
    worker_heartbeat(worker_id=worker.pk, iteration=5)
    worker_heartbeat(worker_id=worker.pk, iteration=5)
    worker_heartbeat(worker_id=worker.pk, iteration=4)

    assert DailyUsage.objects.get(date=today).iterations == 5


def test_a_heartbeat_writes_no_event() -> None:
    item, worker = running_attempt()
    before = events_of(item)

    worker_heartbeat(worker_id=worker.pk, iteration=1)

    assert events_of(item) == before


@pytest.mark.parametrize("ending", ["fail", "kill", "stuck", "complete"])
def test_a_heartbeat_from_a_worker_that_is_no_longer_active_is_fenced(ending: str) -> None:
    _item, worker = running_attempt()
    {
        "fail": lambda: worker_fail(worker_id=worker.pk, error="x"),
        "kill": lambda: worker_kill(worker_id=worker.pk),
        "stuck": lambda: worker_stuck(worker_id=worker.pk, reason="x"),
        "complete": lambda: worker_complete(worker_id=worker.pk, result=Completion()),
    }[ending]()
    worker.refresh_from_db()
    beat = worker.last_heartbeat

    with pytest.raises(Fenced):
        worker_heartbeat(worker_id=worker.pk, iteration=9, tokens_in=1)

    worker.refresh_from_db()
    assert worker.last_heartbeat == beat
    assert worker.iteration == 0
    assert not DailyUsage.objects.filter(iterations__gt=0).exists()
