"""API.md "Auth" for client routes: API keys, hashed, revocable, never logged."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils.module_loading import import_string

from orchestration.models import (
    ApiKey,
    WorkerStatus,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
    WorkItemType,
)
from orchestration.services.apikeys import apikey_create, apikey_revoke
from reviews.models import PRReview
from tests.factories import WorkerFactory, WorkItemFactory
from tests.helpers import assert_error

pytestmark = pytest.mark.django_db

SPEC = "# Add a login page\n\nPlease."
SOME_ID = str(uuid.UUID(int=7))

CLIENT_ROUTES = [
    ("post", "/api/work"),
    ("get", f"/api/work/{SOME_ID}"),
    ("post", f"/api/work/{SOME_ID}/cancel"),
    ("post", f"/api/work/{SOME_ID}/requeue"),
    ("get", f"/api/work/{SOME_ID}/verification"),
    ("get", "/api/queue"),
    ("get", "/api/status"),
    ("get", "/api/workers"),
    ("post", f"/api/workers/{SOME_ID}/kill"),
    ("get", f"/api/workers/{SOME_ID}/logs"),
    ("get", "/api/metrics"),
    ("get", "/api/reviews"),
    ("get", f"/api/reviews/work-item/{SOME_ID}"),
    ("get", "/api/reviews/pr/1"),
]
ROUTE_IDS = [f"{m.upper()} {p.replace(SOME_ID, '<id>')}" for m, p in CLIENT_ROUTES]


def call(client: Client, method: str, path: str, **headers: str) -> Any:
    if method == "post":
        body = json.dumps({"repo": "acme/widgets", "spec": SPEC})
        return client.post(path, body, "application/json", headers=headers)
    return client.get(path, headers=headers)


def assert_nothing_changed() -> None:
    assert WorkItem.objects.count() == 0
    assert WorkItemEvent.objects.count() == 0


@pytest.mark.parametrize("embedded", [False, True], ids=["server", "embedded"])
@pytest.mark.parametrize(("method", "path"), CLIENT_ROUTES, ids=ROUTE_IDS)
def test_every_client_route_refuses_a_request_without_a_key(
    client: Client, api_key: str, settings: Any, method: str, path: str, embedded: bool
) -> None:
    """Even in embedded mode: once a key exists, loopback is no longer trusted."""
    settings.EMBEDDED_MODE = embedded
    settings.API_KEY = ""
    assert_error(call(client, method, path), 401, "UNAUTHORIZED")
    assert_nothing_changed()


@pytest.mark.parametrize(("method", "path"), CLIENT_ROUTES, ids=ROUTE_IDS)
def test_every_client_route_refuses_a_wrong_key(
    client: Client, api_key: str, method: str, path: str
) -> None:
    assert_error(call(client, method, path, **{"X-API-Key": api_key + "x"}), 401, "UNAUTHORIZED")
    assert_nothing_changed()


def rows_behind_the_routes(path: str) -> None:
    """Make every id in CLIENT_ROUTES exist: item SOME_ID (in progress on worker SOME_ID, or
    failed for the requeue), its verification item, and a review of its PR number 1."""
    finished = path.endswith("/requeue")
    item = WorkItemFactory.create(
        id=SOME_ID, status=WorkItemStatus.FAILED if finished else WorkItemStatus.IN_PROGRESS
    )
    worker = WorkerFactory.create(
        id=SOME_ID,
        work_item=item,
        status=WorkerStatus.FAILED if finished else WorkerStatus.RUNNING,
        container_id=f"c-{SOME_ID}",
    )
    if not finished:
        WorkItem.objects.filter(pk=item.pk).update(worker=worker)
    WorkItemFactory.create(type=WorkItemType.VERIFICATION, parent_work_item=item)
    PRReview.objects.create(work_item=item, repo=item.repo, pr_number=1, model_used="m")


# What each client route answers once the key lets the call through: status, and a field of
# the body that only the route's own success carries.
SUCCESS: dict[tuple[str, str], tuple[int, Callable[[Any], bool]]] = {
    ("post", "/api/work"): (201, lambda b: b["status"] == "queued"),
    ("get", f"/api/work/{SOME_ID}"): (200, lambda b: b["id"] == SOME_ID),
    ("post", f"/api/work/{SOME_ID}/cancel"): (200, lambda b: b == {"success": True}),
    ("post", f"/api/work/{SOME_ID}/requeue"): (
        200,
        lambda b: b["id"] == SOME_ID and b["status"] == "queued",
    ),
    ("get", f"/api/work/{SOME_ID}/verification"): (
        200,
        lambda b: b["parentWorkItemId"] == SOME_ID and b["type"] == "verification",
    ),
    ("get", "/api/queue"): (200, lambda b: "items" in b and "stats" in b),
    ("get", "/api/status"): (200, lambda b: b["status"] in ("healthy", "degraded", "error")),
    ("get", "/api/workers"): (200, lambda b: [w["id"] for w in b] == [SOME_ID]),
    ("post", f"/api/workers/{SOME_ID}/kill"): (200, lambda b: b == {"success": True}),
    ("get", f"/api/workers/{SOME_ID}/logs"): (200, lambda b: b["workerId"] == SOME_ID),
    ("get", "/api/metrics"): (200, lambda b: "activeWorkers" in b and "tokenUsage" in b),
    ("get", "/api/reviews"): (200, lambda b: [r["prNumber"] for r in b] == [1]),
    ("get", f"/api/reviews/work-item/{SOME_ID}"): (
        200,
        lambda b: [r["workItemId"] for r in b] == [SOME_ID],
    ),
    ("get", "/api/reviews/pr/1"): (200, lambda b: b["workItemId"] == SOME_ID),
}


def test_every_client_route_has_its_success_written_down() -> None:
    assert set(SUCCESS) == set(CLIENT_ROUTES)


@pytest.mark.parametrize(("method", "path"), CLIENT_ROUTES, ids=ROUTE_IDS)
def test_every_client_route_lets_a_valid_key_through(
    client: Client, api_key: str, method: str, path: str
) -> None:
    """The control for the two tests above: the same calls with the key succeed."""
    rows_behind_the_routes(path)
    status, carries_its_answer = SUCCESS[(method, path)]

    resp = call(client, method, path, **{"X-API-Key": api_key})

    assert resp.status_code == status, resp.content
    assert carries_its_answer(resp.json()), resp.json()


@pytest.mark.parametrize(
    "header",
    [
        pytest.param({"X-API-Key": ""}, id="empty_x_api_key"),
        pytest.param({"Authorization": ""}, id="empty_authorization"),
        pytest.param({"Authorization": "Bearer "}, id="empty_bearer"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="basic_auth"),
        pytest.param({"X-API-Key": "whim_" + "a" * 43}, id="well_formed_but_unknown"),
        pytest.param({"X-API-Key": "k" * 5000}, id="very_long"),
    ],
)
def test_it_refuses_a_key_that_is_not_a_key(
    client: Client, api_key: str, header: dict[str, str]
) -> None:
    assert_error(client.get("/api/queue", headers=header), 401, "UNAUTHORIZED")


def test_the_key_sent_as_a_bearer_token_works(client: Client, api_key: str) -> None:
    resp = call(client, "post", "/api/work", Authorization=f"Bearer {api_key}")
    assert resp.status_code == 201
    assert (
        client.get("/api/queue", headers={"Authorization": f"bearer {api_key}"}).status_code == 200
    )


def test_a_wrong_bearer_token_is_refused(client: Client, api_key: str) -> None:
    assert_error(
        client.get("/api/queue", headers={"Authorization": f"Bearer {api_key}x"}),
        401,
        "UNAUTHORIZED",
    )


def test_a_revoked_key_is_refused(client: Client) -> None:
    row, key = apikey_create(name="soon gone")
    assert client.get("/api/queue", headers={"X-API-Key": key}).status_code == 200
    assert apikey_revoke(key_id=row.pk) is True
    assert_error(client.get("/api/queue", headers={"X-API-Key": key}), 401, "UNAUTHORIZED")
    assert_error(
        call(client, "post", "/api/work", Authorization=f"Bearer {key}"), 401, "UNAUTHORIZED"
    )
    assert_nothing_changed()


def test_revoking_one_key_leaves_the_others_working(client: Client) -> None:
    gone, gone_key = apikey_create(name="a")
    _, kept_key = apikey_create(name="b")
    apikey_revoke(key_id=gone.pk)
    assert client.get("/api/queue", headers={"X-API-Key": kept_key}).status_code == 200
    assert_error(client.get("/api/queue", headers={"X-API-Key": gone_key}), 401, "UNAUTHORIZED")


def test_the_api_key_setting_is_accepted_as_a_key(client: Client, settings: Any) -> None:
    settings.API_KEY = "env-secret-4f1c"
    resp = call(client, "post", "/api/work", **{"X-API-Key": "env-secret-4f1c"})
    assert resp.status_code == 201
    event = WorkItemEvent.objects.get(work_item_id=resp.json()["id"])
    assert event.actor == "env:API_KEY"
    bearer = {"Authorization": "Bearer env-secret-4f1c"}
    assert client.get("/api/queue", headers=bearer).status_code == 200


def test_the_api_key_setting_does_not_open_the_door_to_other_keys(
    client: Client, settings: Any
) -> None:
    settings.API_KEY = "env-secret-4f1c"
    assert_error(
        client.get("/api/queue", headers={"X-API-Key": "env-secret-4f1"}), 401, "UNAUTHORIZED"
    )
    assert_error(
        client.get("/api/queue", headers={"X-API-Key": "env-secret-4f1cc"}), 401, "UNAUTHORIZED"
    )
    assert_error(client.get("/api/queue"), 401, "UNAUTHORIZED")


def test_an_unset_api_key_setting_is_not_an_empty_key(client: Client, settings: Any) -> None:
    settings.API_KEY = ""
    settings.EMBEDDED_MODE = False
    assert_error(client.get("/api/queue", headers={"Authorization": "Bearer"}), 401, "UNAUTHORIZED")


def test_embedded_mode_with_no_key_configured_lets_loopback_in(
    client: Client, settings: Any
) -> None:
    settings.EMBEDDED_MODE = True
    settings.API_KEY = ""
    assert client.get("/api/queue").status_code == 200
    assert_error(client.get("/api/queue", REMOTE_ADDR="10.0.0.8"), 401, "UNAUTHORIZED")
    apikey_create(name="first")
    assert_error(client.get("/api/queue"), 401, "UNAUTHORIZED")


def _run_key() -> str:
    """What ``make run`` does before it starts: whim_setup, which prints this run's key."""
    out = io.StringIO()
    call_command("whim_setup", stdout=out)
    return next(
        line.split(": ", 1)[1] for line in out.getvalue().splitlines() if line.startswith("API key")
    )


