"""An attempt's life while it runs (its start: ``starts``): registered, heartbeat (the slow
path, and the writing of coalesced beats: ``beat_buffer``), and the settled row locks every
ending takes.

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

from django.db import connection, transaction
from django.db.models import (
    DateTimeField,
    Exists,
    Func,
    OuterRef,
    Value,
)
from django.db.models.functions import Coalesce

from orchestration.choices import EventKind
from orchestration.clock import db_now
from orchestration.errors import Fenced, ValidationFailed, WhimError
from orchestration.models import (
    FileLock,
    Worker,
    WorkItem,
    WorkItemEvent,
)
from orchestration.rows import locked_item_and_worker, row_get
from orchestration.services.costs import cost_assess, cost_book, cost_charge, usd
from orchestration.services.dispatch import usage_add
from orchestration.services.events import event_record
from orchestration.services.locks import locks_renew
from orchestration.services.workers.beat_buffer import Pending, beat_open, beat_take, coalescing
from orchestration.services.workers.spend import tokens_rise_check

logger = logging.getLogger(__name__)


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

    This is the slow path of a coalesced heartbeat (``beat_buffer``): the beats buffered
    since the last write are written first, and once this beat is written the fast path is
    opened, all under the row locks.

    One transaction, the two row locks in the one order with only the columns it needs, the
    clock and "holds any lease?" read with the worker's lock, and the worker row written once;
    leases are renewed only when there are any, the item only on progress. Inside a caller's
    transaction it adds no savepoint; a refusal (Fenced, NotFound, ValidationFailed) writes
    nothing of its own and is raised outside its atomic block, so the caller's transaction
    stays usable."""
    refused: WhimError | None = None
    report = _Report(iteration, tokens_in, tokens_out, cost_usd, model, resumed_from)
    with transaction.atomic(savepoint=False):
        try:  # a refusal writes nothing and leaves the block normally (see above)
            item, worker, now, holds_locks = _heartbeat_rows(worker_id, work_item_id)
            if coalescing() and _settle(item, worker, close=True, read=(now, holds_locks)):
                item, worker, now, holds_locks = _heartbeat_rows(worker_id, item.pk)  # as written
            if not worker.is_active:
                raise Fenced(f"Worker is {worker.status}; it is no longer the active attempt")
            tokens = {"tokensIn": tokens_in, "tokensOut": tokens_out}
            tokens_rise_check(worker=worker, tokens=tokens)
        except WhimError as exc:
            refused = exc
        else:
            _heartbeat_write(
                item=item, worker=worker, now=now, holds_locks=holds_locks, report=report
            )
            if coalescing():
                beat_open(
                    digest=worker.token_hash,
                    worker_id=str(worker.pk),
                    work_item_id=str(item.pk),
                    totals=(
                        max(iteration, worker.iteration),
                        max(tokens_in or 0, worker.tokens_in),
                        max(tokens_out or 0, worker.tokens_out),
                    ),
                )
    if refused is not None:
        raise refused


def heartbeat_settle(*, worker_id: UUID | str, work_item_id: UUID | str) -> Pending | None:
    """Write the attempt's buffered beats (``beat_buffer``), as its heartbeats would have been
    written when they came, leaving its fast path open (the "beats" sweep); returns what it
    wrote. An ended attempt's is closed instead, what it held charged. Locks the item, then
    the worker: inside a transaction."""
    item, worker, now, holds_locks = _heartbeat_rows(worker_id, work_item_id)
    return _settle(item, worker, close=False, read=(now, holds_locks))


def locked_settled(worker_id: UUID | str) -> tuple[WorkItem, Worker]:
    """``rows.locked_item_and_worker`` for an ending, its first step done
    (``beats_settled``). Inside a transaction."""
    item, worker = locked_item_and_worker(worker_id)
    if beats_settled(item, worker):
        item.refresh_from_db()  # as written
        worker.refresh_from_db()
    return item, worker


def beats_settled(item: WorkItem, worker: Worker) -> bool:
    """An ending's first step, under the row locks its caller holds: the attempt's buffered
    beats written and its fast path closed, so a beat after the ending takes the slow path and
    gets 409 and no beat answered 200 goes unwritten. True when it wrote (the rows the caller
    holds in memory are then behind)."""
    return coalescing() and _settle(item, worker, close=True) is not None


