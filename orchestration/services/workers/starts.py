"""An attempt's start: ``starting → running`` once its container exists.

On the pickup's path (an item committed → its attempt started), so the row locks and the
database clock are read in one round trip (``rows.statements_run``), in the one lock order:
the items, then the workers, each in primary key order.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db import connection, transaction
from django.db.models import Case, CharField, Value, When

from orchestration import clock as clock_module
from orchestration.choices import EventKind
from orchestration.clock import db_now
from orchestration.models import Worker, WorkerStatus, WorkItem, WorkItemEvent, WorkItemStatus
from orchestration.rows import Statement, statements_run
from orchestration.services.events import events_record_many


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
    pk = Worker._meta.pk
    assert pk is not None
    ids = [pk.to_python(worker_id) for worker_id in containers]
    with transaction.atomic(savepoint=False):
        item_rows, worker_rows, [(clock,)] = statements_run(_locks(ids))
        if not worker_rows:
            return []
        statuses = {pk.to_python(item): status for item, status in item_rows}
        workers = [(pk.to_python(w), pk.to_python(item)) for w, item in worker_rows]
        now = clock or db_now()  # the database's clock, read after the locks (SQLite: none)
        moved = [worker for worker, _ in workers]
        Worker.objects.filter(pk__in=moved, status=WorkerStatus.STARTING).update(
            status=WorkerStatus.RUNNING,
            container_id=Case(
                *[When(pk=w, then=Value(containers[str(w)])) for w in moved],
                output_field=CharField(),
            ),
            started_at=now,
            last_heartbeat=now,
            last_progress_at=now,
        )
        WorkItem.objects.filter(
            pk__in=[item for _, item in workers],
            status=WorkItemStatus.ASSIGNED,
            worker_id__in=moved,
        ).update(status=WorkItemStatus.IN_PROGRESS, updated_at=now)
        events_record_many(
            [
                WorkItemEvent(
                    work_item_id=item,
                    worker_id=worker,
                    kind=EventKind.STARTED,
                    from_status=statuses[item],
                    to_status=WorkItemStatus.IN_PROGRESS,
                    data={"containerId": containers[str(worker)]},
                )
                for worker, item in workers
            ]
        )
    return moved


def _locks(ids: list[Any]) -> list[Statement]:
    """Lock the workers' items, then the ``starting`` workers; then read the database clock."""
    quote = connection.ops.quote_name
    workers, items = quote(Worker._meta.db_table), quote(WorkItem._meta.db_table)
    params = [Worker._meta.pk.get_db_prep_value(i, connection) for i in ids]
    marks = ", ".join(["%s"] * len(ids))
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    clock = clock_module.CLOCK_SQL if connection.vendor == "postgresql" else "NULL"
    return [
        (
            f"SELECT id, status FROM {items} WHERE id IN "  # noqa: S608 (the models' own names)
            f"(SELECT work_item_id FROM {workers} WHERE id IN ({marks})) ORDER BY id{lock}",
            params,
        ),
        (
            f"SELECT id, work_item_id FROM {workers} "  # noqa: S608
            f"WHERE id IN ({marks}) AND status = %s ORDER BY id{lock}",
            [*params, WorkerStatus.STARTING],
        ),
        (f"SELECT {clock}", []),
    ]
