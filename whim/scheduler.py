"""Celery beat's scheduler: django-celery-beat's, but it never overwrites an operator's edits.

The stock DatabaseScheduler writes ``CELERY_BEAT_SCHEDULE`` over the database rows each time
beat starts. This one only adds the entries that are missing, so a schedule changed or
disabled in the admin (*Periodic tasks*) stays that way; deleting a row restores the default
at the next beat start.
"""

from __future__ import annotations

from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler


class WhimScheduler(DatabaseScheduler):
    def setup_schedule(self) -> None:
        self.install_default_entries(self.schedule)
        existing = set(PeriodicTask.objects.values_list("name", flat=True))
        missing = {k: v for k, v in self.app.conf.beat_schedule.items() if k not in existing}
        self.update_from_dict(missing)