def test_the_key_make_run_creates_leaves_keyless_loopback_on(client: Client, settings: Any) -> None:
    """The original Whim's client sends no key: in single-machine mode it must still work
    after ``make run`` made its own key, and that key must work too."""
    settings.EMBEDDED_MODE = True
    settings.API_KEY = ""
    key = _run_key()
    _run_key()  # a second run: the first run's key is revoked, the exemption stays
    key = _run_key()

    assert client.get("/api/queue").status_code == 200
    assert client.get("/api/queue", headers={"X-API-Key": key}).status_code == 200
    assert_error(client.get("/api/queue", REMOTE_ADDR="10.0.0.8"), 401, "UNAUTHORIZED")
    # Not in server mode: there, a key is always needed.
    settings.EMBEDDED_MODE = False
    assert_error(client.get("/api/queue"), 401, "UNAUTHORIZED")
    assert client.get("/api/queue", headers={"X-API-Key": key}).status_code == 200


@pytest.mark.parametrize("how", ["command", "admin", "setting"])
def test_a_key_an_operator_configures_or_creates_switches_keyless_loopback_off(
    client: Client, settings: Any, superuser_client: Client, how: str
) -> None:
    settings.EMBEDDED_MODE = True
    settings.API_KEY = ""
    key = _run_key()
    assert client.get("/api/queue").status_code == 200
    if how == "command":
        call_command("whim_apikey", "create", "--name", "ops", stdout=io.StringIO())
    elif how == "admin":
        resp = superuser_client.post("/admin/orchestration/apikey/add/", {"name": "ops"})
        assert resp.status_code == 302, resp.content
        assert ApiKey.objects.get(name="ops").auto_created is False
    else:
        settings.API_KEY = "env-secret-7d1e-0000"

    assert_error(client.get("/api/queue"), 401, "UNAUTHORIZED")
    assert client.get("/api/queue", headers={"X-API-Key": key}).status_code == 200


