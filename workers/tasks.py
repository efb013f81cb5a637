"""Celery tasks that touch containers. Each takes ids, re-reads rows, and is idempotent."""

from __future__ import annotations

import logging
import time

from celery import shared_task
from django.conf import settings
from django.db.models import Value
from django.db.models.functions import Concat, Right

from orchestration.errors import Fenced, NotFound
from orchestration.forms.fields import bounded_seconds
from orchestration.models import Worker, WorkerStatus
from orchestration.services.workers import (
    Completion,
    worker_complete,
    worker_fail,
    worker_heartbeat,
    worker_stuck,
)
from orchestration.tasks import RETRY_ON_DB_ERRORS
from workers.runtime import get_runtime
from workers.services import container_keep_logs

logger = logging.getLogger(__name__)


@shared_task(
    name="workers.stop_container", time_limit=120, soft_time_limit=100, **RETRY_ON_DB_ERRORS
)
def stop_worker_container(worker_id: str) -> None:
    """Stop a finished attempt's container, keep its last lines, remove it. A no-op when it
    has none, it is gone, or the worker is (again) active."""
    worker = Worker.objects.filter(pk=worker_id).first()
    if worker is None or not worker.container_id or worker.is_active:
        return
    runtime = get_runtime()
    runtime.stop(container_id=worker.container_id, grace_seconds=10)
    container_keep_logs(runtime=runtime, worker=worker)
    runtime.remove(container_id=worker.container_id)


def _log(worker_id: str, line: str) -> None:
    Worker.objects.filter(pk=worker_id).update(
        log_tail=Right(Concat("log_tail", Value(line + "\n")), settings.LOG_TAIL_BYTES)
    )


@shared_task(name="workers.fake_run", time_limit=900, soft_time_limit=880)
def fake_run(worker_id: str) -> None:
    """The fake runtime's "container": heartbeat for ``mockSeconds``, then end as ``mock`` says.

    Stops early, quietly, once the worker is no longer active (killed, cancelled, timed out).
    """
    worker = Worker.objects.select_related("work_item").filter(pk=worker_id).first()
    if worker is None or worker.status != WorkerStatus.RUNNING:
        return
    meta = worker.work_item.metadata
    mode = str(meta.get("mock") or "success")
    seconds = bounded_seconds(meta.get("mockSeconds", 2), default=2.0, cap=600.0)
    _log(worker_id, f"mock agent: mode={mode} seconds={seconds}")
    deadline = time.monotonic() + seconds
    iteration = 0
    while True:
        iteration += 1
        try:
            worker_heartbeat(
                worker_id=worker_id,
                iteration=iteration,
                tokens_in=100 * iteration,
                tokens_out=20 * iteration,
            )
        except (Fenced, NotFound):
            _log(worker_id, "mock agent: stopped from outside")
            return
        _log(worker_id, f"mock agent: iteration {iteration}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(0.5, remaining))
    try:
        if mode == "fail":
            worker_fail(
                worker_id=worker_id, error="mock agent failed on purpose", category="AGENT_ERROR"
            )
        elif mode == "stuck":
            worker_stuck(
                worker_id=worker_id, reason="mock agent is stuck on purpose", attempts=iteration
            )
        else:
            worker_complete(
                worker_id=worker_id,
                result=Completion(
                    metrics={
                        "tokensIn": 100 * iteration,
                        "tokensOut": 20 * iteration,
                        "duration": int(seconds * 1000),
                    }
                ),
            )
    except Exception:  # a fenced or vanished worker: the run is over either way
        logger.info("mock run of worker %s ended after the worker moved on", worker_id)
