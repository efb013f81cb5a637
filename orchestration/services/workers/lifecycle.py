"""An attempt's life while it runs: started, registered, heartbeat; and what every finishing
attempt reports the same way (its spend, its metrics).

Lock order everywhere: the work item row, then the worker row (``rows.locked_item_and_worker``).
A change requested by a worker that is no longer the active attempt raises Fenced.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.db.models import (
    Case,
    CharField,
    DateTimeField,
    Exists,
    Func,
    OuterRef,
    Value,
    When,
)
from django.db.models.functions import Coalesce

from orchestration.choices import EventKind
from orchestration.clock import db_now
from orchestration.errors import Fenced, ValidationFailed, WhimError
from orchestration.models import (
    FileLock,
    Worker,
    WorkerMetrics,
    WorkerStatus,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
)
from orchestration.rows import locked_item_and_worker, row_get
from orchestration.services.costs import cost_assess, cost_book, cost_charge, usd
from orchestration.services.dispatch import usage_add
from orchestration.services.events import event_record, events_record_many
from orchestration.services.locks import locks_renew

logger = logging.getLogger(__name__)


def worker_mark_started(*, worker_id: UUID | str, container_id: str) -> bool:
    """``starting → running`` and ``assigned → in_progress`` once the container exists
    (``workers_mark_started`` of one)."""
    return bool(workers_mark_started({str(worker_id): container_id}))


def workers_mark_started(containers: dict[str, str]) -> list[UUID]:
    """``starting → running`` and ``assigned → in_progress`` for each worker whose container
    now exists (worker id → container id), in one transaction of a fixed number of
    statements however many there are; returns the ids it moved. A worker no longer
    ``starting`` (killed, cancelled, started by another delivery) is left alone.

    The items are locked before the workers, each set in primary key order (the one lock
    order, ``rows.locked_item_and_worker``, for many rows at once). Inside a caller's
    transaction (the start task's, with the container start) it adds no savepoint."""
    if not containers:
        return []
    with transaction.atomic(savepoint=False):
        item_ids = Worker.objects.filter(pk__in=list(containers)).values_list("work_item_id")
        items = {
            item.pk: item
            for item in WorkItem.objects.select_for_update()
            .only("id", "status", "worker_id")
            .filter(pk__in=item_ids)
            .order_by("pk")
        }
        workers = list(
            Worker.objects.select_for_update()
            .filter(pk__in=list(containers), status=WorkerStatus.STARTING)
            .order_by("pk")
        )
        if not workers:
            return []
        now = db_now()
        moved = [worker.pk for worker in workers]
        Worker.objects.filter(pk__in=moved, status=WorkerStatus.STARTING).update(
            status=WorkerStatus.RUNNING,
            container_id=Case(
                *[When(pk=w.pk, then=Value(containers[str(w.pk)])) for w in workers],
                output_field=CharField(),
            ),
            started_at=now,
            last_heartbeat=now,
            last_progress_at=now,
        )
        WorkItem.objects.filter(
            pk__in=[w.work_item_id for w in workers],
            status=WorkItemStatus.ASSIGNED,
            worker_id__in=moved,
        ).update(status=WorkItemStatus.IN_PROGRESS, updated_at=now)
        events_record_many(
            [
                WorkItemEvent(
                    work_item_id=w.work_item_id,
                    worker_id=w.pk,
                    kind=EventKind.STARTED,
                    from_status=items[w.work_item_id].status,
                    to_status=WorkItemStatus.IN_PROGRESS,
                    data={"containerId": containers[str(w.pk)]},
                )
                for w in workers
            ]
        )
    return moved


def worker_heartbeat(
    *,
    worker_id: UUID | str,
    iteration: int,
    tokens_in: int | None = None,
    tokens_out: int | None = None,
    cost_usd: Decimal | None = None,
    model: str | None = None,
    resumed_from: str = "",
    work_item_id: UUID | None = None,
) -> None:
    """Record liveness (and progress when the iteration or token counts rise).

    Token counts and cost are the attempt's totals so far; what they add is charged to the
    cost ledger once (``costs.cost_charge``). A token count that rose by more than
    MAX_TOKENS_PER_HEARTBEAT since the last report is refused (the form bounds the totals by
    MAX_TOKENS_PER_ATTEMPT and MAX_COST_PER_ATTEMPT_USD). ``resumed_from``: the pushed commit
    the attempt continues from; the first heartbeat that carries it records one ``resumed``
    event for the attempt. ``work_item_id``: the worker's item when the caller read it
    already (the callback's authentication did), saving a read.

    The hot path (every running attempt, every few seconds): one transaction, the two row
    locks in the one order with only the columns it needs, the clock and "holds any lease?"
    read with the worker's lock, and the worker row written once; leases are renewed only
    when there are any, the item only on progress. Inside a caller's transaction it adds no
    savepoint; a refusal (Fenced, NotFound, ValidationFailed) is raised before anything is
    written and outside its atomic block, so the caller's transaction stays usable."""
    refused: WhimError | None = None
    with transaction.atomic(savepoint=False):
        try:  # a refusal writes nothing and leaves the block normally (see above)
            item, worker, now, holds_locks = _heartbeat_rows(worker_id, work_item_id)
            if not worker.is_active:
                raise Fenced(f"Worker is {worker.status}; it is no longer the active attempt")
            tokens = {"tokensIn": tokens_in, "tokensOut": tokens_out}
            tokens_rise_check(worker=worker, tokens=tokens)
        except WhimError as exc:
            refused = exc
        else:
            _heartbeat_write(
                item=item,
                worker=worker,
                now=now,
                holds_locks=holds_locks,
                report=_Report(iteration, tokens_in, tokens_out, cost_usd, model, resumed_from),
            )
    if refused is not None:
        raise refused


@dataclasses.dataclass(frozen=True)
class _Report:
    iteration: int
    tokens_in: int | None
    tokens_out: int | None
    cost_usd: Decimal | None
    model: str | None
    resumed_from: str


def _heartbeat_write(
    *, item: WorkItem, worker: Worker, now: dt.datetime, holds_locks: bool, report: _Report
) -> None:
    """What a heartbeat writes, under its row locks (``worker`` as read under them)."""
    r = report
    fields: dict[str, Any] = {"last_heartbeat": now}
    progressed = (
        r.iteration > worker.iteration
        or (r.tokens_in or 0) > worker.tokens_in
        or (r.tokens_out or 0) > worker.tokens_out
        or usd(r.cost_usd) > worker.cost_usd
    )
    if progressed:
        fields["last_progress_at"] = now
    fields["iteration"] = max(r.iteration, worker.iteration)
    # The charge (costs.cost_charge's steps) folded into the heartbeat's own UPDATE of each
    # row: one statement for the worker, at most one for the item.
    charge, cumulatives, model = cost_assess(
        worker=worker,
        tokens_in=r.tokens_in,
        tokens_out=r.tokens_out,
        cost_usd=r.cost_usd,
        model=r.model,
    )
    Worker.objects.filter(pk=worker.pk, status__in=Worker.ACTIVE).update(**fields, **cumulatives)
    advanced = r.iteration > worker.iteration
    cost_book(
        item=item,
        charge=charge,
        model=model,
        now=now,
        # The item's iteration is its current attempt's (read under the item's lock).
        item_fields={"iteration": r.iteration} if advanced and item.worker_id == worker.pk else {},
    )
    if holds_locks:
        locks_renew(worker_id=worker.pk, now=now)
    if advanced:
        usage_add(now=now, iterations=r.iteration - worker.iteration)
    if r.resumed_from:
        _resumed_record(item=item, worker=worker, commit=r.resumed_from)


# What a heartbeat reads of its rows (the rest, spec and log_tail above all, stays on disk).
_ITEM_COLUMNS = ("id", "status", "worker_id", "repo")
_WORKER_COLUMNS = (
    "id", "work_item_id", "status", "iteration", "tokens_in", "tokens_out", "cost_usd", "model",
)  # fmt: skip


def _heartbeat_rows(
    worker_id: UUID | str, work_item_id: UUID | None
) -> tuple[WorkItem, Worker, dt.datetime, bool]:
    """Lock the item, then the worker (``rows.locked_item_and_worker``'s order), reading only
    what a heartbeat needs; with the worker's lock, the database clock and whether the worker
    holds any live lease. Inside a transaction."""
    if work_item_id is None:
        work_item_id = row_get(Worker, worker_id, "Worker").work_item_id
    item = row_get(
        WorkItem.objects.select_for_update().only(*_ITEM_COLUMNS), work_item_id, "Work item"
    )
    rows = Worker.objects.select_for_update().only(*_WORKER_COLUMNS).filter(work_item_id=item.pk)
    if connection.vendor != "postgresql":  # the embedded SQLite: this host's clock
        worker = row_get(rows, worker_id, "Worker")
        return item, worker, db_now(), FileLock.objects.filter(worker_id=worker.pk).exists()
    worker = row_get(
        rows.annotate(
            db_clock=Func(function="clock_timestamp", output_field=DateTimeField()),
            holds_locks=Exists(FileLock.objects.filter(worker_id=OuterRef("pk"))),
        ),
        worker_id,
        "Worker",
    )
    return item, worker, worker.db_clock, worker.holds_locks  # type: ignore[attr-defined]


def _resumed_record(*, item: WorkItem, worker: Worker, commit: str) -> None:
    """One ``resumed`` event per attempt (under the worker's row lock: no duplicate)."""
    if WorkItemEvent.objects.filter(worker=worker, kind=EventKind.RESUMED).exists():
        return
    event_record(
        work_item=item,
        worker=worker,
        kind=EventKind.RESUMED,
        from_status=item.status,
        to_status=item.status,
        actor=f"worker:{worker.pk}",
        message=f"resumed from commit {commit[:7]}",
        data={"commitSha": commit},
    )


def tokens_rise_check(
    *, worker: Worker, tokens: dict[str, int | None], field: str | None = None
) -> None:
    """Refuse (ValidationFailed, nothing written) a token count that rose by more than
    MAX_TOKENS_PER_HEARTBEAT since the worker's last report: an agent cannot claim in one
    report what a real run spends over many. ``field`` names the request field in the
    details (``metrics`` for complete); by default each count's own name."""
    cap = settings.MAX_TOKENS_PER_HEARTBEAT
    known = {"tokensIn": worker.tokens_in, "tokensOut": worker.tokens_out}
    for key, value in tokens.items():
        rise = (value or 0) - known[key]
        if rise > cap:
            raise ValidationFailed(
                "Invalid request",
                details={
                    field or key: f"{key} rose by {rise} since the last report; at most "
                    f"{cap} per report (MAX_TOKENS_PER_HEARTBEAT)"
                },
            )


def worker_register(*, worker_id: UUID | str, work_item_id: UUID) -> WorkItem:
    """The container says hello. Safe to repeat; a fenced worker is refused."""
    with transaction.atomic():
        item, worker = locked_item_and_worker(worker_id)
        if item.pk != work_item_id:
            raise ValidationFailed(
                "Invalid request", details={"workItemId": "is not this worker's work item"}
            )
        if not worker.is_active:
            raise Fenced(f"Worker is {worker.status}; it is no longer the active attempt")
        now = db_now()
        Worker.objects.filter(pk=worker.pk, status__in=Worker.ACTIVE).update(
            last_heartbeat=now, registered_at=Coalesce("registered_at", Value(now))
        )
    return item


def attempt_charge(
    *, item: WorkItem, worker: Worker, metrics: dict[str, Any], model: str, now: dt.datetime
) -> None:
    """What a finishing attempt reports it spent (``metrics``): checked (tokens only rise, and
    by a bounded step) and charged to the ledger. Call with the item and worker rows locked."""
    tokens_rise_check(
        worker=worker,
        tokens={k: metrics.get(k) for k in ("tokensIn", "tokensOut")},
        field="metrics",
    )
    cost_charge(
        item=item,
        worker=worker,
        now=now,
        tokens_in=metrics.get("tokensIn"),
        tokens_out=metrics.get("tokensOut"),
        cost_usd=metrics.get("costUsd"),
        model=model,
    )


def attempt_metrics_record(*, item: WorkItem, worker: Worker, metrics: dict[str, Any]) -> None:
    """Keep a finished attempt's reported metrics (missing ones as 0); its tokens and cost as
    charged: the most any report said."""
    m = metrics
    WorkerMetrics.objects.update_or_create(
        worker=worker,
        defaults={
            "work_item": item,
            "tokens_in": worker.tokens_in,
            "tokens_out": worker.tokens_out,
            "cost_usd": worker.cost_usd,
            "iterations": int(m.get("iterations") or worker.iteration),
            "duration_ms": int(m.get("duration") or 0),
            "files_modified": int(m.get("filesModified") or 0),
            "tests_run": int(m.get("testsRun") or 0),
            "tests_passed": int(m.get("testsPassed") or 0),
            "tests_failed": int(m.get("testsFailed") or 0),
            "test_status": str(m.get("testStatus") or "")[:40],
        },
    )
