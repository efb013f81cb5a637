"""Read-side queries for the operator's console (web pages), beyond ``selectors``.

Everything here reads; nothing changes a row. Charts are computed from the rows themselves
(WorkItem.completed_at, WorkItemEvent status changes), so they need no extra bookkeeping.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.db.models import Count, Q
from django.db.models.functions import TruncHour
from django.utils import timezone

from orchestration.clock import db_now
from orchestration.models import (
    FileLock,
    Worker,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
)
from orchestration.selectors import metrics_summary, status_summary
from orchestration.services.dispatch import GateDecision, gate_status

logger = logging.getLogger(__name__)

# --- dashboard -------------------------------------------------------------------------------

CHART_HOURS = 24


@dataclasses.dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    # A second series stacked on top of the first (failed over completed), same scale.
    y2: float = 0.0
    height2: float = 0.0


@dataclasses.dataclass(frozen=True)
class Chart:
    """An inline SVG chart, computed here and drawn by a template (which escapes labels)."""

    width: int
    height: int
    bars: list[Bar]
    max_value: int
    first_label: str
    last_label: str
    total: int
    points: str = ""


def _hour_floor(when: dt.datetime) -> dt.datetime:
    return when.replace(minute=0, second=0, microsecond=0)


def _bars(
    values: list[int],
    hours: list[dt.datetime],
    *,
    width: int,
    height: int,
    stacked: list[int] | None = None,
    names: tuple[str, str] = ("", ""),
) -> Chart:
    on_top = stacked or [0] * len(values)
    sums = [a + b for a, b in zip(values, on_top, strict=True)]
    top = max(sums) if sums and max(sums) > 0 else 1
    slot = width / max(len(values), 1)
    bars = []
    points = []
    for i, (value, extra, hour) in enumerate(zip(values, on_top, hours, strict=True)):
        h = (value / top) * (height - 4)
        h2 = (extra / top) * (height - 4)
        local = timezone.localtime(hour)
        label = f"{local:%H:00}: {value}{names[0]}" + (f", {extra}{names[1]}" if stacked else "")
        bars.append(
            Bar(
                x=round(i * slot + 1, 1),
                y=round(height - h, 1),
                width=round(max(slot - 2, 1), 1),
                height=round(h, 1),
                label=label,
                y2=round(height - h - h2, 1),
                height2=round(h2, 1),
            )
        )
        points.append(f"{round(i * slot + slot / 2, 1)},{round(height - h, 1)}")
    return Chart(
        width=width,
        height=height,
        bars=bars,
        max_value=max(sums) if sums else 0,
        first_label=f"{timezone.localtime(hours[0]):%H:00}" if hours else "",
        last_label=f"{timezone.localtime(hours[-1]):%H:00}" if hours else "",
        total=sum(values),
        points=" ".join(points),
    )


def throughput_chart(now: dt.datetime, *, hours: int = CHART_HOURS) -> dict[str, Any]:
    """Items finished per hour over the last ``hours``: completed and failed, one query."""
    end = _hour_floor(now)
    start = end - dt.timedelta(hours=hours - 1)
    slots = [start + dt.timedelta(hours=i) for i in range(hours)]
    rows = (
        WorkItem.objects.filter(
            completed_at__gte=start,
            status__in=(WorkItemStatus.COMPLETED, WorkItemStatus.FAILED),
        )
        .annotate(hour=TruncHour("completed_at"))
        .values("hour", "status")
        .annotate(n=Count("pk"))
    )
    counts: dict[tuple[dt.datetime, str], int] = {
        (row["hour"], row["status"]): row["n"] for row in rows
    }
    completed = [counts.get((s, WorkItemStatus.COMPLETED), 0) for s in slots]
    failed = [counts.get((s, WorkItemStatus.FAILED), 0) for s in slots]
    chart = _bars(
        completed,
        slots,
        width=480,
        height=80,
        stacked=failed,
        names=(" completed", " failed"),
    )
    return {"chart": chart, "completed": sum(completed), "failed": sum(failed)}


def queue_depth_chart(now: dt.datetime, *, hours: int = CHART_HOURS) -> Chart:
    """Items waiting (generating + queued) at the end of each of the last ``hours``.

    1. Take the depth now from the rows.
    2. Count, per hour, the events that entered the waiting states and those that left them.
    3. Walk back from now: depth before an hour = depth after it - entered + left.
    """
    pending = tuple(str(s) for s in WorkItem.PENDING)
    depth_now = WorkItem.objects.filter(status__in=pending).count()
    end = _hour_floor(now)
    start = end - dt.timedelta(hours=hours - 1)
    recent = WorkItemEvent.objects.filter(created_at__gte=start)
    entered = Q(to_status__in=pending) & ~Q(from_status__in=pending)
    left = Q(from_status__in=pending) & ~Q(to_status__in=pending) & ~Q(to_status="")
    rows = (
        recent.annotate(hour=TruncHour("created_at"))
        .values("hour")
        .annotate(entered=Count("pk", filter=entered), left=Count("pk", filter=left))
    )
    delta = {row["hour"]: row["entered"] - row["left"] for row in rows}
    slots = [start + dt.timedelta(hours=i) for i in range(hours)]
    depths: list[int] = []
    depth = depth_now
    for slot in reversed(slots):
        depths.append(max(depth, 0))
        depth -= delta.get(slot, 0)
    depths.reverse()
    return _bars(depths, slots, width=480, height=80, names=(" waiting", ""))


def dashboard_summary(*, broker_ok: bool = True) -> dict[str, Any]:
    """Everything the dashboard shows, from the same selectors as /api/status and /api/metrics."""
    now = db_now()
    status = status_summary(broker_ok=broker_ok)
    metrics = metrics_summary()
    gate = gate_status()
    budget_used = status["rateLimits"]["iterationsToday"]
    budget = status["rateLimits"]["dailyBudget"] or 0
    oldest = status["queue"]["oldest"]
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
        "throughput": throughput_chart(now),
        "queue_depth": queue_depth_chart(now),
        "flower_url": flower_url(),
    }


def flower_url() -> str:
    """Where Flower answers (FLOWER_URL; by default localhost on FLOWER_PORT)."""
    return str(settings.FLOWER_URL)


# --- "why is this not running?" ----------------------------------------------------------------


def _when(value: dt.datetime) -> str:
    return f"{timezone.localtime(value):%Y-%m-%d %H:%M:%S %Z}"


def gate_sentence(gate: GateDecision, *, now: dt.datetime) -> str:
    """The gate's state in plain language ("" when it is open)."""
    if gate.open:
        return ""
    if gate.reason == "capacity":
        return (
            f"Waiting for capacity: {gate.active_workers} of {settings.MAX_WORKERS} workers "
            "are busy."
        )
    if gate.reason == "cooldown" and gate.until is not None:
        return f"Cooling down: the next attempt may start at {_when(gate.until)}."
    if gate.reason == "budget":
        until = f" until {_when(gate.until)}" if gate.until else ""
        return (
            f"Daily budget exhausted ({gate.spawns_today} of {settings.DAILY_BUDGET} "
            f"attempts today){until}."
        )
    return f"The dispatch gate is closed ({gate.reason})."


