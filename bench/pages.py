"""Pages at a million items: every console page, the admin list, the status API and /metrics.

Each page is requested through Django's test client (the view, its queries and its template;
no HTTP server in the way) against two histories seeded by ``bench.seed``: 10 k items in the
run's scratch database (the baseline) and 1 M in a copy of it. Rounds alternate the two
databases (the order flips every round) and request every page once per round, so drift in
the machine's load falls on both sides alike. A figure per page: its p95 at 1 M at most
twice the same page's at 10 k; and one figure for the most SQL queries any page ran (at
most 8). ``--smoke``: 300 and 3 000 items.
"""

from __future__ import annotations

import dataclasses
import time
from unittest import mock

from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from bench.core import Benchmark, Context, Figure, Target
from bench.seed import seed, vacuum_analyze

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
    """One page's timings (ms), the most queries one request ran and the last status."""

    seconds: list[float] = dataclasses.field(default_factory=list)
    queries: int = 0
    status: int = 0


def logged_in_client() -> Client:
    """A client logged in as a superuser (made once per scratch database)."""
    from django.contrib.auth import get_user_model  # the app registry is ready by now

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
    from orchestration.models import WorkItem  # the app registry is ready by now

    item = WorkItem.objects.filter(status="in_progress").order_by("created_at").first()
    item = item or WorkItem.objects.order_by("-created_at").first()
    return path.format(item=item.pk if item else "00000000-0000-0000-0000-000000000000")


def request_once(client: Client, path: str) -> tuple[float, int, int]:
    """Seconds, queries and status of one GET."""
    with CaptureQueriesContext(connection) as captured:
        started = time.perf_counter()
        response = client.get(path)
        _ = response.content  # the test client has rendered the template by now
        took = time.perf_counter() - started
    return took, len(captured.captured_queries), response.status_code


def _switch(name: str) -> None:
    """Point Django's connection at database ``name`` (the next query reconnects)."""
    connection.close()
    connection.settings_dict["NAME"] = name


def _admin_sql(sql: str) -> None:
    """Run ``sql`` outside every scratch database (CREATE / DROP DATABASE)."""
    connection.close()
    with connection._nodb_cursor() as cursor:
        cursor.execute(sql)


def pages(ctx: Context) -> list[Figure]:
    small_n, large_n = ctx.size(10_000, 300), ctx.size(1_000_000, 3_000)
    small_db, large_db = ctx.database, f"{ctx.database}_large"
    patches = [
        mock.patch.multiple(settings, API_KEY=API_KEY, ALLOWED_HOSTS=["*"]),
    ]
    for p in patches:
        p.start()
    quoted = connection.ops.quote_name
    try:
        # The large history gets its own database, a copy of the migrated scratch one.
        _admin_sql(f"DROP DATABASE IF EXISTS {quoted(large_db)}")
        _admin_sql(f"CREATE DATABASE {quoted(large_db)} TEMPLATE {quoted(small_db)}")
        paths: dict[str, dict[str, str]] = {}
        for name, n in ((small_db, small_n), (large_db, large_n)):
            _switch(name)
            started = time.perf_counter()
            seed(items=n)
            vacuum_analyze()
            print(f"   seeded {n} items in {time.perf_counter() - started:.1f} s", flush=True)
            logged_in_client()  # the user row, before the first timed request
            paths[name] = {page: resolve(path) for page, path in PAGES}
        runs = {name: {page: PageRuns() for page, _ in PAGES} for name in (small_db, large_db)}
        rounds = ctx.rounds * (1 if ctx.smoke else 4)
        for round_ in range(rounds):
            order = (small_db, large_db) if round_ % 2 == 0 else (large_db, small_db)
            for name in order:
                _switch(name)
                client = logged_in_client()
                client.get("/")  # reconnect and warm up off the clock
                for page, _path in PAGES:
                    took, queries, status = request_once(client, paths[name][page])
                    got = runs[name][page]
                    got.seconds.append(took * 1000)
                    got.queries, got.status = max(got.queries, queries), status
        return _figures(runs[large_db], runs[small_db], large_n, small_n)
    finally:
        for p in patches:
            p.stop()
        _switch(small_db)
        _admin_sql(f"DROP DATABASE IF EXISTS {quoted(large_db)}")
        _switch(small_db)


def _figures(
    large: dict[str, PageRuns], small: dict[str, PageRuns], large_n: int, small_n: int
) -> list[Figure]:
    figures = []
    for page, _path in PAGES:
        got, base = large[page], small[page]
        figures.append(
            Figure(
                name=f"{page} at {large_n:,} items",
                unit="ms",
                whim=got.seconds,
                baseline=base.seconds,
                baseline_name=f"the same page at {small_n:,}",
                targets=(Target("p95", max_ratio=2),),
                note=f"{got.queries} queries (HTTP {got.status})",
            )
        )
    worst = max(PAGES, key=lambda p: max(large[p[0]].queries, small[p[0]].queries))[0]
    queries = [float(max(large[p].queries, small[p].queries)) for p, _ in PAGES]
    figures.append(
        Figure(
            name="SQL queries per page (worst page)",
            unit="queries",
            whim=[max(queries)],
            baseline=[float(small[worst].queries)],
            baseline_name=f"{worst} at {small_n:,}",
            targets=(Target("max", max_value=8),),
            note=f"worst: {worst}",
        )
    )
    return figures


BENCHMARKS = [
    Benchmark(
        "pages",
        "console pages, the admin list, /api/queue|status|metrics and /metrics at 1 M items",
        pages,
    )
]
