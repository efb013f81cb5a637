"""The beat schedule lives in the database and an operator's edits survive beat restarts."""

from __future__ import annotations

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from whim.celery import app
from whim.scheduler import WhimScheduler

pytestmark = pytest.mark.django_db(transaction=True)  # the scheduler closes connections


def start_beat() -> None:
    WhimScheduler(app=app)  # what `celery -A whim beat` does when it starts


def test_every_sweep_and_the_dispatch_tick_are_scheduled() -> None:
    start_beat()
    names = set(PeriodicTask.objects.values_list("name", flat=True))
    assert {
        "whim-dispatch",
        "whim-sweep-heartbeats",
        "whim-sweep-stuck",
        "whim-sweep-locks",
        "whim-sweep-containers",
        "whim-sweep-retention",
    } <= names
    heartbeats = PeriodicTask.objects.get(name="whim-sweep-heartbeats")
    assert heartbeats.task == "orchestration.sweep" and heartbeats.args == '["heartbeats"]'
    assert heartbeats.expire_seconds == 30


def test_a_schedule_changed_in_the_admin_survives_beat_restarts() -> None:
    start_beat()
    slower, _ = IntervalSchedule.objects.get_or_create(every=20, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.filter(name="whim-sweep-heartbeats").update(interval=slower)
    PeriodicTask.objects.filter(name="whim-sweep-retention").update(enabled=False)

    start_beat()

    assert PeriodicTask.objects.get(name="whim-sweep-heartbeats").interval.every == 20
    assert PeriodicTask.objects.get(name="whim-sweep-retention").enabled is False


def test_a_deleted_schedule_comes_back_with_its_default() -> None:
    start_beat()
    PeriodicTask.objects.filter(name="whim-sweep-locks").delete()

    start_beat()

    assert PeriodicTask.objects.get(name="whim-sweep-locks").enabled is True
