"""The ``fake`` runtime: no container at all; the ``workers.fake_run`` task plays the mock
agent (for demos, development and tests that are not about containers).

Its "container" is a Celery message, so a Redis restart can lose it; the containers sweep
then sends it again (``revive``), as the real runtimes' observer finds a lost container —
level-triggered, so the attempt does not wait for the stale-heartbeat sweep.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.db.models import Q

from orchestration import nudge
from orchestration.clock import db_now
from orchestration.fleet import node_queue
from orchestration.models import Worker, WorkerStatus, WorkItem
from orchestration.nudge import TaskName, send_on_commit
from workers.runtime import ContainerRuntime, register

logger = logging.getLogger(__name__)

# A fake run beats every half second; one silent this long has lost its message.
REVIVE_AFTER_SECONDS = 5.0


@register("fake")
class FakeRuntime(ContainerRuntime):
    """No container: a Celery task plays the mock agent (``metadata.mock`` picks the ending)."""

    name = "fake"
    isolated = False
    observable = False
    starts_in_batches = True  # a start is one message sent at commit

    def start(self, *, worker: Worker, work_item: WorkItem, token: str) -> str:
        # On the node that started it: its worker is the one "running the container".
        queue = node_queue(worker.node_id) if worker.node_id else None
        send_on_commit(TaskName.FAKE_RUN, str(worker.pk), queue=queue)
        return f"fake-{worker.pk}"

    def logs(self, *, container_id: str, lines: int) -> list[str] | None:
        worker = Worker.objects.filter(container_id=container_id).first()
        if worker is None:
            return None
        return worker.log_tail.splitlines()[-lines:]

    def revive(self) -> int:
        """Send again the run of every running fake worker whose heartbeat is older than
        REVIVE_AFTER_SECONDS, at most once per that period (marked with a conditional UPDATE
        of ``start_nudged_at``, so two sweeps send it once). A run that was only slow gets a
        duplicate, which is harmless: the run heartbeats and ends through the fenced,
        conditional transitions."""
        now = db_now()
        cutoff = now - dt.timedelta(seconds=REVIVE_AFTER_SECONDS)
        due = Worker.objects.filter(
            status=WorkerStatus.RUNNING,
            container_id__startswith="fake-",
            last_heartbeat__lt=cutoff,
        ).filter(Q(start_nudged_at__isnull=True) | Q(start_nudged_at__lt=cutoff))
        sent = 0
        for worker_id, node in list(due.values_list("pk", "node_id")[:500]):
            if due.filter(pk=worker_id).update(start_nudged_at=now):
                try:
                    queue = node_queue(node) if node else None
                    nudge.send(TaskName.FAKE_RUN, str(worker_id), queue=queue)
                except Exception as exc:  # broker still down: the mark lapses, sent again later
                    logger.warning(
                        "could not re-send run of %s (%s)", worker_id, type(exc).__name__
                    )
                    continue
                sent += 1
        return sent
