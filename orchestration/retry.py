"""Retry policies: how long an item waits before its next try, and the Celery retry policy
for tasks that touch the database.

A task that hit a database outage is retried with backoff and jitter (the row is the truth:
running it again later is safe). Periodic sweeps need no retry: the next tick runs them.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError


def retry_delay(tries_so_far: int) -> int:
    """Seconds an item waits before its next try: RETRY_DELAYS by how many tries failed so
    far, its last entry once they run out."""
    delays = settings.RETRY_DELAYS or [60]
    return int(delays[min(tries_so_far, len(delays) - 1)])


RETRY_ON_DB_ERRORS: dict[str, Any] = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 10,
}
