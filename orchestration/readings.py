"""The status pages' readings, each one query whatever the history's size.

- ``tallies_read``: items by type, status, priority and verdict, attempts by status, and the
  metrics' token and cost sums, from the trigger-kept tallies (``orchestration.tallies``):
  exact, and a few thousand rows to sum at a million items.
- ``scalars_read``: the database clock and the small facts read beside it — the oldest
  queued item, the last spawn, today's attempts and cost, the active attempts.
- ``finished_recent``: what finished in the last 24 hours, by hour, status and type, and how
  the queue filled and drained per hour, from the quarter-hour tallies — today's figures,
  the throughput chart and the queue-depth chart at once.

The dashboard, ``/api/status``, ``/api/metrics`` and ``/metrics`` read these instead of
grouping every row. The embedded SQLite (no triggers) counts its tables directly: one
machine's history is small.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, Q, QuerySet, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from orchestration.clock import budget_date, db_now, next_budget_day_start
from orchestration.fleet import NodeState
from orchestration.models import (
    CostUsage,
    DailyUsage,
    DispatchState,
    Priority,
    Worker,
    WorkerMetrics,
    WorkerStatus,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
    WorkItemType,
)
from orchestration.services.placement import NodeSlots, nodes_slots

ItemKey = tuple[str, str, str, "bool | None"]  # (type, status, priority, verdict)

_UNSET: Any = object()

_TALLIES_SQL = """
SELECT 'i', type, status, priority, verdict, sum(n), 0, 0, 0, 0, 0
  FROM orchestration_itemtally {where} GROUP BY type, status, priority, verdict
UNION ALL
SELECT 'w', '', status, '', NULL, sum(n), 0, 0, 0, 0, 0
  FROM orchestration_workertally GROUP BY status
UNION ALL
SELECT 'm', '', '', '', NULL, coalesce(sum(n), 0), coalesce(sum(tokens_in), 0),
  coalesce(sum(tokens_out), 0), coalesce(sum(reported_usd), 0), coalesce(sum(unpriced_in), 0),
  coalesce(sum(unpriced_out), 0)
  FROM orchestration_metricstally
