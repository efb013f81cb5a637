"""File locks: leases on repo paths held by one active worker, all or nothing per call
(or, when the caller asks as the original Whim's worker does, each free path taken).

A lease lasts LOCK_TTL and every heartbeat of its holder renews it while it is live (a lapsed
one is never revived: the holder must lock the path again). A lease that expired, or
whose holder is no longer active, no longer blocks anyone: the next acquirer takes it over
(the supervision sweep also deletes such rows).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q

from orchestration.choices import EventKind
from orchestration.clock import db_now
from orchestration.errors import Fenced, ValidationFailed
from orchestration.models import FileLock, Worker
from orchestration.rows import locked_item_and_worker
from orchestration.services.events import event_record


@dataclasses.dataclass(frozen=True)
class LockResult:
    acquired: bool
    conflicting_worker: UUID | None = None
    blocked_files: tuple[str, ...] = ()
    acquired_files: tuple[str, ...] = ()


def _lease_end(now: dt.datetime) -> dt.datetime:
    return now + dt.timedelta(seconds=settings.LOCK_TTL)


def _active_holder(worker_id: UUID | str, repo: str) -> Worker:
    item, worker = locked_item_and_worker(worker_id)
    if not worker.is_active:
        raise Fenced(f"Worker is {worker.status}; it holds no locks any more")
    if repo != item.repo:
        raise ValidationFailed("Invalid request", details={"repo": "is not this worker's repo"})
    return worker


def _clear_stale(repo: str, files: list[str], now: dt.datetime) -> None:
    FileLock.objects.filter(repo=repo, path__in=files).filter(
        Q(expires_at__lte=now) | ~Q(worker__status__in=Worker.ACTIVE)
    ).delete()


def locks_acquire(
    *, worker_id: UUID | str, repo: str, files: list[str], partial: bool = False
) -> LockResult:
    """Lock every path in ``files`` for the worker, or none of them (``partial``: see
    locks_acquire_partial).

    1. Lock the worker's item and worker rows (fencing: only an active worker may lock).
    2. Clear leases on these paths that expired or whose holder is no longer active.
    3. Any path still held by another worker: refuse, naming the holder and blocked paths.
    4. Renew the worker's own leases; insert the rest. A concurrent insert of the same path
       by another worker loses on the unique constraint and is answered as a refusal.
    """
    if partial:
        return locks_acquire_partial(worker_id=worker_id, repo=repo, files=files)
    with transaction.atomic():
        worker = _active_holder(worker_id, repo)
        now = db_now()
        _clear_stale(repo, files, now)
        held = list(FileLock.objects.filter(repo=repo, path__in=files).select_for_update())
        blocked = sorted(lock.path for lock in held if lock.worker_id != worker.pk)
        if blocked:
            holder = next(lock.worker_id for lock in held if lock.worker_id != worker.pk)
            _record(worker, EventKind.LOCK_BLOCKED, blocked, holder)
            return LockResult(False, holder, tuple(blocked))
        mine = {lock.path for lock in held}
        FileLock.objects.filter(worker=worker, repo=repo, path__in=mine).update(
            expires_at=_lease_end(now)
        )
        try:
            with transaction.atomic():
                FileLock.objects.bulk_create(
                    [
                        FileLock(repo=repo, path=path, worker=worker, expires_at=_lease_end(now))
                        for path in files
                        if path not in mine
                    ]
                )
        except IntegrityError:
            taken = FileLock.objects.filter(repo=repo, path__in=files).exclude(worker=worker)
            first = taken.first()
            paths = sorted(taken.values_list("path", flat=True))
            _record(worker, EventKind.LOCK_BLOCKED, paths, first.worker_id if first else None)
            return LockResult(False, first.worker_id if first else None, tuple(paths))
        _record(worker, EventKind.LOCKS_ACQUIRED, files, None)
    return LockResult(True, acquired_files=tuple(sorted(set(files))))


def locks_acquire_partial(*, worker_id: UUID | str, repo: str, files: list[str]) -> LockResult:
    """The original Whim's semantics: take every path that is free (or already the worker's),
    report the rest as blocked. ``acquired`` is True only when nothing was blocked.

    Stale leases are cleared as in locks_acquire; the worker's own named leases are renewed;
    the free paths are inserted with ON CONFLICT DO NOTHING (a concurrent insert of the same
    path waits for the other transaction, then loses), and the rows read back decide. Paths
    go in sorted order so that two callers never wait on each other's inserts in a cycle.
    """
    wanted = sorted(set(files))
    with transaction.atomic():
        worker = _active_holder(worker_id, repo)
        now = db_now()
        _clear_stale(repo, files, now)
        lease = _lease_end(now)
        FileLock.objects.filter(worker=worker, repo=repo, path__in=files).update(expires_at=lease)
        FileLock.objects.bulk_create(
            [FileLock(repo=repo, path=path, worker=worker, expires_at=lease) for path in wanted],
            ignore_conflicts=True,
        )
        holders = dict(
            FileLock.objects.filter(repo=repo, path__in=files).values_list("path", "worker_id")
        )
        acquired = [path for path in wanted if holders.get(path) == worker.pk]
        blocked = [path for path in wanted if holders.get(path) != worker.pk]
        holder = next((holders[p] for p in blocked if holders.get(p) is not None), None)
        if acquired:
            _record(worker, EventKind.LOCKS_ACQUIRED, acquired, None)
        if blocked:
            _record(worker, EventKind.LOCK_BLOCKED, blocked, holder)
    return LockResult(not blocked, holder, tuple(blocked), tuple(acquired))


def _record(worker: Worker, kind: EventKind, paths: list[str], holder: UUID | None) -> None:
    """An event on the item's timeline (why it waits, and for whom)."""
    event_record(
        work_item=worker.work_item_id,
        worker=worker,
        kind=kind,
        actor=f"worker:{worker.pk}",
        message=", ".join(paths[:20]) + (" …" if len(paths) > 20 else ""),
        data={"files": paths[:100], "holder": str(holder) if holder else None},
    )


