"""Celery tasks of the core. Messages are nudges: ids only, idempotent, safe to repeat."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction

from orchestration.errors import Fenced
from orchestration.forms.fields import bounded_seconds
from orchestration.models import Worker, WorkerStatus
from orchestration.services.dispatch import (
    dispatch_renudge_generation,
    dispatch_renudge_starts,
    dispatch_run,
    worker_token,
)
from orchestration.services.work_items import work_item_generate_spec
from orchestration.services.workers import worker_fail, worker_mark_started

logger = logging.getLogger(__name__)

# A task that hit a database outage is retried with backoff and jitter (the row is the truth:
# running it again later is safe). Periodic sweeps need no retry: the next tick runs them.
RETRY_ON_DB_ERRORS: dict[str, Any] = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 10,
}


@shared_task(name="orchestration.dispatch", time_limit=120, soft_time_limit=100)
def dispatch() -> int:
    """Claim queued work while the gate allows; re-nudge starts and generations left behind."""
    claimed = dispatch_run()
    dispatch_renudge_starts()
    dispatch_renudge_generation()
    return claimed


@shared_task(name="orchestration.sweep", time_limit=600, soft_time_limit=570)
def sweep(name: str = "all") -> dict[str, dict[str, int]]:
    """Beat: one supervision sweep by name (``all`` for every one)."""
    from orchestration.services.sweeps import sweep_run

    return sweep_run(name=name, exclusive=True)


@shared_task(
    name="orchestration.generate_spec", time_limit=300, soft_time_limit=280, **RETRY_ON_DB_ERRORS
)
def generate_spec(work_item_id: str) -> None:
    work_item_generate_spec(work_item_id=work_item_id)


@shared_task(
    name="orchestration.start_worker", time_limit=300, soft_time_limit=280, **RETRY_ON_DB_ERRORS
)
def start_worker(worker_id: str) -> None:
    """Start the container of a ``starting`` worker. Redelivered or late: a quiet no-op.

    A start that raises rolls the attempt back through ``worker_fail`` (category
    START_ERROR, retried with backoff), keeping the error on the worker row.
    """
    from workers.runtime import get_runtime

    worker = Worker.objects.select_related("work_item").filter(pk=worker_id).first()
    if worker is None or worker.status != WorkerStatus.STARTING:
        return
    if settings.WHIM_AGENT == "mock":
        # The mock's slow start (metadata.mockStartSeconds, at most a minute) lets fault tests
        # act between the claim and the container start.
        meta = worker.work_item.metadata
        time.sleep(bounded_seconds(meta.get("mockStartSeconds"), cap=60.0))
    runtime = get_runtime()
    try:
        with transaction.atomic():
            container_id = runtime.start(
                worker=worker, work_item=worker.work_item, token=worker_token(worker.pk)
            )
            started = worker_mark_started(worker_id=worker_id, container_id=container_id)
    except (OperationalError, InterfaceError):
        raise  # the database, not the start, failed: retried (the container is adopted)
    except Exception as exc:
        logger.warning(
            "starting worker %s failed: %s: %s", worker_id, type(exc).__name__, str(exc)[:300]
        )
        # Killed or cancelled meanwhile (Fenced): nothing is left to roll back.
        with contextlib.suppress(Fenced):
            worker_fail(
                worker_id=worker_id,
                error=f"container start failed: {exc}",
                category="START_ERROR",
                actor="system",
            )
        return
    # Not started by us: another delivery of this message started it first (we adopted its
    # container): leave it be. Killed or cancelled meanwhile: don't leave it running.
    if not started and not Worker.objects.filter(pk=worker_id, status__in=Worker.ACTIVE).exists():
        runtime.stop(container_id=container_id)
