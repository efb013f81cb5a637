"""The append-only event log."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from orchestration.models import Worker, WorkItem, WorkItemEvent


def event_record(
    *,
    work_item: WorkItem | UUID | str,
    kind: str,
    from_status: str = "",
    to_status: str = "",
    actor: str = "system",
    message: str = "",
    worker: Worker | UUID | str | None = None,
    data: dict[str, Any] | None = None,
) -> WorkItemEvent:
    """Append one event; call it inside the transaction that made the change."""
    return WorkItemEvent.objects.create(
        work_item_id=work_item.pk if isinstance(work_item, WorkItem) else work_item,
        worker_id=worker.pk if isinstance(worker, Worker) else worker,
        kind=kind,
        from_status=from_status,
        to_status=to_status,
        actor=actor[:100],
        message=message[:10_000],
        data=data or {},
    )
