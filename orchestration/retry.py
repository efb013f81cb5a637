"""The Celery retry policy for tasks that touch the database.

A task that hit a database outage is retried with backoff and jitter (the row is the truth:
running it again later is safe). Periodic sweeps need no retry: the next tick runs them.
"""

from __future__ import annotations

from typing import Any

from django.db import InterfaceError, OperationalError

RETRY_ON_DB_ERRORS: dict[str, Any] = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 10,
}