def locks_release(*, worker_id: UUID | str, repo: str, files: list[str]) -> int:
    """Release some of the worker's own locks (others' locks are untouched)."""
    with transaction.atomic():
        worker = _active_holder(worker_id, repo)
        deleted, _ = FileLock.objects.filter(worker=worker, repo=repo, path__in=files).delete()
    return deleted


def locks_renew(*, worker_id: UUID | str, now: dt.datetime) -> int:
    """Extend the leases the worker still holds (called by its heartbeat, in its
    transaction). A lease that already lapsed is not revived: another worker may have been
    told the path was free; the holder must lock it again."""
    return FileLock.objects.filter(worker_id=worker_id, expires_at__gt=now).update(
        expires_at=_lease_end(now)
    )


def locks_release_all(*, worker_id: UUID | str) -> int:
    """Free every lock a worker holds; returns how many. Call inside the transition."""
    deleted, _ = FileLock.objects.filter(worker_id=worker_id).delete()
    return deleted


def lock_release(*, lock_id: int, actor: str, reason: str = "") -> bool:
    """Free one file lock by hand (an operator unsticking a stuck holder), with an event.

    Releasing a lock that is already gone is a no-op (False).
    """
    with transaction.atomic():
        lock = FileLock.objects.select_related("worker").filter(pk=lock_id).first()
        if lock is None:
            return False
        deleted, _ = FileLock.objects.filter(pk=lock.pk).delete()
        if not deleted:
            return False
        event_record(
            work_item=lock.worker.work_item_id,
            worker=lock.worker_id,
            kind=EventKind.LOCK_RELEASED,
            actor=actor,
            message=f"{lock.repo}:{lock.path}" + (f" ({reason})" if reason else ""),
            data={"files": [lock.path], "repo": lock.repo, "reason": reason},
        )
    return True
