"""Celery tasks of the GitHub loop: deliver one outbox row, poll the watched repositories.

Messages are nudges (ids only); both bodies are idempotent and exit quietly when there is
nothing to do. Services enqueue them by name (``orchestration.nudge.TaskName``).
"""

from __future__ import annotations

import logging

from celery import shared_task

from intake.issues import issues_poll
from intake.outbox import github_action_deliver
from intake.pulls import pulls_poll
from intake.repos import repositories_watched
from orchestration.nudge import TaskName
from orchestration.retry import RETRY_ON_DB_ERRORS

logger = logging.getLogger(__name__)


@shared_task(
    name=TaskName.GITHUB_DELIVER, time_limit=120, soft_time_limit=100, **RETRY_ON_DB_ERRORS
)
def deliver(action_id: str) -> str:
    """Deliver one outbox row (a GitHub call); a late or repeated nudge is skipped."""
    return github_action_deliver(action_id=int(action_id))


@shared_task(name=TaskName.INTAKE_POLL, time_limit=600, soft_time_limit=570)
def poll() -> dict[str, dict[str, int]]:
    """Beat: poll every watched repository's labelled issues and open pull requests (what
    webhooks missed). One repository's failure does not stop the others."""
    polled: dict[str, dict[str, int]] = {}
    for repository in repositories_watched():
        counts: dict[str, int] = {}
        for step in (issues_poll, pulls_poll):
            try:
                counts.update(step(repo=repository.name))
            except Exception:  # one repository's surprise must not starve the rest
                logger.exception("polling %s failed", repository.name)
        polled[repository.name] = counts
    return polled