"""


@dataclasses.dataclass(frozen=True)
class Tallies:
    """Exact counts: items per (type, status, priority, verdict), attempts per status, and
    the kept metrics' sums (``tokens_in``, ``tokens_out``, ``reported_usd``, ``unpriced_in``,
    ``unpriced_out``)."""

    items: dict[ItemKey, int]
    workers: dict[str, int]
    metrics: dict[str, Any]

    def count(
        self, *, statuses: tuple[str, ...] = (), type: str = "", verdict: Any = _UNSET
    ) -> int:
        """Items in ``statuses`` (any, if empty), of ``type`` (any, if ""), with ``verdict``."""
        return sum(
            n
            for (t, s, _p, v), n in self.items.items()
            if (not statuses or s in statuses)
            and (not type or t == type)
            and (verdict is _UNSET or v is verdict)
        )

    def by_status(self, *, type: str = "") -> dict[str, int]:
        counts = {s: 0 for s in WorkItemStatus.values}
        for (t, s, _p, _v), n in self.items.items():
            if (not type or t == type) and s in counts:
                counts[s] += n
        return counts

    def by_priority(self, *, type: str = "") -> dict[str, int]:
        counts = {p: 0 for p in Priority.values}
        for (t, _s, p, _v), n in self.items.items():
            if (not type or t == type) and p in counts:
                counts[p] += n
        return counts

    def workers_by_status(self) -> dict[str, int]:
        return {s: self.workers.get(s, 0) for s in WorkerStatus.values}


def tallies_read(*, repo: str = "") -> Tallies:
    """Every tally in one query (items of ``repo`` only, when given)."""
    if connection.vendor != "postgresql":
        return _tallies_counted(repo=repo)
    # Repo '' holds every repository's items at once (tally_sql: grouping sets).
    where, params = "WHERE repo = %s", [repo]
    items: dict[ItemKey, int] = {}
    workers: dict[str, int] = {}
    metrics: dict[str, Any] = {}
    with connection.cursor() as cursor:
        cursor.execute(_TALLIES_SQL.format(where=where), params)
        for kind, type_, status, priority, verdict, n, ti, to, usd, ui, uo in cursor.fetchall():
            if kind == "i" and n:
                items[(type_, status, priority, verdict)] = int(n)
            elif kind == "w" and n:
                workers[status] = int(n)
            elif kind == "m":
                metrics = {
                    "tokens_in": int(ti),
                    "tokens_out": int(to),
                    "reported_usd": Decimal(usd),
                    "unpriced_in": int(ui),
                    "unpriced_out": int(uo),
                }
    return Tallies(items=items, workers=workers, metrics=metrics)


def tallies_counted(*, repo: str = "") -> Tallies:
    """The same figures counted from the rows (the tallies' reference, and SQLite's way)."""
    return _tallies_counted(repo=repo)


def _tallies_counted(*, repo: str = "") -> Tallies:
    rows = WorkItem.objects.filter(repo=repo) if repo else WorkItem.objects.all()
    groups = rows.values_list("type", "status", "priority", "verification_passed").annotate(
        n=Count("pk")
    )
    unpriced = Q(cost_usd__lte=0)
    sums = WorkerMetrics.objects.aggregate(
        i=Sum("tokens_in"),
        o=Sum("tokens_out"),
        reported=Sum("cost_usd", filter=~unpriced),
        ui=Sum("tokens_in", filter=unpriced),
        uo=Sum("tokens_out", filter=unpriced),
    )
    return Tallies(
        items={(t, s, p, v): n for t, s, p, v, n in groups},
        workers=dict(Worker.objects.values_list("status").annotate(n=Count("pk"))),
        metrics={
            "tokens_in": sums["i"] or 0,
            "tokens_out": sums["o"] or 0,
            "reported_usd": sums["reported"] or Decimal(0),
            "unpriced_in": sums["ui"] or 0,
            "unpriced_out": sums["uo"] or 0,
        },
    )


@dataclasses.dataclass(frozen=True)
class Scalars:
    """The database clock and what the status pages read beside it."""

    now: dt.datetime
    oldest_queued: dt.datetime | None
    last_spawn_at: dt.datetime | None
    spawns_today: int
    cost_today: Decimal
    active_workers: int
    # The rows of the ``count`` queryset given to scalars_read (None without one).
    counted: int | None = None
    # Every node with its running attempts (the explainer's node reasons).
    nodes: tuple[NodeSlots, ...] = ()


_SCALARS_SQL = """
WITH t AS (SELECT coalesce(%(now)s::timestamptz, clock_timestamp()) AS now)
SELECT t.now,
  (SELECT min(created_at) FROM orchestration_workitem WHERE status = %(queued)s),
  (SELECT last_spawn_at FROM orchestration_dispatchstate WHERE id = 1),
  (SELECT spawns FROM orchestration_dailyusage
    WHERE date = (t.now AT TIME ZONE %(zone)s)::date),
  (SELECT sum(cost_usd) FROM orchestration_costusage
    WHERE date = (t.now AT TIME ZONE %(zone)s)::date),
  (SELECT count(*) FROM orchestration_worker WHERE status = ANY(%(active)s)),
  {counted},
  (SELECT json_agg(json_build_array(n.name, n.state, n.labels, n.capacity,
     (SELECT count(*) FROM orchestration_worker w
       WHERE w.node_id = n.name AND w.status = ANY(%(active)s))))
   FROM orchestration_node n)
