"""Celery tasks of the core: dispatch, sweeps, spec generation.

Messages are nudges: ids only, idempotent, safe to repeat. Tasks import services, never the
reverse: services enqueue by name (``orchestration.nudge.TaskName``).
"""

from __future__ import annotations

import logging
import math
import time

from celery import shared_task
from django.conf import settings

from orchestration import nudge
from orchestration.nudge import TaskName
from orchestration.retry import RETRY_ON_DB_ERRORS
from orchestration.services.dispatch import (
    DISPATCH_BATCH,
    dispatch_renudge_generation,
    dispatch_renudge_starts,
    dispatch_run,
)
from orchestration.services.specs import work_item_generate_spec
from orchestration.services.sweeps import sweep_run

logger = logging.getLogger(__name__)


# When this process last looked for starts and generations left behind (time.monotonic()).
_recovered_at = [-math.inf]


@shared_task(name=TaskName.DISPATCH, time_limit=120, soft_time_limit=100)
def dispatch() -> int:
    """Claim queued work while the gate allows; re-nudge starts and generations left behind.

    Nudges are coalesced (``nudge.dispatch_nudge``): the run clears the pending flag before
    it claims, and when it claimed a full batch it nudges the next run itself. The looking
    for lost nudges is level-triggered recovery, not part of a claim: a process does it at
    most once per half LOOP_INTERVAL (the beat's dispatch tick comes every LOOP_INTERVAL), so
    the runs that a burst of submissions nudges do not compete with the starts they send."""
    nudge.dispatch_pending_clear()
    claimed = dispatch_run(max_claims=DISPATCH_BATCH)
    if claimed >= DISPATCH_BATCH:  # more may be waiting: the next run, coalesced
        nudge.send_on_commit(TaskName.DISPATCH)
    now = time.monotonic()
    if now - _recovered_at[0] >= settings.LOOP_INTERVAL / 2:
        _recovered_at[0] = now
        dispatch_renudge_starts()
        dispatch_renudge_generation()
    return claimed


@shared_task(name=TaskName.SWEEP, time_limit=600, soft_time_limit=570)
def sweep(name: str = "all") -> dict[str, dict[str, int]]:
    """Beat: one supervision sweep by name (``all`` for every one)."""
    return sweep_run(name=name, exclusive=True)


# Longer than a SPEC_COMMAND run may take (SPEC_TIMEOUT), so the run's own timeout fires first.
SPEC_TASK_LIMIT = max(300, settings.SPEC_TIMEOUT + 60)


@shared_task(
    name=TaskName.GENERATE_SPEC,
    time_limit=SPEC_TASK_LIMIT + 20,
    soft_time_limit=SPEC_TASK_LIMIT,
    **RETRY_ON_DB_ERRORS,
)
def generate_spec(work_item_id: str) -> None:
    """Write a ``generating`` item's spec (template or command generator); see services.specs."""
    work_item_generate_spec(work_item_id=work_item_id)
