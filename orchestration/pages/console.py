"""The console pages' selectors: the dashboard's summary, live workers, locks, an item's attempts.

Each returns typed rows (frozen dataclasses, in TypedDict page contexts) with what a page computes
per row — a worker's heartbeat age, a lock's expiry — next to the model instance, instead of
attributes added to it. Reads only; the dashboard reads the same selectors as /api/status and
/api/metrics.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, TypedDict

from django.conf import settings

from orchestration.clock import db_now
from orchestration.models import FileLock, Learning, Worker, WorkerMetrics, WorkItem, WorkItemType
from orchestration.pages.charts import Chart, Throughput, queue_depth_chart, throughput_chart
from orchestration.pages.costs import CostPanel, cost_panel
from orchestration.pages.explain import gate_sentence
from orchestration.readings import readings_read
from orchestration.selectors import metrics_summary, status_summary
from orchestration.services.dispatch import GateDecision, gate_decide

# --- dashboard -------------------------------------------------------------------------------


class DashboardSummary(TypedDict):
    """Everything the dashboard shows (the template's context)."""

    now: dt.datetime
    status: dict[str, Any]
    metrics: dict[str, Any]
    gate: GateDecision
    gate_sentence: str
    budget_percent: int
    oldest: dt.datetime | None
    avg_duration: dt.timedelta
    success_percent: float
    throughput: Throughput
    queue_depth: Chart
    cost: CostPanel
    flower_url: str


def dashboard_summary(*, broker_ok: bool = True) -> DashboardSummary:
    """Everything the dashboard shows, from the same selectors as /api/status and /api/metrics,
    which share one reading of the tallies, the clock and today's finished items."""
    readings = readings_read()
    now = readings.scalars.now
    status = status_summary(broker_ok=broker_ok, readings=readings)
    metrics = metrics_summary(readings=readings)
    gate = gate_decide(
        now=now,
        last_spawn_at=readings.scalars.last_spawn_at,
        active=readings.scalars.active_workers,
        spawns=readings.scalars.spawns_today,
        spent=readings.scalars.cost_today,
    )
    budget_used = status["rateLimits"]["iterationsToday"]
    budget = status["rateLimits"]["dailyBudget"] or 0
    oldest = status["queue"]["oldest"]
    pending = readings.tallies.count(statuses=WorkItem.PENDING)
    return {
        "now": now,
        "status": status,
        "metrics": metrics,
        "gate": gate,
        "gate_sentence": gate_sentence(gate, now=now),
        "budget_percent": min(100, round(100 * budget_used / budget)) if budget else 100,
        "oldest": dt.datetime.fromisoformat(oldest) if oldest else None,
        "avg_duration": dt.timedelta(milliseconds=metrics["avgCompletionTime"]),
        "success_percent": round(metrics["successRate"] * 100, 1),
        "throughput": throughput_chart(now, hourly=readings.recent.hourly),
        "queue_depth": queue_depth_chart(now, depth_now=pending, flow=readings.recent.flow),
        "cost": cost_panel(now),
        "flower_url": flower_url(),
    }


def flower_url() -> str:
    """Where Flower answers (FLOWER_URL; by default localhost on FLOWER_PORT)."""
    return str(settings.FLOWER_URL)


# --- workers -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WorkerRow:
    """An active worker as the workers page shows it."""

    worker: Worker
    # Seconds since the last heartbeat; None before the first one.
    heartbeat_age: float | None
    # Active, and its last heartbeat is older than STALE_THRESHOLD.
    stale: bool
    # Iterations done out of the item's maximum, 0..100.
    progress_percent: int


class WorkersPage(TypedDict):
    """Active workers (all, oldest first) and the most recent finished ones (newest first)."""

    active: list[WorkerRow]
    recent: list[Worker]
    now: dt.datetime


def _worker_row(worker: Worker, now: dt.datetime) -> WorkerRow:
    beat = worker.last_heartbeat
    maxi = worker.work_item.max_iterations or 1
    return WorkerRow(
        worker=worker,
        heartbeat_age=(now - beat).total_seconds() if beat else None,
        stale=bool(
            worker.is_active
            and beat is not None
            and (now - beat).total_seconds() > settings.STALE_THRESHOLD
        ),
        progress_percent=min(100, round(100 * worker.iteration / maxi)),
    )


def workers_live(*, limit: int = 100) -> WorkersPage:
    """Active workers (all) with heartbeat ages, and the most recent finished ones."""
    now = db_now()
    active = (
        Worker.objects.filter(status__in=Worker.ACTIVE)
        .select_related("work_item")
        .order_by("created_at")
    )
    recent = list(
        Worker.objects.filter(status__in=Worker.TERMINAL)
        .select_related("work_item")
        .order_by("-created_at")[:limit]
    )
    return {"active": [_worker_row(w, now) for w in active], "recent": recent, "now": now}


# --- locks -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LockRow:
    """A file lock as the locks page shows it."""

    lock: FileLock
    # Past its lease: it no longer holds, though the row stays until something clears it.
    expired: bool
    held_for: dt.timedelta


class LocksPage(TypedDict):
    """The first ``limit`` locks by repo and path; ``more`` when there are others."""

    locks: list[LockRow]
    more: bool
    now: dt.datetime


def locks_list(*, limit: int = 500) -> LocksPage:
    """File locks with their holders, by repo and path; expired ones flagged."""
    now = db_now()
    locks = list(
        FileLock.objects.select_related("worker", "worker__work_item").order_by("repo", "path")[
            : limit + 1
        ]
    )
    rows = [
        LockRow(lock=lock, expired=lock.expires_at <= now, held_for=now - lock.acquired_at)
        for lock in locks[:limit]
    ]
    return {"locks": rows, "more": len(locks) > limit, "now": now}


# --- one work item -----------------------------------------------------------------------------


def item_and_attempts(pk: Any) -> tuple[WorkItem | None, list[Worker]]:
    """The item and its attempts, oldest first, with their metrics: one query when it has
    any (the attempts bring their item), two when it has none; (None, []) if it is gone."""
    attempts = list(
        Worker.objects.filter(work_item_id=pk)
        .select_related("work_item", "metrics")
        .order_by("created_at")
    )
    if not attempts:
        return WorkItem.objects.filter(pk=pk).first(), []
    item = attempts[0].work_item
    for attempt in attempts:
        attempt.work_item = item  # one instance for the page
    return item, attempts


# Learnings listed on an item's page at most (the admin has the rest).
ITEM_LEARNINGS_MAX = 50


class ItemOutcome(TypedDict):
    """What an item's page shows of its result beyond the row: the verification items that
    check it, its latest attempt's test results, its reviews and its learnings."""

    verifications: list[WorkItem]
    latest_metrics: WorkerMetrics | None
    reviews: list[Any]
    learnings: list[Learning]
    learnings_more: bool


def item_outcome(item: WorkItem, attempts: list[Worker]) -> ItemOutcome:
    """The verification children (newest first), the latest attempt's metrics (tests), the
    reviews (oldest first) and the learnings (newest first) of ``item``.

    Learnings and verification children are what an attempt's completion leaves
    (``services.workers.completion``): an item no attempt ran has none, and costs no query
    for them. Reviews are read always (a GitHub review names the item by its pull request)."""
    reviews = list(item.reviews.order_by("created_at"))
    if not attempts:
        return {
            "verifications": [],
            "latest_metrics": None,
            "reviews": reviews,
            "learnings": [],
            "learnings_more": False,
        }
    learnings = list(item.learnings.order_by("-created_at", "-id")[: ITEM_LEARNINGS_MAX + 1])
    reported = [a.metrics for a in attempts if hasattr(a, "metrics")]
    return {
        "verifications": list(
            item.children.filter(type=WorkItemType.VERIFICATION).order_by("-created_at")
        ),
        "latest_metrics": max(reported, key=lambda m: (m.created_at, m.pk), default=None),
        "reviews": reviews,
        "learnings": learnings[:ITEM_LEARNINGS_MAX],
        "learnings_more": len(learnings) > ITEM_LEARNINGS_MAX,
    }
