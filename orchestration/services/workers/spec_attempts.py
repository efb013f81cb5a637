"""A ``spec`` attempt that finished (SPEC_GENERATOR=agent): the spec it wrote is validated and
stored, and its item queued — or the attempt fails and the item waits in ``generating`` for
the next try (``services.specs``). No commit is checked: a spec attempt pushes nothing.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from django.db import transaction

from orchestration.choices import ErrorCategory, EventKind
from orchestration.clock import db_now
from orchestration.errors import Fenced, ValidationFailed
from orchestration.models import AttemptKind, Worker, WorkerStatus, WorkItem
from orchestration.services.events import event_record
from orchestration.services.locks import locks_release_all
from orchestration.services.specs import spec_accept, spec_failure, spec_problem
from orchestration.services.workers.lifecycle import locked_settled
from orchestration.services.workers.spend import attempt_charge, attempt_metrics_record

logger = logging.getLogger(__name__)


def spec_attempt_complete(
    *, worker_id: UUID | str, spec: str | None, metrics: dict[str, Any], model: str = ""
) -> bool:
    """The spec attempt ``worker_id`` reports ``spec``. Returns False for a repeat.

    1. Lock item then worker. A ``spec`` from a work attempt, or none from a spec attempt:
       ValidationFailed (400), nothing written. A completed worker: a repeat. Another ended
       one: Fenced.
    2. Charge what it spent (as any completion).
    3. A valid spec: worker ``completed``, the item → ``queued`` with the spec (event
       ``spec_generated``), dispatch nudged. An invalid one: worker ``failed``
       (``AGENT_ERROR``, "generated spec rejected: …"), the item back to ``generating`` with a
       backoff, or failed after SPEC_MAX_ATTEMPTS.
    """
    with transaction.atomic():
        item, worker = locked_settled(worker_id)
        if worker.kind != AttemptKind.SPEC:
            raise ValidationFailed(
                "Invalid request", details={"spec": "only a spec attempt reports a spec"}
            )
        if spec is None:
            raise ValidationFailed(
                "Invalid request", details={"spec": "a spec attempt must report the spec"}
            )
        if worker.status == WorkerStatus.COMPLETED:
            return False
        if not worker.is_active:
            raise Fenced(f"Worker is {worker.status}; it can no longer complete")
        now = db_now()
        attempt_charge(item=item, worker=worker, metrics=metrics, model=model, now=now)
        problem = spec_problem(spec)
        error = f"generated spec rejected: {problem}" if problem else ""
        Worker.objects.filter(pk=worker.pk, status__in=Worker.ACTIVE).update(
            status=WorkerStatus.FAILED if problem else WorkerStatus.COMPLETED,
            completed_at=now,
            error=error,
            error_category=ErrorCategory.AGENT_ERROR if problem else "",
        )
        locks_release_all(worker_id=worker.pk)
        actor = f"worker:{worker.pk}"
        if not (item.status in WorkItem.ACTIVE and item.worker_id == worker.pk):
            event_record(  # a superseded attempt: its item is not its to move
                work_item=item,
                worker=worker,
                kind=EventKind.ATTEMPT_FAILED if problem else EventKind.COMPLETED,
                from_status=item.status,
                to_status=item.status,
                actor=actor,
                message=error or "spec attempt finished after its item moved on",
            )
        elif problem:
            spec_failure(
                item=item,
                error=error,
                category=ErrorCategory.AGENT_ERROR,
                now=now,
                worker=worker,
                actor=actor,
            )
        else:
            spec_accept(item=item, spec=spec, now=now, worker=worker, actor=actor)
        attempt_metrics_record(item=item, worker=worker, metrics=metrics)
    logger.info("spec attempt %s finished (%s)", worker_id, problem or "spec accepted")
    return True