def _settle(
    item: WorkItem,
    worker: Worker,
    *,
    close: bool,
    read: tuple[dt.datetime, bool] | None = None,
) -> Pending | None:
    """Take the buffered beats and write them under the row locks the caller holds; returns
    what it wrote. ``read``: the clock and "holds any lease?" as read with the worker's lock
    (else read here, and only when there is something to write)."""
    pending = beat_take(worker.token_hash, close=close or not worker.is_active)
    if pending is None:
        return None
    now, holds_locks = read or _clock_and_leases(worker)
    if not worker.is_active:
        # It ended while Redis was away (its ending could not take them): what these beats
        # reported was still spent. Charged (the difference from what was), nothing else.
        cost_charge(
            item=item,
            worker=worker,
            now=now - dt.timedelta(seconds=pending.age),
            tokens_in=pending.tokens_in,
            tokens_out=pending.tokens_out,
            cost_usd=pending.cost_usd,
            model=pending.model,
        )
        return pending
    _heartbeat_write(
        item=item,
        worker=worker,
        now=now,
        holds_locks=holds_locks,
        report=_Report(
            pending.iteration,
            pending.tokens_in,
            pending.tokens_out,
            pending.cost_usd,
            pending.model,
            "",
        ),
        at=now - dt.timedelta(seconds=pending.age),
        progress_at=(
            None
            if pending.progress_age is None
            else now - dt.timedelta(seconds=pending.progress_age)
        ),
    )
    return pending


@dataclasses.dataclass(frozen=True)
class _Report:
    iteration: int
    tokens_in: int | None
    tokens_out: int | None
    cost_usd: Decimal | None
    model: str | None
    resumed_from: str


def _heartbeat_write(
    *,
    item: WorkItem,
    worker: Worker,
    now: dt.datetime,
    holds_locks: bool,
    report: _Report,
    at: dt.datetime | None = None,
    progress_at: dt.datetime | None = None,
) -> None:
    """What a heartbeat writes, under its row locks (``worker`` as read under them). ``at``:
    when a buffered beat came (else ``now``, the clock under the locks), ``progress_at``:
    when its last progress did; neither moves the worker's times back."""
    r = report
    at = at or now
    fields: dict[str, Any] = {"last_heartbeat": _latest(at, worker.last_heartbeat)}
    progressed = (
        r.iteration > worker.iteration
        or (r.tokens_in or 0) > worker.tokens_in
        or (r.tokens_out or 0) > worker.tokens_out
        or usd(r.cost_usd) > worker.cost_usd
    )
    if progressed:
        fields["last_progress_at"] = _latest(progress_at or at, worker.last_progress_at)
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
        now=at,
        # The item's iteration is its current attempt's (read under the item's lock).
        item_fields={"iteration": r.iteration} if advanced and item.worker_id == worker.pk else {},
    )
    if holds_locks:  # leases run from the write (a buffered beat's renewal is as late)
        locks_renew(worker_id=worker.pk, now=now)
    if advanced:
        usage_add(now=at, iterations=r.iteration - worker.iteration)
    if r.resumed_from:
        _resumed_record(item=item, worker=worker, commit=r.resumed_from)


def _latest(at: dt.datetime, before: dt.datetime | None) -> dt.datetime:
    return at if before is None else max(at, before)


# What a heartbeat reads of its rows (the rest, spec and log_tail above all, stays on disk).
_ITEM_COLUMNS = ("id", "status", "worker_id", "repo")
_WORKER_COLUMNS = (
    "id", "work_item_id", "status", "iteration", "tokens_in", "tokens_out", "cost_usd", "model",
    "token_hash", "last_heartbeat", "last_progress_at",
)  # fmt: skip


def _heartbeat_rows(
    worker_id: UUID | str, work_item_id: UUID | str | None
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
        return item, worker, *_clock_and_leases(worker)
    worker = row_get(
        rows.annotate(
            db_clock=Func(function="clock_timestamp", output_field=DateTimeField()),
            holds_locks=Exists(FileLock.objects.filter(worker_id=OuterRef("pk"))),
        ),
        worker_id,
        "Worker",
    )
    return item, worker, worker.db_clock, worker.holds_locks  # type: ignore[attr-defined]


def _clock_and_leases(worker: Worker) -> tuple[dt.datetime, bool]:
    """The clock and whether the worker holds any lease, in statements of their own."""
    return db_now(), FileLock.objects.filter(worker_id=worker.pk).exists()


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
