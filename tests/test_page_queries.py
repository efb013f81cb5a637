"""Every page the bench measures (bench/pages.py) runs at most 8 SQL queries on a seeded history,
whatever the filter, with or without htmx: the pages read tallies and bounded slices, never
one query per row or per status. (How fast they are is measured by ``make bench`` only.)"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from bench.pages import PAGES, resolve
from bench.seed import seed
from orchestration.models import WorkItem, WorkItemStatus

pytestmark = pytest.mark.django_db

MAX_QUERIES = 8

# Pages the bench does not time but the console polls or links to.
MORE = (
    ("queue ?status=all", "/queue/?status=all"),
    ("queue ?status=active&type=review", "/queue/?status=active&type=review"),
    ("/api/queue?repo=", "/api/queue?repo=acme/repo-001"),
    ("/api/queue?limit=10", "/api/queue?limit=10"),
)


@pytest.fixture
def seeded(superuser_client: Client, api_key: str) -> Client:
    seed(items=600)
    superuser_client.defaults["HTTP_X_API_KEY"] = api_key
    return superuser_client


def _queries(client: Client, path: str, **headers: Any) -> tuple[int, int, list[str]]:
    client.get(path, **headers)  # first request: sessions, caches
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path, **headers)
    sql = [q["sql"][:120] for q in captured.captured_queries]
    return response.status_code, len(sql), sql


@pytest.mark.parametrize(("name", "path"), [*PAGES, *MORE], ids=[n for n, _ in (*PAGES, *MORE)])
def test_each_page_runs_at_most_eight_queries(seeded: Client, name: str, path: str) -> None:
    status, count, sql = _queries(seeded, resolve(path))
    assert status == 200, name
    assert count <= MAX_QUERIES, "\n".join(sql)


@pytest.mark.parametrize("path", ["/", "/workers/", "/work/{item}/"])
def test_the_polled_fragments_run_at_most_eight_queries(seeded: Client, path: str) -> None:
    status, count, sql = _queries(seeded, resolve(path), HTTP_HX_REQUEST="true")
    assert status == 200
    assert count <= MAX_QUERIES, "\n".join(sql)


@pytest.mark.parametrize(
    "status",
    [WorkItemStatus.QUEUED, WorkItemStatus.IN_PROGRESS, WorkItemStatus.COMPLETED],
)
def test_a_work_item_page_runs_at_most_eight_queries(seeded: Client, status: str) -> None:
    item = WorkItem.objects.filter(status=status).order_by("created_at").first()
    assert item is not None
    code, count, sql = _queries(seeded, f"/work/{item.pk}/")
    assert code == 200
    assert count <= MAX_QUERIES, "\n".join(sql)
