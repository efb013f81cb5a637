"""Supervision sweeps: periodic, idempotent, level-triggered.

Each sweep looks at the rows as they are now and finishes whatever a lost message, a dead
process or a vanished container left behind. Every change goes through a conditional
transition under row locks, so a sweep is safe to run twice at once, from two beat
processes, and by hand (``manage.py whim_sweep [name]``).
"""

from __future__ import annotations

import datetime as dt
import logging
from contextlib import nullcontext
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q

from orchestration.choices import ErrorCategory, EventKind
from orchestration.clock import advisory_try_lock, db_now
from orchestration.errors import NotFound
from orchestration.models import (
    CostUsage,
    DailyUsage,
    FileLock,
    Learning,
    Worker,
    WorkerStatus,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
)
from orchestration.nudge import TaskName, send_on_commit
from orchestration.registry import sweep_register, sweeps
from orchestration.services.events import event_record
from orchestration.services.nodes import nodes_mark_lost
from orchestration.services.specs import spec_nudge
from orchestration.services.tallies import tallies_compact
from orchestration.services.workers import worker_expire
from orchestration.services.workers.beat_buffer import (
    beat_ack,
    beat_take,
    beats_dirty,
    coalescing,
)
from orchestration.services.workers.lifecycle import heartbeat_settle
from reviews.models import WebhookDelivery

logger = logging.getLogger(__name__)

BATCH = 500


def sweep_heartbeats() -> dict[str, int]:
    """Workers silent for STALE_THRESHOLD + HEARTBEAT_GRACE (by the database clock) are lost.

    The staleness is checked again under the row locks, so a heartbeat landing at the same
    moment either wins (the worker stays) or loses (it is ended and its heartbeat gets 409).
    """
    cutoff = db_now() - dt.timedelta(seconds=settings.STALE_THRESHOLD + settings.HEARTBEAT_GRACE)

    def fresh(worker: Worker) -> bool:
        return worker.last_heartbeat is not None and worker.last_heartbeat >= cutoff

    stale = Worker.objects.filter(status__in=Worker.ACTIVE, last_heartbeat__lt=cutoff)
    ended = 0
    for worker_id in stale.values_list("pk", flat=True)[:BATCH]:
        ended += worker_expire(
            worker_id=worker_id,
            to=WorkerStatus.LOST,
            category=ErrorCategory.HEARTBEAT_TIMEOUT,
            error=f"no heartbeat for more than {settings.STALE_THRESHOLD}s",
            unless=fresh,
        )
    return {"lost": ended}


def sweep_stuck() -> dict[str, int]:
    """Attempts that will not finish on their own.

    1. ``starting`` for longer than ASSIGNED_TIMEOUT (no container came up): ended, retried.
    2. ``running`` with no progress (iteration or tokens rising) for PROGRESS_TIMEOUT:
       alive but stuck — ended as stuck, retried with backoff or failed.
    3. Items ``assigned`` / ``in_progress`` with no active attempt at all (for more than a
       minute, so an attempt being created right now is left alone): back to ``queued``.
    """
    now = db_now()
    start_cutoff = now - dt.timedelta(seconds=settings.ASSIGNED_TIMEOUT)
    progress_cutoff = now - dt.timedelta(seconds=settings.PROGRESS_TIMEOUT)
    counts = {"start_timeout": 0, "no_progress": 0, "recovered": 0}

    # last_heartbeat is stamped by the database clock at the claim (and by any heartbeat).
    def started(worker: Worker) -> bool:
        return worker.status != WorkerStatus.STARTING or (
            worker.last_heartbeat is not None and worker.last_heartbeat >= start_cutoff
        )

    for worker_id in Worker.objects.filter(
        status=WorkerStatus.STARTING, last_heartbeat__lt=start_cutoff
    ).values_list("pk", flat=True)[:BATCH]:
        counts["start_timeout"] += worker_expire(
            worker_id=worker_id,
            to=WorkerStatus.LOST,
            category=ErrorCategory.START_TIMEOUT,
            error=f"no container started within {settings.ASSIGNED_TIMEOUT}s",
            unless=started,
        )

    def progressing(worker: Worker) -> bool:
        last = worker.last_progress_at or worker.started_at
        return last is None or last >= progress_cutoff

    for worker_id in (
        Worker.objects.filter(status=WorkerStatus.RUNNING)
        .filter(
            Q(last_progress_at__lt=progress_cutoff)
            | Q(last_progress_at__isnull=True, started_at__lt=progress_cutoff)
        )
        .values_list("pk", flat=True)[:BATCH]
    ):
        counts["no_progress"] += worker_expire(
            worker_id=worker_id,
            to=WorkerStatus.STUCK,
            category=ErrorCategory.NO_PROGRESS,
            error=f"alive but no progress for {settings.PROGRESS_TIMEOUT}s",
            unless=progressing,
        )

    orphan_cutoff = now - dt.timedelta(seconds=60)
    live = Worker.objects.filter(work_item=OuterRef("pk"), status__in=Worker.ACTIVE)
    orphans = WorkItem.objects.filter(
        status__in=WorkItem.ACTIVE, updated_at__lt=orphan_cutoff
    ).filter(~Exists(live))
    for item_id in orphans.values_list("pk", flat=True)[:BATCH]:
        counts["recovered"] += work_item_recover(work_item_id=item_id, cutoff=orphan_cutoff)
    return counts


