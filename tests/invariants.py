"""The invariants every fault test ends with."""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.db.models import Sum

from orchestration.models import DailyUsage, FileLock, Worker, WorkItem, WorkItemEvent


def assert_invariants(*, containers: list[Any] | None = None) -> None:
    """1. Every item is terminal or queued (nothing stuck assigned / in progress).
    2. No item has two live attempts.
    3. No lock is held by a worker that is not active.
    4. No labelled container exists without an active worker (``containers``: docker's
       containers of this instance, when the test ran any).
    5. The budget charged equals the attempts started (one charge per claim).
    6. No item completed twice.
    """
    stuck = WorkItem.objects.exclude(status__in=(*WorkItem.TERMINAL, "queued"))
    assert not stuck.exists(), f"items not terminal or queued: {list(stuck.values('pk', 'status'))}"
    live = Counter(
        Worker.objects.filter(status__in=Worker.ACTIVE).values_list("work_item_id", flat=True)
    )
    assert all(n == 1 for n in live.values()), f"two live attempts: {live}"
    orphan_locks = FileLock.objects.exclude(worker__status__in=Worker.ACTIVE)
    assert not orphan_locks.exists(), "a lock is held by a worker that is not active"
    if containers is not None:
        active = {
            str(pk)
            for pk in Worker.objects.filter(status__in=Worker.ACTIVE).values_list("pk", flat=True)
        }
        strays = [c.name for c in containers if c.labels.get("whim.worker") not in active]
        assert not strays, f"containers without an active worker: {strays}"
    charged = DailyUsage.objects.aggregate(n=Sum("spawns"))["n"] or 0
    assert charged == Worker.objects.count(), f"budget {charged} != attempts"
    completions = Counter(
        WorkItemEvent.objects.filter(kind="completed").values_list("work_item_id", flat=True)
    )
    assert all(n == 1 for n in completions.values()), f"completed twice: {completions}"