def test_server_mode_with_no_key_configured_lets_nobody_in(client: Client, settings: Any) -> None:
    settings.EMBEDDED_MODE = False
    settings.API_KEY = ""
    assert_error(client.get("/api/queue"), 401, "UNAUTHORIZED")


def test_a_keys_use_is_recorded_as_the_actor(api: Client) -> None:
    resp = call(api, "post", "/api/work")
    assert WorkItemEvent.objects.get(work_item_id=resp.json()["id"]).actor == "api-key:tests"
    assert ApiKey.objects.get(name="tests").last_used_at is not None


# --- storage and logs ---------------------------------------------------------------------


def test_keys_are_stored_hashed(client: Client) -> None:
    row, key = apikey_create(name="stored")
    row.refresh_from_db()
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    for f in ApiKey._meta.concrete_fields:
        assert key not in str(getattr(row, f.attname)), f.name
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM orchestration_apikey WHERE id = %s", [row.pk])
        raw_row = cursor.fetchone()
    assert raw_row is not None
    assert all(key not in str(value) for value in raw_row)
    assert client.get("/api/queue", headers={"X-API-Key": key}).status_code == 200


def test_two_keys_are_never_the_same(client: Client) -> None:
    keys = {apikey_create(name=f"k{n}")[1] for n in range(20)}
    assert len(keys) == 20
    assert all(len(k) >= 32 for k in keys)