def work_item_recover(*, work_item_id: UUID, cutoff: dt.datetime) -> bool:
    """An item marked active with no live attempt goes back to the queue (no retry charged:
    the attempt did not fail, the bookkeeping did) — or to ``generating``, when it has no spec
    yet (its spec attempt was the one lost)."""
    with transaction.atomic():
        item = WorkItem.objects.select_for_update().filter(pk=work_item_id).first()
        if item is None or item.status not in WorkItem.ACTIVE or item.updated_at >= cutoff:
            return False
        if Worker.objects.filter(work_item=item, status__in=Worker.ACTIVE).exists():
            return False
        now = db_now()
        to = item.waiting_status
        WorkItem.objects.filter(pk=item.pk, status=item.status).update(
            status=to, worker=None, next_retry_at=None, updated_at=now
        )
        event_record(
            work_item=item,
            kind=EventKind.RECOVERED,
            from_status=item.status,
            to_status=to,
            actor="supervisor",
            message="active without a live attempt",
        )
        if to == WorkItemStatus.GENERATING:
            spec_nudge(item)
        else:
            send_on_commit(TaskName.DISPATCH)
    return True


def sweep_beats() -> dict[str, int]:
    """Coalesced heartbeats (``beat_buffer``) written to the database: each attempt's beats
    since the last write in one transaction under its row locks, as its heartbeats would have
    been. A write that fails stays buffered for the next pass (the totals are cumulative, so
    writing them twice charges nothing twice)."""
    if not coalescing():
        return {"written": 0}
    written = 0
    for digest, worker_id, item_id in beats_dirty(BATCH):
        try:
            with transaction.atomic():
                pending = heartbeat_settle(worker_id=worker_id, work_item_id=item_id)
        except NotFound:  # its rows are gone (retention): nothing to write it to
            beat_take(digest, close=True)
            continue
        if pending is not None:
            beat_ack(digest, pending)
            written += 1
    return {"written": written}


def sweep_locks() -> dict[str, int]:
    """Leases that expired, or whose holder is no longer active, are deleted."""
    now = db_now()
    dead = FileLock.objects.filter(Q(expires_at__lte=now) | ~Q(worker__status__in=Worker.ACTIVE))
    ids = list(dead.values_list("pk", flat=True)[: BATCH * 10])
    deleted, _ = (
        FileLock.objects.filter(pk__in=ids)
        .filter(Q(expires_at__lte=now) | ~Q(worker__status__in=Worker.ACTIVE))
        .delete()
    )
    return {"deleted": deleted}