FROM t
"""


def scalars_read(*, now: dt.datetime | None = None, count: QuerySet[Any] | None = None) -> Scalars:
    """The clock, the oldest queued item, the last spawn, today's attempts and cost (the
    calendar day in WHIM_TIMEZONE) and the active attempts: one query on PostgreSQL.
    ``count``: a queryset whose rows are counted in the same query (``Scalars.counted``).
    ``now``: the clock already read (a caller's ``db_now()``), else the query reads it."""
    if connection.vendor != "postgresql":
        now = now or db_now()
        usage = DailyUsage.objects.filter(date=budget_date(now)).first()
        state = DispatchState.objects.filter(pk=1).first()
        queued = WorkItem.objects.filter(status=WorkItemStatus.QUEUED)
        cost = CostUsage.objects.filter(date=budget_date(now)).aggregate(c=Sum("cost_usd"))["c"]
        return Scalars(
            now=now,
            oldest_queued=queued.aggregate(m=Min("created_at"))["m"],
            last_spawn_at=state.last_spawn_at if state else None,
            spawns_today=usage.spawns if usage else 0,
            cost_today=cost or Decimal(0),
            active_workers=Worker.objects.filter(status__in=Worker.ACTIVE).count(),
            counted=count.count() if count is not None else None,
            nodes=tuple(nodes_slots(states=NodeState.values)),
        )
    params: dict[str, Any] = {
        "now": now,
        "queued": WorkItemStatus.QUEUED.value,
        "zone": settings.WHIM_TIMEZONE,
        "active": [str(s) for s in Worker.ACTIVE],
    }
    counted_sql = "NULL"
    if count is not None:
        # The queryset's own SQL as a subquery; its parameters go in by name.
        inner, inner_params = count.values("pk").query.sql_with_params()
        names = [f"c{i}" for i in range(len(inner_params))]
        params.update(zip(names, inner_params, strict=True))
        inner = inner.replace("%%", "%%%%") % tuple(f"%({n})s" for n in names)
        counted_sql = f"(SELECT count(*) FROM ({inner}) counted)"  # noqa: S608 (ORM SQL)
    with connection.cursor() as cursor:
        cursor.execute(_SCALARS_SQL.format(counted=counted_sql), params)
        clock, oldest, last_spawn, spawns, cost, active, counted, nodes = cursor.fetchone()
    return Scalars(
        now=clock,
        oldest_queued=oldest,
        last_spawn_at=last_spawn,
        spawns_today=spawns or 0,
        cost_today=cost or Decimal(0),
        active_workers=active,
        counted=counted,
        nodes=tuple(
            NodeSlots(name, state, frozenset(map(str, labels or [])), capacity, running)
            for name, state, labels, capacity, running in nodes or []
        ),
    )


CHART_HOURS = 24


@dataclasses.dataclass(frozen=True)
class Recent:
    """What finished since today began (WHIM_TIMEZONE) and per hour over the chart's window.

    ``today``: ``completed``, ``failed``, ``review_completed``, ``review_failed`` and
    ``completed_ms`` (the completed items' durations summed, for their average).
    ``hourly``: (hour, status) → items completed or failed in that hour.
    ``flow``: hour → items that entered the waiting states less those that left them.
    """

    today: dict[str, int]
    hourly: dict[tuple[dt.datetime, str], int]
    # hour → items that entered the waiting states minus those that left them (hours where
    # the two are equal are left out).
    flow: dict[dt.datetime, int]


def chart_start(now: dt.datetime, hours: int = CHART_HOURS) -> dt.datetime:
    """The first hour the 24-hour charts show."""
    return now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=hours - 1)


_RECENT_SQL = """
SELECT 'f', date_trunc('hour', bucket, %(zone)s), type, status, sum(n),
  coalesce(sum(n) FILTER (WHERE bucket >= %(day_start)s), 0),
  coalesce(sum(took_us) FILTER (WHERE bucket >= %(day_start)s), 0)
  FROM orchestration_finishedtally
  WHERE bucket >= %(since)s AND status = ANY(%(finished)s) GROUP BY 2, 3, 4
UNION ALL
SELECT 'q', date_trunc('hour', bucket, %(zone)s), '', '', sum(entered) - sum(exited), 0, 0
  FROM orchestration_queueflowtally WHERE bucket >= %(since)s GROUP BY 2
"""


