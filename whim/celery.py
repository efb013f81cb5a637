"""The Celery app: ``celery -A whim worker`` / ``celery -A whim beat``."""

from __future__ import annotations

import contextvars
import os
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_ready
from django.db import close_old_connections

from orchestration import requestid

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "whim.settings")

app = Celery("whim")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Celery's Django fixup closes every database connection before and after each task unless
# told to reuse them, so CONN_MAX_AGE did nothing here and each task paid a new PostgreSQL
# session (~8 ms). Its own close is pushed out of reach (it counts tasks, never ages), and
# Django's request-cycle rule runs around each task instead (``reuse_connections``).
app.conf["CELERY_DB_REUSE_MAX"] = 2**62
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def reuse_connections(**kwargs: Any) -> None:
    """Around every task, what Django does around every request: drop a connection that is
    past CONN_MAX_AGE, broken by an error, or left in a transaction, and keep the rest —
    with CONN_HEALTH_CHECKS, a kept one is pinged on its first use in the next task, so one
    that died meanwhile (PostgreSQL restarted) is replaced, never reused."""
    close_old_connections()


@worker_ready.connect
def recover_at_startup(sender: Any = None, **kwargs: Any) -> None:
    """A worker (re)starting runs every sweep once and nudges dispatch: whatever a crash left
    behind is picked up now, not at the next beat tick. Sweeps are idempotent and age-aware,
    so several workers starting together do no harm."""
    app.send_task("orchestration.sweep", args=["all"])
    app.send_task("orchestration.dispatch")


# The request id bound for each running task, by task id (a pool of threads runs several).
_bound: dict[str, contextvars.Token[str]] = {}


@task_prerun.connect
def bind_request_id(task_id: str = "", task: Any = None, **kwargs: Any) -> None:
    """A task enqueued by a request runs under that request's id (``nudge.send`` put it in a
    message header; Celery makes a custom header an attribute of ``task.request``): its log
    records, the events it records and the tasks it enqueues carry it too."""
    request = getattr(task, "request", None)
    headers = getattr(request, "headers", None) or {}  # where an eager apply() keeps them
    rid = requestid.sane(
        getattr(request, requestid.TASK_HEADER, None) or headers.get(requestid.TASK_HEADER)
    )
    if rid and task_id:
        _bound[task_id] = requestid.bind(rid)


@task_postrun.connect
def unbind_request_id(task_id: str = "", task: Any = None, **kwargs: Any) -> None:
    token = _bound.pop(task_id, None)
    if token is not None:
        try:
            requestid.unbind(token)
        except ValueError:  # bound in another context: clear it here instead
            requestid.bind("")
