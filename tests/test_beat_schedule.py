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


# Each default entry: its task, its arguments and how often it runs (settings' defaults).
DEFAULTS = {
    "whim-dispatch": ("orchestration.dispatch", "[]", 5),
    "whim-sweep-heartbeats": ("orchestration.sweep", '["heartbeats"]', 5),
    "whim-sweep-containers": ("orchestration.sweep", '["containers"]', 5),
    "whim-sweep-stuck": ("orchestration.sweep", '["stuck"]', 30),
    "whim-sweep-locks": ("orchestration.sweep", '["locks"]', 60),
    "whim-sweep-retention": ("orchestration.sweep", '["retention"]', 3600),
    "whim-sweep-tallies": ("orchestration.sweep", '["tallies"]', 60),
    "whim-sweep-beats": ("orchestration.sweep", '["beats"]', 30),
}


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_each_default_entry_runs_its_task_at_its_interval(name: str) -> None:
    start_beat()
    task, args, every = DEFAULTS[name]
    row = PeriodicTask.objects.select_related("interval").get(name=name)
    assert (row.task, row.args, row.enabled) == (task, args, True)
    assert row.interval is not None, "scheduled by interval, not crontab"
    assert (row.interval.every, row.interval.period) == (every, IntervalSchedule.SECONDS)


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
