"""The Celery app: ``celery -A whim worker`` / ``celery -A whim beat``."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "whim.settings")

app = Celery("whim")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
