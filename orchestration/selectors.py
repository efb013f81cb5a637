"""Read-side queries: the queue listing, status and metrics summaries."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from decimal import Decimal
from typing import Any, TypedDict

from django.conf import settings
from django.db.models import (
    Avg,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    Q,
    QuerySet,
    Sum,
)

from orchestration.clock import budget_date, db_now, next_budget_day_start
from orchestration.errors import ValidationFailed
from orchestration.fleet import node_running
from orchestration.models import (
    CLAIM_ORDER,
    QUEUE_STATUS_FILTERS,
    DailyUsage,
    DispatchState,
    Node,
    NodeState,
    Priority,
    Worker,
    WorkerMetrics,
    WorkItem,
    WorkItemStatus,
    WorkItemType,
)
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
    """Counts by status and by priority over every item the type/repo filter keeps."""
    base = queue_filter(type=type, repo=repo, status="all")
    by_status = {s: 0 for s in WorkItemStatus.values}
    by_status.update(
        {row["status"]: row["n"] for row in base.values("status").annotate(n=Count("pk"))}
    )
    by_priority = {p: 0 for p in Priority.values}
    by_priority.update(
        {row["priority"]: row["n"] for row in base.values("priority").annotate(n=Count("pk"))}
    )
    return {"total": sum(by_status.values()), "byStatus": by_status, "byPriority": by_priority}


def usage_today(now: dt.datetime) -> DailyUsage:
    day = budget_date(now)
    return DailyUsage.objects.filter(date=day).first() or DailyUsage(date=day)


def status_summary(*, broker_ok: bool) -> dict[str, Any]:
    """GET /api/status: health, workers, queue and rate limits."""
    now = db_now()
    queued = WorkItem.objects.filter(status=WorkItemStatus.QUEUED)
    oldest = queued.order_by("created_at").values_list("created_at", flat=True).first()
    state = DispatchState.objects.filter(pk=1).first()
    usage = usage_today(now)
    health = "healthy" if broker_ok else "degraded"
    active = Worker.objects.filter(status__in=Worker.ACTIVE).count()
    size = queued.count()
    today = finished_today(now)
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
        "reviews": review_stats(now),
        "rateLimits": {
            "iterationsToday": usage.spawns,
            "dailyBudget": settings.DAILY_BUDGET,
            "lastSpawn": state.last_spawn_at.isoformat() if state and state.last_spawn_at else None,
            "cooldownSeconds": settings.COOLDOWN_SECONDS,
        },
    }


def review_stats(now: dt.datetime) -> dict[str, int]:
    """The review bot's jobs: waiting, running, and finished today (WHIM_TIMEZONE's day)."""
    day_start = next_budget_day_start(now) - dt.timedelta(days=1)
    reviews = WorkItem.objects.filter(type=WorkItemType.REVIEW)
    return reviews.aggregate(
        queued=Count("pk", filter=Q(status=WorkItemStatus.QUEUED)),
        running=Count("pk", filter=Q(status__in=WorkItem.ACTIVE)),
        completedToday=Count(
            "pk", filter=Q(status=WorkItemStatus.COMPLETED, completed_at__gte=day_start)
        ),
        failedToday=Count(
            "pk", filter=Q(status=WorkItemStatus.FAILED, completed_at__gte=day_start)
        ),
    )


def finished_today(now: dt.datetime) -> dict[str, int]:
    """Items completed and failed since today began (WHIM_TIMEZONE's day), in one query."""
    day_start = next_budget_day_start(now) - dt.timedelta(days=1)
    return WorkItem.objects.filter(completed_at__gte=day_start).aggregate(
        completed=Count("pk", filter=Q(status=WorkItemStatus.COMPLETED)),
        failed=Count("pk", filter=Q(status=WorkItemStatus.FAILED)),
    )


def metrics_summary() -> dict[str, Any]:
    """GET /api/metrics: today's throughput, success rate and durations (today = the calendar
    day in WHIM_TIMEZONE), and token usage and cost over all the metrics still kept."""
    now = db_now()
    day_start = next_budget_day_start(now) - dt.timedelta(days=1)
    completed = WorkItem.objects.filter(
        completed_at__gte=day_start, status=WorkItemStatus.COMPLETED
    )
    today = finished_today(now)
    completed_n, failed_n = today["completed"], today["failed"]
    avg = completed.aggregate(
        d=Avg(ExpressionWrapper(F("completed_at") - F("created_at"), output_field=DurationField()))
    )["d"]
    # Each attempt at what its agent reported, or, reporting none, its tokens at the prices.
    unpriced = Q(cost_usd__lte=0)
    tokens = WorkerMetrics.objects.aggregate(
        i=Sum("tokens_in"),
        o=Sum("tokens_out"),
        reported=Sum("cost_usd", filter=~unpriced),
        ui=Sum("tokens_in", filter=unpriced),
        uo=Sum("tokens_out", filter=unpriced),
    )
    tokens_in, tokens_out = tokens["i"] or 0, tokens["o"] or 0
    cost = (tokens["reported"] or 0) + estimated_cost(
        tokens_in=tokens["ui"] or 0, tokens_out=tokens["uo"] or 0, reported=Decimal(0)
    )
    v = WorkItem.objects.filter(type=WorkItemType.VERIFICATION).aggregate(
        total=Count("pk"),
        passed=Count("pk", filter=Q(verification_passed=True)),
        failed=Count("pk", filter=Q(verification_passed=False)),
        # The original's pending: waiting or running (queued, assigned, in progress).
        pending=Count("pk", filter=Q(status__in=(WorkItemStatus.QUEUED, *WorkItem.ACTIVE))),
    )
    v_passed, v_failed = v["passed"], v["failed"]
    return {
        "activeWorkers": Worker.objects.filter(status__in=Worker.ACTIVE).count(),
        "queuedItems": WorkItem.objects.filter(status=WorkItemStatus.QUEUED).count(),
        "completedToday": completed_n,
        "failedToday": failed_n,
        "iterationsToday": usage_today(now).spawns,
        "dailyBudget": settings.DAILY_BUDGET,
        "avgCompletionTime": round(avg.total_seconds() * 1000) if avg else 0,
        "successRate": round(completed_n / (completed_n + failed_n), 4)
        if completed_n + failed_n
        else 0.0,
        "verification": {
            "total": v["total"],
            "passed": v_passed,
            "failed": v_failed,
            "pending": v["pending"],
            "passRate": round(v_passed / (v_passed + v_failed), 4) if v_passed + v_failed else 0.0,
        },
        "tokenUsage": {
            "tokensIn": tokens_in,
            "tokensOut": tokens_out,
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
