"""The admin's lists say when their count is not exact: "about N" for PostgreSQL's estimate of
an unfiltered table, "at least 10000" when a filter matches more than the paginator counts."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client

from bench.seed import seed
from orchestration.admin import base

pytestmark = pytest.mark.django_db


def test_a_list_under_the_cap_shows_its_exact_count(superuser_client: Client) -> None:
    seed(items=300)
    page = superuser_client.get("/admin/orchestration/workitem/").content.decode()
    assert "300 work items" in page
    assert "about 300" not in page and "at least" not in page


def test_past_the_cap_an_unfiltered_list_says_about_and_a_filtered_one_at_least(
    superuser_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(items=300)
    monkeypatch.setattr(base, "COUNT_CAP", 100)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE orchestration_workitem")  # the estimate the list shows

    unfiltered = superuser_client.get("/admin/orchestration/workitem/").content.decode()
    filtered = superuser_client.get(
        "/admin/orchestration/workitem/?status__exact=completed"
    ).content.decode()

    assert "about 300 work items" in unfiltered
    assert "at least 100 work items" in filtered