def sweep_retention() -> dict[str, int]:
    """Old history is purged in batches (never one giant DELETE).

    Terminal items older than RETENTION_DAYS go with their attempts, events and metrics;
    finished attempts' log tails older than LOG_RETENTION_DAYS are emptied; usage rows (the
    spawn budget's and the cost ledger's) older than a year and a half are dropped; webhook
    deliveries older than RETENTION_DAYS too (a redelivery that old is GitHub's own retention
    window many times over). Learnings go by their own age (RETENTION_DAYS), not with their
    item: they are the repo's knowledge, and an item's purge only unlinks them. Paused items
    are not terminal: they wait for an operator.
    """
    now = db_now()
    counts = {"items": 0, "logs": 0, "usage": 0, "deliveries": 0, "learnings": 0}
    item_cutoff = now - dt.timedelta(days=settings.RETENTION_DAYS)
    old_items = WorkItem.objects.filter(status__in=WorkItem.TERMINAL, updated_at__lt=item_cutoff)
    for _ in range(100):
        ids = list(old_items.values_list("pk", flat=True)[:BATCH])
        if not ids:
            break
        with transaction.atomic():
            WorkItemEvent.objects.filter(work_item_id__in=ids).delete()
            _, per_model = WorkItem.objects.filter(
                pk__in=ids, status__in=WorkItem.TERMINAL
            ).delete()
        counts["items"] += per_model.get("orchestration.WorkItem", 0)
    log_cutoff = now - dt.timedelta(days=settings.LOG_RETENTION_DAYS)
    old_logs = Worker.objects.filter(
        status__in=Worker.TERMINAL, completed_at__lt=log_cutoff
    ).exclude(log_tail="")
    for _ in range(100):
        ids = list(old_logs.values_list("pk", flat=True)[:BATCH])
        if not ids:
            break
        counts["logs"] += Worker.objects.filter(pk__in=ids).update(log_tail="")
    old_deliveries = WebhookDelivery.objects.filter(received_at__lt=item_cutoff)
    for _ in range(100):
        delivery_ids = list(old_deliveries.values_list("pk", flat=True)[:BATCH])
        if not delivery_ids:
            break
        counts["deliveries"] += WebhookDelivery.objects.filter(pk__in=delivery_ids).delete()[0]
    old_learnings = Learning.objects.filter(created_at__lt=item_cutoff)
    for _ in range(100):
        learning_ids = list(old_learnings.values_list("pk", flat=True)[:BATCH])
        if not learning_ids:
            break
        counts["learnings"] += Learning.objects.filter(pk__in=learning_ids).delete()[0]
    usage_cutoff = (now - dt.timedelta(days=550)).date()
    counts["usage"], _ = DailyUsage.objects.filter(date__lt=usage_cutoff).delete()
    counts["usage"] += CostUsage.objects.filter(date__lt=usage_cutoff).delete()[0]
    return counts


# The core's own sweeps; the runtime adds ``containers`` from its AppConfig (registry.py).
sweep_register("heartbeats", sweep_heartbeats)
sweep_register("stuck", sweep_stuck)
sweep_register("locks", sweep_locks)
sweep_register("retention", sweep_retention)
sweep_register("nodes", lambda: {"lost": nodes_mark_lost()})
sweep_register("beats", sweep_beats)
sweep_register("tallies", tallies_compact)  # fold the tallies' delta rows (services.tallies)


def sweep_run(*, name: str, exclusive: bool = False) -> dict[str, dict[str, int]]:
    """Run one sweep by name, or every one with ``all``; returns what each did.

    ``exclusive`` (beat's runs): a sweep another process is running right now is skipped —
    its next period catches up — so a slow pass (a container's 10 s stop grace) cannot pile
    copies of itself onto every Celery slot. By hand, a sweep always runs (safe either way).
    """
    registered = sweeps()
    names = list(registered) if name == "all" else [name]
    results = {}
    for each in names:
        with advisory_try_lock(f"whim.sweep.{each}") if exclusive else nullcontext(True) as mine:
            if not mine:
                logger.debug("sweep %s: skipped, another process is running it", each)
                continue
            results[each] = registered[each]()
        if any(results[each].values()):
            logger.info("sweep %s: %s", each, results[each])
    return results
