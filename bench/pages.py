"""Pages at a million items: every console page, the admin list, the status API and /metrics.

Each page is requested through Django's test client (the view, its queries and its template;
no HTTP server in the way) on a scratch database seeded twice by ``bench.seed``: the small
history (10 k items by default) and the large one (1 M). The baseline of each page is the same
page over the small history; runs interleave the pages, so drift in the machine's load falls
on every page alike. Printed per page: p50 and p95 at each size, the ratio of the p95s (the
target: at most 2) and the queries the page ran (the target: at most 8).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

# (name, path); "{item}" is an unfinished item's id, found after seeding.
PAGES: tuple[tuple[str, str], ...] = (
    ("dashboard /", "/"),
    ("queue /queue/", "/queue/"),
    ("queue ?status=failed", "/queue/?status=failed"),
    ("queue ?type=review", "/queue/?type=review"),
    ("queue ?repo=", "/queue/?repo=acme/repo-000"),
    ("workers /workers/", "/workers/"),
    ("locks /locks/", "/locks/"),
    ("work item /work/<id>/", "/work/{item}/"),
    ("submit form /work/new/", "/work/new/"),
    ("admin work item list", "/admin/orchestration/workitem/"),
    ("admin list ?status=failed", "/admin/orchestration/workitem/?status__exact=failed"),
    ("admin list ?repo=", "/admin/orchestration/workitem/?repo=acme/repo-000"),
    ("/api/queue", "/api/queue"),
    ("/api/queue?status=failed", "/api/queue?status=failed"),
    ("/api/status", "/api/status"),
    ("/api/metrics", "/api/metrics"),
    ("/metrics", "/metrics"),
)

API_KEY = "bench-pages-key"


@dataclasses.dataclass
class PageRuns:
    """One page's timings (seconds) and the queries of its last request."""

    seconds: list[float] = dataclasses.field(default_factory=list)
    queries: int = 0
    status: int = 0

    def quantile(self, q: float) -> float:
        ordered = sorted(self.seconds)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def logged_in_client() -> Client:
    """A client logged in as a superuser (made once per scratch database)."""
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    user, _ = user_model.objects.get_or_create(
        username="bench", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client(HTTP_X_API_KEY=API_KEY)
    client.force_login(user)
    return client


def resolve(path: str) -> str:
    """The path with ``{item}`` filled with an unfinished item's id."""
    if "{item}" not in path:
        return path
    from orchestration.models import WorkItem

    item = WorkItem.objects.filter(status="in_progress").order_by("created_at").first()
    item = item or WorkItem.objects.order_by("-created_at").first()
    return path.format(item=item.pk if item else "00000000-0000-0000-0000-000000000000")


def request_once(client: Client, path: str) -> tuple[float, int, int]:
    """Seconds, queries and status of one GET."""
    with CaptureQueriesContext(connection) as captured:
        started = time.perf_counter()
        response = client.get(path)
        if hasattr(response, "render") and not response.is_rendered:
            response.render()
        _ = response.content
        took = time.perf_counter() - started
    return took, len(captured.captured_queries), response.status_code


def measure(client: Client, runs: int, warmup: int = 2) -> dict[str, PageRuns]:
    """Every page ``runs`` times, interleaved (page 1, page 2, …, page 1, …)."""
    paths = {name: resolve(path) for name, path in PAGES}
    results = {name: PageRuns() for name, _ in PAGES}
    for round_ in range(warmup + runs):
        for name, path in paths.items():
            took, queries, status = request_once(client, path)
            if round_ >= warmup:
                runs_ = results[name]
                runs_.seconds.append(took)
                runs_.queries, runs_.status = queries, status
    return results


def compare(
    small: dict[str, PageRuns], large: dict[str, PageRuns], sizes: tuple[int, int]
) -> list[dict[str, Any]]:
    """A row per page: p50/p95 at both sizes, the p95 ratio and the queries."""
    rows = []
    for name, _ in PAGES:
        a, b = small[name], large[name]
        rows.append(
            {
                "page": name,
                "small_items": sizes[0],
                "large_items": sizes[1],
                "small_p50_ms": round(a.quantile(0.5) * 1000, 1),
                "small_p95_ms": round(a.quantile(0.95) * 1000, 1),
                "large_p50_ms": round(b.quantile(0.5) * 1000, 1),
                "large_p95_ms": round(b.quantile(0.95) * 1000, 1),
                "p95_ratio": round(b.quantile(0.95) / a.quantile(0.95), 2)
                if a.quantile(0.95)
                else 0.0,
                "queries": max(a.queries, b.queries),
                "status": b.status,
            }
        )
    return rows


def print_rows(rows: list[dict[str, Any]], out: Callable[[str], None] = print) -> None:
    out(
        f"{'page':<28} {'p50 small':>10} {'p95 small':>10} {'p50 large':>10} "
        f"{'p95 large':>10} {'ratio':>6} {'queries':>8}"
    )
    for r in rows:
        flag = "" if r["p95_ratio"] <= 2 and r["queries"] <= 8 else "  <- over target"
        out(
            f"{r['page']:<28} {r['small_p50_ms']:>8.1f}ms {r['small_p95_ms']:>8.1f}ms "
            f"{r['large_p50_ms']:>8.1f}ms {r['large_p95_ms']:>8.1f}ms {r['p95_ratio']:>6.2f} "
            f"{r['queries']:>8}{flag}"
        )
    ratios = [r["p95_ratio"] for r in rows if r["p95_ratio"]]
    if ratios:
        out(f"median p95 ratio {statistics.median(ratios):.2f}, worst {max(ratios):.2f}")
