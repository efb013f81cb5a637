"""Transitions of an attempt (a Worker row): its life, its completion, its other endings.

Lock order everywhere: the work item row, then the worker row. Every transition is a
conditional UPDATE plus an event. A repeat of what already happened is a no-op that reports
success; a change requested by a worker that is no longer the active attempt raises Fenced.

- ``starts``: started (the container exists).
- ``lifecycle``: registered, heartbeat.
- ``completion``: complete, with metrics, review and the verification item.
- ``endings``: fail, stuck, expired by a sweep, killed — then retry, quarantine or fail.
- ``spec_attempts``: a ``spec`` attempt's completion (the spec validated, the item queued).
"""

from orchestration.services.workers.completion import Completion, worker_complete
from orchestration.services.workers.endings import (
    worker_expire,
    worker_fail,
    worker_kill,
    worker_stuck,
)
from orchestration.services.workers.lifecycle import worker_heartbeat, worker_register
from orchestration.services.workers.starts import worker_mark_started, workers_mark_started

__all__ = [
    "Completion",
    "worker_complete",
    "worker_expire",
    "worker_fail",
    "worker_heartbeat",
    "worker_kill",
    "worker_mark_started",
    "worker_register",
    "worker_stuck",
    "workers_mark_started",
]
