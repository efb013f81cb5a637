"""The worker callback routes (API.md "Worker callbacks"): register and heartbeat, through the
Django test client.

Both are safe to repeat; a worker that is no longer the active attempt is fenced off with 409.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from django.test import Client

from orchestration.clock import db_now
from orchestration.models import FileLock, Worker, WorkerStatus, WorkItemStatus
from tests.callbacks_support import call, hold, kill, snapshot
from tests.factories import running_attempt
from tests.helpers import assert_error

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("retry_policy")]


# --- register ------------------------------------------------------------------------------


def test_register_answers_201_with_the_worker_and_its_item(client: Client) -> None:
    item, worker = running_attempt()

    resp = call(client, worker, "register", {"workItemId": str(item.pk)})

    assert resp.status_code == 201, resp.content
    body = resp.json()
    assert body["workerId"] == str(worker.pk)
    assert body["workItem"]["id"] == str(item.pk)
    assert body["workItem"]["repo"] == item.repo
    assert body["workItem"]["spec"] == item.spec
    assert body["workItem"]["workerId"] == str(worker.pk)


def test_register_is_safe_to_repeat(client: Client) -> None:
    item, worker = running_attempt()

    first = call(client, worker, "register", {"workItemId": str(item.pk)})
    second = call(client, worker, "register", {"workItemId": str(item.pk)})

    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["workItem"]["id"] == second.json()["workItem"]["id"] == str(item.pk)
    item.refresh_from_db()
    worker.refresh_from_db()
    assert item.status == WorkItemStatus.IN_PROGRESS
    assert worker.status == WorkerStatus.RUNNING


@pytest.mark.parametrize(
    "work_item_id",
    [
        pytest.param("other", id="another_workers_item"),
        pytest.param(str(uuid.UUID(int=7)), id="unknown_item"),
        pytest.param("not-a-uuid", id="malformed"),
        pytest.param(None, id="missing"),
    ],
)
def test_register_with_a_wrong_work_item_is_a_validation_error(
    client: Client, work_item_id: str | None
) -> None:
    _item, worker = running_attempt()
    other_item, _ = running_attempt()
    body = {} if work_item_id is None else {"workItemId": work_item_id}
    if work_item_id == "other":
        body["workItemId"] = str(other_item.pk)

    resp = call(client, worker, "register", body)

    details = assert_error(resp, 400, "VALIDATION_ERROR")["details"]
    assert "workItemId" in details


def test_register_of_a_killed_worker_is_fenced(client: Client) -> None:
    item, worker = running_attempt()
    kill(worker)

    resp = call(client, worker, "register", {"workItemId": str(item.pk)})

    assert_error(resp, 409, "INVALID_STATE")


# --- heartbeat -----------------------------------------------------------------------------


def test_heartbeat_records_liveness_iteration_and_tokens(client: Client) -> None:
    item, worker = running_attempt()
    Worker.objects.filter(pk=worker.pk).update(last_heartbeat=db_now() - dt.timedelta(minutes=5))
    before = db_now()

    resp = call(client, worker, "heartbeat", {"iteration": 4, "tokensIn": 1200, "tokensOut": 300})

    assert resp.status_code == 200, resp.content
    assert resp.json() == {"success": True}
    worker.refresh_from_db()
    item.refresh_from_db()
    assert worker.last_heartbeat is not None and worker.last_heartbeat >= before
    assert (worker.iteration, worker.tokens_in, worker.tokens_out) == (4, 1200, 300)
    assert item.iteration == 4


def test_heartbeat_renews_the_workers_lock_leases(client: Client, settings: Any) -> None:
    settings.LOCK_TTL = 600
    _item, worker = running_attempt(repo="acme/shared")
    _, other = running_attempt(repo="acme/shared")
    hold(worker, "a.py", "b.py", seconds=5)
    hold(other, "c.py", seconds=5)
    others_lease = FileLock.objects.get(path="c.py").expires_at
    start = db_now()

    assert call(client, worker, "heartbeat", {"iteration": 1}).status_code == 200

    end = db_now()
    ttl = dt.timedelta(seconds=600)
    for lease in FileLock.objects.filter(worker=worker):
        assert start + ttl <= lease.expires_at <= end + ttl, lease.path
    assert FileLock.objects.get(path="c.py").expires_at == others_lease


def test_heartbeat_does_not_revive_a_lease_that_already_lapsed(
    client: Client, settings: Any
) -> None:
    settings.LOCK_TTL = 600
    _item, worker = running_attempt(repo="acme/shared")
    hold(worker, "live.py", seconds=5)
    hold(worker, "lapsed.py", seconds=-5)
    lapsed = FileLock.objects.get(path="lapsed.py").expires_at

    assert call(client, worker, "heartbeat", {"iteration": 1}).status_code == 200

    assert FileLock.objects.get(path="lapsed.py").expires_at == lapsed
    assert FileLock.objects.get(path="live.py").expires_at > db_now() + dt.timedelta(seconds=500)


def test_heartbeat_of_a_killed_worker_is_fenced(client: Client) -> None:
    item, worker = running_attempt()
    kill(worker)
    before = snapshot(item, worker)

    assert_error(call(client, worker, "heartbeat", {"iteration": 9}), 409, "INVALID_STATE")
    assert snapshot(item, worker) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({}, "iteration", id="iteration_missing"),
        pytest.param({"iteration": -1}, "iteration", id="iteration_negative"),
        pytest.param({"iteration": "x"}, "iteration", id="iteration_string"),
        pytest.param({"iteration": "3"}, "iteration", id="iteration_numeric_text"),
        pytest.param({"iteration": True}, "iteration", id="iteration_true"),
        pytest.param({"iteration": 1.5}, "iteration", id="iteration_fraction"),
        pytest.param({"iteration": 1, "tokensIn": -5}, "tokensIn", id="tokens_in_negative"),
        pytest.param({"iteration": 1, "tokensOut": "many"}, "tokensOut", id="tokens_out_string"),
    ],
)
def test_heartbeat_with_a_bad_body_changes_nothing(
    client: Client, body: dict[str, Any], field: str
) -> None:
    item, worker = running_attempt()
    hold(worker, "a.py", seconds=5)
    before = snapshot(item, worker)

    details = assert_error(call(client, worker, "heartbeat", body), 400, "VALIDATION_ERROR")[
        "details"
    ]

    assert field in details, details
    assert snapshot(item, worker) == before
