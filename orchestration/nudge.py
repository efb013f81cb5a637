"""Enqueue Celery messages by task name, once the current transaction commits.

Messages are nudges (DESIGN.md §2): if the broker is down at commit time the failure is
logged, not raised — the row is already the truth and a periodic sweep sends the nudge again.

Services enqueue through this module by *name* (``TaskName``), so no service imports a task
module: tasks import services, never the reverse (DESIGN.md §10). The task bodies live in
``orchestration/tasks.py`` and ``workers/tasks.py`` and are registered under these names.
"""

from __future__ import annotations

import logging

from celery import current_app
from django.db import transaction

from orchestration import requestid

logger = logging.getLogger(__name__)


class TaskName:
    """Every task a service enqueues, by its registered name (the wire contract of the queue:
    renaming one strands the messages already queued under the old name)."""

    DISPATCH = "orchestration.dispatch"
    SWEEP = "orchestration.sweep"
    GENERATE_SPEC = "orchestration.generate_spec"
    # Defined in workers/tasks.py; the name is kept from when it lived in orchestration, so
    # messages queued before an upgrade still run.
    START_WORKER = "orchestration.start_worker"
    STOP_CONTAINER = "workers.stop_container"
    FAKE_RUN = "workers.fake_run"
    # One node's container observation and reconciler, sent to that node's queue.
    OBSERVE_CONTAINERS = "workers.observe_containers"
    # Defined in intake/tasks.py: deliver one outbox row (a GitHub call); poll the watched
    # repositories for labelled issues and pull requests.
    GITHUB_DELIVER = "intake.deliver"
    INTAKE_POLL = "intake.poll"


def send(name: str, *args: str, queue: str | None = None) -> None:
    """Send the message now, carrying the current request id (if any) as a message header.
    ``queue``: a node's own queue (``whim.node.<name>``) for a task only that node's worker may
    run (its containers); None: the default queue. Raises when the broker is unreachable
    (callers decide)."""
    rid = requestid.current()
    headers = {requestid.TASK_HEADER: rid} if rid else None
    current_app.send_task(name, args=list(args), headers=headers, queue=queue)


def send_on_commit(name: str, *args: str, queue: str | None = None) -> None:
    """Send the message after the current transaction commits (at once outside one).

    A broker failure then is logged, not raised: the level-triggered sweep re-sends it. The
    message carries the request id current now, whenever the commit comes.
    """
    rid = requestid.current()

    def after_commit() -> None:
        try:
            with requestid.bound(rid):
                send(name, *args, queue=queue)
        except Exception as exc:  # broker down: the level-triggered sweep re-sends it
            logger.warning(
                "could not enqueue %s (%s); a sweep will retry", name, type(exc).__name__
            )

    transaction.on_commit(after_commit)


def broker_reachable() -> bool:
    """Whether the broker answers within a couple of seconds (status pages, checks)."""
    try:
        with current_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:
        return False