def finished_recent(now: dt.datetime) -> Recent:
    """What finished since the earlier of today's start and the charts' first hour (both
    within the last 24 hours) and how the queue filled and drained per hour: one query over
    the quarter-hour tallies, grouped by hour in the current time zone (as ``TruncHour``)."""
    day_start = next_budget_day_start(now) - dt.timedelta(days=1)
    since = min(day_start, chart_start(now))
    if connection.vendor != "postgresql":
        return _recent_counted(since=since, day_start=day_start)
    totals = dict.fromkeys(
        ("completed", "failed", "review_completed", "review_failed", "completed_ms"), 0
    )
    hourly: dict[tuple[dt.datetime, str], int] = {}
    flow: dict[dt.datetime, int] = {}
    took_us = 0
    params: dict[str, Any] = {
        "zone": timezone.get_current_timezone_name(),
        # A quarter hour is wholly in today or wholly before: midnight falls on one.
        "day_start": day_start,
        "since": since,
        "finished": [str(s) for s in WorkItem.FINISHED],
    }
    with connection.cursor() as cursor:
        cursor.execute(_RECENT_SQL, params)
        for kind, hour, type_, status, n, today, took in cursor.fetchall():
            if kind == "q":
                flow[hour] = int(n)
                continue
            hourly[(hour, status)] = hourly.get((hour, status), 0) + int(n)
            totals[status] += int(today)
            if type_ == WorkItemType.REVIEW:
                totals[f"review_{status}"] += int(today)
            if status == WorkItemStatus.COMPLETED:
                took_us += int(took)
    totals["completed_ms"] = round(took_us / 1000)
    hourly = {key: n for key, n in hourly.items() if n}
    return Recent(today=totals, hourly=hourly, flow={h: d for h, d in flow.items() if d})


def _recent_counted(*, since: dt.datetime, day_start: dt.datetime) -> Recent:
    """The same figures from the rows (SQLite, and the tallies' reference in tests)."""
    today = Q(completed_at__gte=day_start)
    rows = (
        WorkItem.objects.filter(completed_at__gte=since, status__in=WorkItem.FINISHED)
        .annotate(hour=TruncHour("completed_at"))
        .values("hour", "status", "type")
        .annotate(
            n=Count("pk"),
            today=Count("pk", filter=today),
            took=Sum(
                ExpressionWrapper(
                    F("completed_at") - F("created_at"), output_field=DurationField()
                ),
                filter=today,
            ),
        )
    )
    totals = dict.fromkeys(
        ("completed", "failed", "review_completed", "review_failed", "completed_ms"), 0
    )
    hourly: dict[tuple[dt.datetime, str], int] = {}
    took = dt.timedelta()
    for row in rows:
        status = row["status"]
        hourly[(row["hour"], status)] = hourly.get((row["hour"], status), 0) + row["n"]
        totals[status] += row["today"]
        if row["type"] == WorkItemType.REVIEW:
            totals[f"review_{status}"] += row["today"]
        if status == WorkItemStatus.COMPLETED and row["took"]:
            took += row["took"]
    totals["completed_ms"] = round(took.total_seconds() * 1000)
    pending = tuple(str(s) for s in WorkItem.PENDING)
    entered = Q(to_status__in=pending) & ~Q(from_status__in=pending)
    left = Q(from_status__in=pending) & ~Q(to_status__in=pending) & ~Q(to_status="")
    events = (
        WorkItemEvent.objects.filter(created_at__gte=since)
        .annotate(hour=TruncHour("created_at"))
        .values("hour")
        .annotate(entered=Count("pk", filter=entered), left=Count("pk", filter=left))
    )
    flow = {row["hour"]: row["entered"] - row["left"] for row in events}
    return Recent(today=totals, hourly=hourly, flow={h: d for h, d in flow.items() if d})


@dataclasses.dataclass(frozen=True)
class Readings:
    """The three readings together: what the dashboard, /api/status and /api/metrics share."""

    scalars: Scalars
    tallies: Tallies
    recent: Recent


def readings_read(*, now: dt.datetime | None = None) -> Readings:
    """The three readings; ``now``: the clock already read, else the first query reads it."""
    scalars = scalars_read(now=now)
    return Readings(scalars=scalars, tallies=tallies_read(), recent=finished_recent(scalars.now))
