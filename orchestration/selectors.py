"""Read-side queries: the queue listing, status and metrics summaries."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from decimal import Decimal
from typing import Any, TypedDict

from django.conf import settings
from django.db.models import (
    Q,
    QuerySet,
)

from orchestration.clock import budget_date, db_now
from orchestration.errors import ValidationFailed
from orchestration.fleet import node_running
from orchestration.models import (
    CLAIM_ORDER,
    QUEUE_STATUS_FILTERS,
    DailyUsage,
    Node,
    NodeState,
    WorkItem,
    WorkItemStatus,
    WorkItemType,
)
from orchestration.readings import Readings, readings_read, tallies_read
from orchestration.registry import runtime
from orchestration.services.costs import estimated_cost


def _encode_cursor(item: WorkItem) -> str:
    raw = f"{item.created_at.isoformat()}|{item.pk}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        created, pk = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        when = dt.datetime.fromisoformat(created)
        if when.tzinfo is None:
            raise ValueError("cursor time without offset")
        # A well-formed cursor with a non-UUID id would otherwise reach the query (500).
        return when, str(uuid.UUID(pk))
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed(
            "Invalid query parameters", details={"cursor": "is not a cursor this API issued"}
        ) from None


def queue_filter(*, status: str = "", type: str = "", repo: str = "") -> QuerySet[WorkItem]:
    """The items a queue view with these filters shows. No status: what is waiting or
    running (the original Whim's default view)."""
    items: QuerySet[WorkItem] = WorkItem.objects.all()
    if type:
        items = items.filter(type=type)
    if repo:
        items = items.filter(repo=repo)
    if status and status != "all":
        items = items.filter(status__in=QUEUE_STATUS_FILTERS[status])
    elif not status:
        items = items.filter(status__in=WorkItem.UNFINISHED)
    return items


def queue_list(
    *, status: str = "", type: str = "", repo: str = "", cursor: str = "", limit: int = 50
) -> dict[str, Any]:
    """Items newest first, filtered, paginated by cursor; stats over the type/repo filter."""
    items = queue_filter(type=type, repo=repo, status=status)
    if cursor:
        created, pk = _decode_cursor(cursor)
        items = items.filter(Q(created_at__lt=created) | Q(created_at=created, pk__lt=pk))
    page = list(items.order_by("-created_at", "-pk")[: limit + 1])
    next_cursor = _encode_cursor(page[limit - 1]) if len(page) > limit else None
    return {
        "items": page[:limit],
        "nextCursor": next_cursor,
        "stats": queue_stats(type=type, repo=repo),
    }


def queue_in_dispatch_order(*, type: str = "", repo: str = "") -> dict[str, Any]:
    """The original Whim's default queue view: every unfinished item, unpaginated, in
    dispatch order (CLAIM_ORDER). The set is bounded by MAX_QUEUED + MAX_WORKERS, plus the
    paused items an operator holds."""
    items = queue_filter(type=type, repo=repo).order_by(*CLAIM_ORDER, "pk")
    return {"items": list(items), "nextCursor": None, "stats": queue_stats(type=type, repo=repo)}


def queue_stats(*, type: str = "", repo: str = "") -> dict[str, Any]:
    """Counts by status and by priority over every item the type/repo filter keeps: exact,
    from the tallies (one query, whatever the history's size)."""
    tallies = tallies_read(repo=repo)
    by_status = tallies.by_status(type=type)
    return {
        "total": sum(by_status.values()),
        "byStatus": by_status,
        "byPriority": tallies.by_priority(type=type),
    }


def usage_today(now: dt.datetime) -> DailyUsage:
    day = budget_date(now)
    return DailyUsage.objects.filter(date=day).first() or DailyUsage(date=day)


def status_summary(*, broker_ok: bool, readings: Readings | None = None) -> dict[str, Any]:
    """GET /api/status: health, workers, queue and rate limits (``readings``: already read by
    the caller, e.g. the dashboard, which shows /api/metrics' figures too). The clock is read
    through ``db_now`` like every selector's (one clock; tests pin it)."""
    r = readings or readings_read(now=db_now())
    oldest = r.scalars.oldest_queued
    health = "healthy" if broker_ok else "degraded"
    active = r.scalars.active_workers
    size = r.tallies.count(statuses=(WorkItemStatus.QUEUED,))
    today = r.recent.today
    last_spawn = r.scalars.last_spawn_at
    return {
        "status": health,
        "runtime": runtime().info(),
        "workers": {"active": active, "maxWorkers": settings.MAX_WORKERS},
        "queue": {"size": size, "oldest": oldest.isoformat() if oldest else None},
        # What the original Whim's ``status`` command prints (the /api/metrics figures).
        "metrics": {
            "activeWorkers": active,
            "queuedItems": size,
            "completedToday": today["completed"],
            "failedToday": today["failed"],
        },
        "reviews": review_stats(r),
        "rateLimits": {
            "iterationsToday": r.scalars.spawns_today,
            "dailyBudget": settings.DAILY_BUDGET,
            "lastSpawn": last_spawn.isoformat() if last_spawn else None,
            "cooldownSeconds": settings.COOLDOWN_SECONDS,
        },
    }


def review_stats(readings: Readings) -> dict[str, int]:
    """The review bot's jobs: waiting, running, and finished today (WHIM_TIMEZONE's day)."""
    tallies, today = readings.tallies, readings.recent.today
    return {
        "queued": tallies.count(statuses=(WorkItemStatus.QUEUED,), type=WorkItemType.REVIEW),
        "running": tallies.count(statuses=WorkItem.ACTIVE, type=WorkItemType.REVIEW),
        "completedToday": today["review_completed"],
        "failedToday": today["review_failed"],
    }


def metrics_summary(*, readings: Readings | None = None) -> dict[str, Any]:
    """GET /api/metrics: today's throughput, success rate and durations (today = the calendar
    day in WHIM_TIMEZONE), and token usage and cost over all the metrics still kept."""
    r = readings or readings_read(now=db_now())
    today = r.recent.today
    completed_n, failed_n = today["completed"], today["failed"]
    # Each attempt at what its agent reported, or, reporting none, its tokens at the prices.
    m = r.tallies.metrics
    cost = m["reported_usd"] + estimated_cost(
        tokens_in=m["unpriced_in"], tokens_out=m["unpriced_out"], reported=Decimal(0)
    )
    t = r.tallies
    verification = WorkItemType.VERIFICATION
    v_passed = t.count(type=verification, verdict=True)
    v_failed = t.count(type=verification, verdict=False)
    return {
        "activeWorkers": r.scalars.active_workers,
        "queuedItems": t.count(statuses=(WorkItemStatus.QUEUED,)),
        "completedToday": completed_n,
        "failedToday": failed_n,
        "iterationsToday": r.scalars.spawns_today,
        "dailyBudget": settings.DAILY_BUDGET,
        "avgCompletionTime": round(today["completed_ms"] / completed_n) if completed_n else 0,
        "successRate": round(completed_n / (completed_n + failed_n), 4)
        if completed_n + failed_n
        else 0.0,
        "verification": {
            "total": t.count(type=verification),
            "passed": v_passed,
            "failed": v_failed,
            # The original's pending: waiting or running (queued, assigned, in progress).
            "pending": t.count(
                statuses=(WorkItemStatus.QUEUED, *WorkItem.ACTIVE), type=verification
            ),
            "passRate": round(v_passed / (v_passed + v_failed), 4) if v_passed + v_failed else 0.0,
        },
        "tokenUsage": {
            "tokensIn": m["tokens_in"],
            "tokensOut": m["tokens_out"],
            "estimatedCostUsd": round(float(cost), 4),
        },
    }


class NodeRow(TypedDict):
    """One node as the console, the API and /metrics show it."""

    name: str
    state: str  # active | draining | drained | lost (drained: draining with nothing running)
    capacity: int
    running: int
    labels: list[str]
    last_heartbeat: dt.datetime | None


def nodes_overview() -> list[NodeRow]:
    """Every node by name, with its attempts running now (active workers on it)."""
    nodes = Node.objects.annotate(running=node_running()).order_by("name")
    rows: list[NodeRow] = []
    for node in nodes:
        running = int(node.running)
        state = node.state
        if state == NodeState.DRAINING and running == 0:
            state = "drained"
        rows.append(
            NodeRow(
                name=node.name,
                state=state,
                capacity=node.capacity,
                running=running,
                labels=list(node.labels or []),
                last_heartbeat=node.last_heartbeat,
            )
        )
    return rows
