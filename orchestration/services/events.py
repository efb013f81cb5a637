"""The append-only event log."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db import connection

from orchestration import registry, requestid
from orchestration.models import Worker, WorkItem, WorkItemEvent
from orchestration.rows import Statement, insert_statement, statements_run


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
    """Append one event; call it inside the transaction that made the change.

    The current request id (the HTTP request, or the task it enqueued) goes in
    ``data.requestId``.

    An event that moves the item (``to_status`` set and different) is also told to the
    ``registry.item_moved`` hooks, in the same transaction (the GitHub loop's outbox rows are
    written with the change they report, or not at all).
    """
    data = dict(data or {})
    if rid := requestid.current():
        data[requestid.EVENT_KEY] = rid  # the current one wins over any key passed in
    event = WorkItemEvent.objects.create(
        work_item_id=work_item.pk if isinstance(work_item, WorkItem) else work_item,
        worker_id=worker.pk if isinstance(worker, Worker) else worker,
        kind=kind,
        from_status=from_status,
        to_status=to_status,
        actor=actor[:100],
        message=message[:10_000],
        data=data,
    )
    if to_status and to_status != from_status:
        for hook in registry.item_moved_hooks():
            hook(event)
    return event


def events_record_many(events: list[WorkItemEvent]) -> list[WorkItemEvent]:
    """Append several events in one INSERT (``event_record``'s rules: the current request id
    in ``data.requestId``, the ``item_moved`` hooks told of every move)."""
    if not events:
        return []
    [ids] = statements_run([events_insert(events)])
    return events_inserted(events, ids)


def events_insert(events: list[WorkItemEvent]) -> Statement:
    """``events_record_many``'s INSERT, to run with other statements (``statements_run``);
    hand its rows to ``events_inserted`` after."""
    rid = requestid.current()
    for event in events:
        event.data = dict(event.data or {})
        if rid:
            event.data[requestid.EVENT_KEY] = rid
        event.actor = event.actor[:100]
        event.message = event.message[:10_000]
    return insert_statement(events, returning_pk=True)


def events_inserted(events: list[WorkItemEvent], ids: list[tuple[Any, ...]]) -> list[WorkItemEvent]:
    """The events ``events_insert`` wrote, with their ids; the ``item_moved`` hooks told."""
    hooks = registry.item_moved_hooks()
    for event, (pk,) in zip(events, ids, strict=True):
        event.pk = pk
        event._state.adding, event._state.db = False, connection.alias
        if event.to_status and event.to_status != event.from_status:
            for hook in hooks:
                hook(event)
    return events
