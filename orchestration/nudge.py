"""Enqueue a Celery message once the current transaction commits.

Messages are nudges (DESIGN.md §2): if the broker is down at commit time the failure is
logged, not raised — the row is already the truth and a periodic sweep sends the nudge again.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from django.db import transaction

logger = logging.getLogger(__name__)


def delay_on_commit(task: Task[Any, Any], *args: Any) -> None:
    def send() -> None:
        try:
            task.delay(*args)
        except Exception as exc:  # broker down: the level-triggered sweep re-sends it
            logger.warning(
                "could not enqueue %s (%s); a sweep will retry", task.name, type(exc).__name__
            )

    transaction.on_commit(send)
