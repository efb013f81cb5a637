"""GET /metrics: Prometheus exposition, read from PostgreSQL on each scrape (no key needed).

Gauges come from the rows, not from in-process counters, so every web process reports the
same truth and nothing drifts.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from orchestration.fleet import NodeState
from orchestration.readings import scalars_read, tallies_read
from orchestration.selectors import nodes_overview

NODE_DISPLAY_STATES = (*NodeState.values, "drained")


class WhimCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        # Exact counts from the tallies and the small scalars: two queries at any size.
        tallies = tallies_read()
        scalars = scalars_read()
        items = GaugeMetricFamily("whim_work_items", "Work items by status", labels=["status"])
        for status, n in tallies.by_status().items():
            items.add_metric([status], n)
        yield items

        workers = GaugeMetricFamily("whim_workers", "Worker attempts by status", labels=["status"])
        for status, n in tallies.workers_by_status().items():
            workers.add_metric([status], n)
        yield workers

        now, oldest = scalars.now, scalars.oldest_queued
        yield GaugeMetricFamily(
            "whim_queue_oldest_age_seconds",
            "Age of the oldest queued item (0 when the queue is empty)",
            value=(now - oldest).total_seconds() if oldest else 0,
        )
        yield GaugeMetricFamily(
            "whim_budget_used", "Attempts started today", value=scalars.spawns_today
        )
        yield GaugeMetricFamily("whim_budget_limit", "DAILY_BUDGET", value=settings.DAILY_BUDGET)
        yield GaugeMetricFamily("whim_max_workers", "MAX_WORKERS", value=settings.MAX_WORKERS)
        yield GaugeMetricFamily(
            "whim_cost_today_usd",
            "USD the cost ledger charged today (WHIM_TIMEZONE)",
            value=float(scalars.cost_today),
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
