"""The Celery app: ``celery -A whim worker`` / ``celery -A whim beat``."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "whim.settings")

app = Celery("whim")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def recover_at_startup(sender: Any = None, **kwargs: Any) -> None:
    """A worker (re)starting runs every sweep once and nudges dispatch: whatever a crash left
    behind is picked up now, not at the next beat tick. Sweeps are idempotent and age-aware,
    so several workers starting together do no harm."""
    app.send_task("orchestration.sweep", args=["all"])
    app.send_task("orchestration.dispatch")