def test_a_key_never_appears_in_any_log_record(
    client: Client, caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="django.db.backends")
    caplog.set_level(logging.DEBUG, logger="django.request")
    settings.API_KEY = "env-secret-9b2e-0000"
    _, key = apikey_create(name="quiet")
    wrong = key[:-4] + "zzzz"
    item = WorkItemFactory.create()
    worker = WorkerFactory.create(log_tail="x")
    with CaptureQueriesContext(connection) as queries:
        ok = call(client, "post", "/api/work", **{"X-API-Key": key})
        assert ok.status_code == 201
        client.get(f"/api/work/{item.pk}", headers={"Authorization": f"Bearer {key}"})
        client.get(f"/api/workers/{worker.pk}/logs", headers={"X-API-Key": settings.API_KEY})
        client.get("/api/nope", headers={"X-API-Key": key})
        assert_error(call(client, "post", "/api/work", **{"X-API-Key": wrong}), 401, "UNAUTHORIZED")
        assert_error(
            client.get("/api/queue", headers={"Authorization": f"Bearer {wrong}"}),
            401,
            "UNAUTHORIZED",
        )

    records = caplog.records
    # The capture is live: the submit, the SQL and the 401 were all logged.
    assert any("submitted" in r.getMessage() for r in records)
    assert any(r.name == "django.db.backends" for r in records)
    assert any(r.name == "django.request" and "Unauthorized" in r.getMessage() for r in records)
    logging_config: Any = django_settings.LOGGING
    # Every formatter the settings configure (plain and json), as the settings build it.
    formatters = [import_string(spec["()"])() for spec in logging_config["formatters"].values()]
    assert len(formatters) == 2
    for secret in (key, wrong, settings.API_KEY):
        for record in records:
            assert secret not in record.getMessage(), record.name
            for formatter in formatters:
                assert secret not in formatter.format(record), record.name
            assert secret not in repr(record.args), record.name
            assert secret not in repr(getattr(record, "request", "")), record.name
        assert secret not in caplog.text
        assert all(secret not in q["sql"] for q in queries.captured_queries)


# --- manage.py whim_apikey ----------------------------------------------------------------


def apikey_command(*args: str) -> str:
    out = io.StringIO()
    call_command("whim_apikey", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_whim_apikey_create_prints_a_working_key_once(client: Client) -> None:
    output = apikey_command("create", "--name", "ci")
    key = output.strip().splitlines()[-1]
    row = ApiKey.objects.get(name="ci")
    assert f"Created key {row.pk}" in output
    assert key.startswith("whim_")
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert client.get("/api/queue", headers={"X-API-Key": key}).status_code == 200


@pytest.mark.parametrize("name", ["", "   ", "n" * 101, "bad\x00name"])
def test_whim_apikey_create_refuses_a_bad_name(name: str) -> None:
    with pytest.raises(CommandError):
        apikey_command("create", "--name", name)
    assert not ApiKey.objects.exists()


def test_whim_apikey_list_shows_every_key_but_never_the_key(client: Client) -> None:
    first = apikey_command("create", "--name", "alpha").strip().splitlines()[-1]
    second = apikey_command("create", "--name", "beta").strip().splitlines()[-1]
    apikey_revoke(key_id=ApiKey.objects.get(name="alpha").pk)
    listing = apikey_command("list")
    lines = listing.strip().splitlines()
    assert len(lines) == 2
    assert "alpha" in lines[0] and "revoked" in lines[0]
    assert "beta" in lines[1] and "active" in lines[1]
    for key in (first, second):
        assert key not in listing
        assert hashlib.sha256(key.encode()).hexdigest() not in listing


def test_whim_apikey_revoke_stops_the_key(client: Client) -> None:
    key = apikey_command("create", "--name", "temp").strip().splitlines()[-1]
    row = ApiKey.objects.get(name="temp")
    assert apikey_command("revoke", str(row.pk)).strip() == "Revoked."
    assert_error(client.get("/api/queue", headers={"X-API-Key": key}), 401, "UNAUTHORIZED")
    assert apikey_command("revoke", str(row.pk)).strip() == "Already revoked."


def test_whim_apikey_revoke_of_an_unknown_id_is_an_error() -> None:
    with pytest.raises(CommandError, match="not found"):
        apikey_command("revoke", "999999")
