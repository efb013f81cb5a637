"""Learnings (issue 10 §5): stored one row each from ``complete``, served by
``GET /api/learnings`` to the worker of the same repo (and to clients), shown on the item page
and in the admin, purged by retention."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.test import Client

from orchestration.clock import db_now
from orchestration.models import Learning, WorkItem
from orchestration.services.sweeps import sweep_retention
from tests.callbacks_support import SHA, call, kill, token_of
from tests.factories import running_attempt
from tests.helpers import assert_error

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("retry_policy")]

LEARNED = [
    {"content": "run `make lint` before committing", "spec": "# Add a widget"},
    {"content": "the fixtures live in tests/data", "spec": "# Add a widget"},
]


def completed_with_learnings(client: Client, repo: str = "acme/widgets") -> WorkItem:
    item, worker = running_attempt(repo=repo)
    resp = call(client, worker, "complete", {"commitSha": SHA, "learnings": LEARNED})
    assert resp.status_code == 200, resp.content
    return item


def test_a_completion_stores_each_learning_once(client: Client) -> None:
    item = completed_with_learnings(client)
    # A repeated complete is a no-op: nothing stored twice.
    assert call(client, item.workers.get(), "complete", {"learnings": LEARNED}).status_code == 200

    rows = Learning.objects.order_by("id")
    assert [(r.repo, r.content, r.spec, r.work_item_id) for r in rows] == [
        ("acme/widgets", LEARNED[0]["content"], "# Add a widget", item.pk),
        ("acme/widgets", LEARNED[1]["content"], "# Add a widget", item.pk),
    ]


def test_bad_learnings_are_refused_and_nothing_is_stored(client: Client) -> None:
    item, worker = running_attempt()

    resp = call(client, worker, "complete", {"learnings": [*LEARNED, {"content": 5}]})

    assert_error(resp, 400, "VALIDATION_ERROR", details=["learnings"])
    assert not Learning.objects.exists()
    item.refresh_from_db()
    assert item.status == "in_progress"


# --- GET /api/learnings ----------------------------------------------------------------------


def test_a_worker_reads_its_repos_learnings_through_its_callback_base(client: Client) -> None:
    completed_with_learnings(client)
    completed_with_learnings(client, repo="acme/other")
    _, worker = running_attempt(repo="acme/widgets")

    resp = client.get(f"/w/{token_of(worker)}/api/learnings?repo=acme/widgets")

    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert [x["content"] for x in body] == [LEARNED[1]["content"], LEARNED[0]["content"]]
    assert set(body[0]) == {"id", "repo", "spec", "content", "embedding", "createdAt", "workItemId"}
    assert body[0]["repo"] == "acme/widgets" and body[0]["embedding"] is None
    assert dt.datetime.fromisoformat(body[0]["createdAt"]).tzinfo is not None
    # With a bearer header, and without ?repo=: its own repo.
    bearer = client.get(
        "/api/learnings", headers={"Authorization": f"Bearer {token_of(worker)}"}
    ).json()
    assert bearer == body


def test_a_worker_may_not_read_another_repos_learnings(client: Client) -> None:
    completed_with_learnings(client, repo="acme/other")
    _, worker = running_attempt(repo="acme/widgets")

    resp = client.get(f"/w/{token_of(worker)}/api/learnings?repo=acme/other")

    assert_error(resp, 403, "FORBIDDEN")


def test_an_ended_attempt_reads_nothing(client: Client) -> None:
    completed_with_learnings(client)
    _, worker = running_attempt(repo="acme/widgets")
    kill(worker)

    assert_error(client.get(f"/w/{token_of(worker)}/api/learnings"), 409, "INVALID_STATE")


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-token"}, {"X-API-Key": "whim_wrong"}],
    ids=["none", "bad_bearer", "bad_key"],
)
def test_learnings_need_a_key_or_a_worker_token(
    client: Client, api_key: str, headers: dict[str, str]
) -> None:
    assert_error(client.get("/api/learnings", headers=headers), 401, "UNAUTHORIZED")
    assert_error(client.get("/w/not-a-token/api/learnings"), 401, "UNAUTHORIZED")


def test_a_client_reads_any_repo_newest_first_and_at_most_fifty(
    client: Client, api: Client
) -> None:
    item = completed_with_learnings(client)
    Learning.objects.bulk_create(
        Learning(repo="acme/widgets", content=f"n{i}", work_item=item) for i in range(60)
    )

    body = api.get("/api/learnings?repo=acme/widgets").json()

    assert len(body) == 50
    assert body[0]["content"] == "n59"
    assert api.get("/api/learnings?repo=acme/widgets&limit=3").json()[2]["content"] == "n57"
    assert api.get("/api/learnings?repo=acme/nobody").json() == []


@pytest.mark.parametrize(
    "query", ["repo=not a repo", "repo=../x", "limit=0", "limit=51", "limit=many"]
)
def test_a_bad_query_is_a_400(api: Client, query: str) -> None:
    assert_error(api.get(f"/api/learnings?{query}"), 400, "VALIDATION_ERROR")


def test_only_get_is_allowed(api: Client) -> None:
    resp = api.post("/api/learnings", "{}", content_type="application/json")
    assert resp.status_code == 405


# --- console, admin, retention ---------------------------------------------------------------


def test_the_item_page_and_the_admin_show_learnings(
    client: Client, staff_client: Client, superuser_client: Client
) -> None:
    item = completed_with_learnings(client)

    page = staff_client.get(f"/work/{item.pk}/").content.decode()
    assert 'id="learnings"' in page
    assert "run `make lint` before committing" in page
    listing = superuser_client.get("/admin/orchestration/learning/?q=acme/widgets")
    assert listing.status_code == 200
    assert "the fixtures live in tests/data" in listing.content.decode()
    row = Learning.objects.first()
    assert row is not None
    change = superuser_client.get(f"/admin/orchestration/learning/{row.pk}/change/")
    assert change.status_code == 200
    assert 'name="content"' not in change.content.decode()  # read-only


def test_retention_purges_old_learnings_and_keeps_recent_ones(
    client: Client, settings: Any
) -> None:
    settings.RETENTION_DAYS = 30
    item = completed_with_learnings(client)
    old = Learning.objects.order_by("id").first()
    assert old is not None
    Learning.objects.filter(pk=old.pk).update(created_at=db_now() - dt.timedelta(days=31))

    counts = sweep_retention()

    assert counts["learnings"] == 1
    assert list(Learning.objects.values_list("content", flat=True)) == [LEARNED[1]["content"]]
    # An item's purge only unlinks its learnings.
    WorkItem.objects.filter(pk=item.pk).update(updated_at=db_now() - dt.timedelta(days=31))
    sweep_retention()
    assert not WorkItem.objects.filter(pk=item.pk).exists()
    assert Learning.objects.get().work_item_id is None
