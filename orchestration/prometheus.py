"""GET /metrics: Prometheus exposition, read from PostgreSQL on each scrape (no key needed).

Gauges come from the rows, not from in-process counters, so every web process reports the
same truth and nothing drifts.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.conf import settings
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from orchestration.clock import db_now
from orchestration.fleet import NodeState
from orchestration.models import Worker, WorkerStatus, WorkItem, WorkItemStatus
from orchestration.selectors import nodes_overview, usage_today
from orchestration.services.costs import cost_spent_today

NODE_DISPLAY_STATES = (*NodeState.values, "drained")


class WhimCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        items = GaugeMetricFamily("whim_work_items", "Work items by status", labels=["status"])
        counts = dict(WorkItem.objects.values_list("status").annotate(n=Count("pk")))
        for status in WorkItemStatus.values:
            items.add_metric([status], counts.get(status, 0))
        yield items

        workers = GaugeMetricFamily("whim_workers", "Worker attempts by status", labels=["status"])
        wcounts = dict(Worker.objects.values_list("status").annotate(n=Count("pk")))
        for status in WorkerStatus.values:
            workers.add_metric([status], wcounts.get(status, 0))
        yield workers

        now = db_now()
        oldest = (
            WorkItem.objects.filter(status=WorkItemStatus.QUEUED)
            .order_by("created_at")
            .values_list("created_at", flat=True)
            .first()
        )
        yield GaugeMetricFamily(
            "whim_queue_oldest_age_seconds",
            "Age of the oldest queued item (0 when the queue is empty)",
            value=(now - oldest).total_seconds() if oldest else 0,
        )
        yield GaugeMetricFamily(
            "whim_budget_used", "Attempts started today", value=usage_today(now).spawns
        )
        yield GaugeMetricFamily("whim_budget_limit", "DAILY_BUDGET", value=settings.DAILY_BUDGET)
        yield GaugeMetricFamily("whim_max_workers", "MAX_WORKERS", value=settings.MAX_WORKERS)
        yield GaugeMetricFamily(
            "whim_cost_today_usd",
            "USD the cost ledger charged today (WHIM_TIMEZONE)",
            value=float(cost_spent_today(now)),
        )
        yield GaugeMetricFamily(
            "whim_cost_budget_usd",
            "DAILY_COST_BUDGET (0: no limit)",
            value=settings.DAILY_COST_BUDGET,
        )

        yield from node_gauges()


def node_gauges() -> Iterator[GaugeMetricFamily]:
    """Per node (one query): its capacity, its running attempts, and its display state as a
    1/0 gauge per state (active, draining, drained, lost)."""
    capacity = GaugeMetricFamily("whim_node_capacity", "NODE_MAX_WORKERS", labels=["node"])
    running = GaugeMetricFamily(
        "whim_node_running", "Attempts running on the node", labels=["node"]
    )
    state = GaugeMetricFamily(
        "whim_node_state", "The node's state (1 for its current one)", labels=["node", "state"]
    )
    for row in nodes_overview():
        capacity.add_metric([row["name"]], row["capacity"])
        running.add_metric([row["name"]], row["running"])
        for name in NODE_DISPLAY_STATES:
            state.add_metric([row["name"], name], 1 if row["state"] == name else 0)
    yield capacity
    yield running
    yield state


def metrics_view(request: HttpRequest) -> HttpResponse:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WhimCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