def _lock_block(item: WorkItem) -> WorkItemEvent | None:
    """The current attempt's latest lock event, when it is a refusal (it still waits)."""
    if item.worker_id is None:
        return None
    latest = (
        WorkItemEvent.objects.filter(
            work_item=item, worker_id=item.worker_id, kind__in=("lock_blocked", "locks_acquired")
        )
        .order_by("-created_at", "-id")
        .first()
    )
    return latest if latest is not None and latest.kind == "lock_blocked" else None


def _ahead_in_queue(item: WorkItem, now: dt.datetime) -> int:
    """Claimable items the claim would take before this one (its claim order)."""
    return WorkItem.objects.claimable(now).claimed_before(item).count()


def why_not_running(item: WorkItem) -> list[str]:
    """Plain-language reasons the item is not (or not yet) making progress; [] if it is."""
    now = db_now()
    if item.status == WorkItemStatus.GENERATING:
        return ["Its spec is being generated from the description; then it joins the queue."]
    if item.status == WorkItemStatus.QUEUED:
        if item.next_retry_at and item.next_retry_at > now:
            return [
                f"Retry {item.retry_count} of {settings.MAX_RETRIES} is scheduled at "
                f"{_when(item.next_retry_at)}; until then it waits."
            ]
        reasons = []
        sentence = gate_sentence(gate_status(), now=now)
        if sentence:
            reasons.append(sentence)
        ahead = _ahead_in_queue(item, now)
        if ahead:
            reasons.append(
                f"{ahead} item{'s' if ahead != 1 else ''} ahead of it in the queue "
                "(by type, priority, then age)."
            )
        if not reasons:
            reasons.append(
                "It is next in line; the dispatcher should start it within "
                f"{settings.LOOP_INTERVAL:g} seconds. If it does not, check that Celery "
                "worker and beat are running (Flower, /health/ready)."
            )
        return reasons
    if item.status == WorkItemStatus.ASSIGNED:
        return [f"Worker {item.worker_id} was assigned; its container is starting."]
    if item.status == WorkItemStatus.IN_PROGRESS:
        blocked = _lock_block(item)
        if blocked is not None:
            holder = (blocked.data or {}).get("holder") or "another worker"
            files = blocked.message or ", ".join((blocked.data or {}).get("files") or [])
            return [
                f"Blocked by a lock held by worker {holder} on {files} "
                f"(since {_when(blocked.created_at)}); it waits for the lock to be released."
            ]
    return []


# --- pages' queries ----------------------------------------------------------------------------


def workers_live(*, limit: int = 100) -> dict[str, Any]:
    """Active workers (all) and the most recent finished ones, with heartbeat ages."""
    now = db_now()
    active = list(
        Worker.objects.filter(status__in=Worker.ACTIVE)
        .select_related("work_item")
        .order_by("created_at")
    )
    recent = list(
        Worker.objects.filter(status__in=Worker.TERMINAL)
        .select_related("work_item")
        .order_by("-created_at")[:limit]
    )
    for worker in (*active, *recent):
        beat = worker.last_heartbeat
        worker.heartbeat_age = (now - beat).total_seconds() if beat else None  # type: ignore[attr-defined]
        worker.stale = bool(  # type: ignore[attr-defined]
            worker.is_active
            and beat is not None
            and (now - beat).total_seconds() > settings.STALE_THRESHOLD
        )
        maxi = worker.work_item.max_iterations or 1
        worker.progress_percent = min(100, round(100 * worker.iteration / maxi))  # type: ignore[attr-defined]
    return {"active": active, "recent": recent, "now": now}


def locks_list(*, limit: int = 500) -> dict[str, Any]:
    """File locks with their holders, by repo and path; expired ones flagged."""
    now = db_now()
    locks = list(
        FileLock.objects.select_related("worker", "worker__work_item").order_by("repo", "path")[
            : limit + 1
        ]
    )
    for lock in locks:
        lock.expired = lock.expires_at <= now  # type: ignore[attr-defined]
        lock.held_for = now - lock.acquired_at  # type: ignore[attr-defined]
    return {"locks": locks[:limit], "more": len(locks) > limit, "now": now}


def item_attempts(item: WorkItem) -> list[Worker]:
    return list(item.workers.order_by("created_at").select_related("metrics"))

