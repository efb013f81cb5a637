"""File locks held by workers (the lock/unlock routes arrive with the worker protocol)."""

from __future__ import annotations

from uuid import UUID

from orchestration.models import FileLock


def locks_release_all(*, worker_id: UUID | str) -> int:
    """Free every lock a worker holds; returns how many. Call inside the transition."""
    deleted, _ = FileLock.objects.filter(worker_id=worker_id).delete()
    return deleted
