"""The dashboard's charts: bars computed here, drawn as inline SVG by a template.

Charts are computed from the rows themselves (``WorkItem.completed_at``, ``WorkItemEvent`` status
changes), so they need no extra bookkeeping. Reads only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import TypedDict

from django.db.models import Count, Q
from django.db.models.functions import TruncHour
from django.utils import timezone

from orchestration.models import WorkItem, WorkItemEvent, WorkItemStatus

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


class Throughput(TypedDict):
    """Items finished per hour (``chart``) and the totals over the whole window."""

    chart: Chart
    completed: int
    failed: int


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


def throughput_chart(
    now: dt.datetime,
    *,
    hours: int = CHART_HOURS,
    hourly: dict[tuple[dt.datetime, str], int] | None = None,
) -> Throughput:
    """Items finished per hour over the last ``hours``: completed and failed, one query, or
    none given ``hourly`` ((hour, status) → items, as ``readings.finished_recent`` reads)."""
    end = _hour_floor(now)
    start = end - dt.timedelta(hours=hours - 1)
    slots = [start + dt.timedelta(hours=i) for i in range(hours)]
    if hourly is None:
        rows = (
            WorkItem.objects.filter(
                completed_at__gte=start,
                status__in=WorkItem.FINISHED,
            )
            .annotate(hour=TruncHour("completed_at"))
            .values("hour", "status")
            .annotate(n=Count("pk"))
        )
        hourly = {(row["hour"], row["status"]): row["n"] for row in rows}
    counts = hourly
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


def queue_depth_chart(
    now: dt.datetime,
    *,
    hours: int = CHART_HOURS,
    depth_now: int | None = None,
    flow: dict[dt.datetime, int] | None = None,
) -> Chart:
    """Items waiting (generating + queued) at the end of each of the last ``hours``.

    1. Take the depth now from the rows (or ``depth_now``, read from the tallies).
    2. Count, per hour, the events that entered the waiting states and those that left them
       (or take ``flow``, hour → entered - left, read from the tallies).
    3. Walk back from now: depth before an hour = depth after it - entered + left.
    """
    pending = tuple(str(s) for s in WorkItem.PENDING)
    if depth_now is None:
        depth_now = WorkItem.objects.filter(status__in=pending).count()
    end = _hour_floor(now)
    start = end - dt.timedelta(hours=hours - 1)
    if flow is None:
        recent = WorkItemEvent.objects.filter(created_at__gte=start)
        entered = Q(to_status__in=pending) & ~Q(from_status__in=pending)
        left = Q(from_status__in=pending) & ~Q(to_status__in=pending) & ~Q(to_status="")
        rows = (
            recent.annotate(hour=TruncHour("created_at"))
            .values("hour")
            .annotate(entered=Count("pk", filter=entered), left=Count("pk", filter=left))
        )
        flow = {row["hour"]: row["entered"] - row["left"] for row in rows}
    delta = flow
    slots = [start + dt.timedelta(hours=i) for i in range(hours)]
    depths: list[int] = []
    depth = depth_now
    for slot in reversed(slots):
        depths.append(max(depth, 0))
        depth -= delta.get(slot, 0)
    depths.reverse()
    return _bars(depths, slots, width=480, height=80, names=(" waiting", ""))
