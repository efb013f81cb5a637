"""Text that is not Unicode is a 400 at every edge, never a 500 (issue 9, LOW).

A lone UTF-16 surrogate (JSON's ``"\\ud800"``, UTF-8-encoded surrogate bytes, or a shell
argument that is not UTF-8) cannot be stored, logged or answered; bytes that are not UTF-8 in a
query string or a form would otherwise become U+FFFD without a word. Each edge refuses both in
API.md's shape (the console with a plain 400) and writes nothing; real non-ASCII text, astral
characters as surrogate *pairs* included, still goes through.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.test import Client

from orchestration.forms.fields import NOT_UNICODE
from orchestration.models import WorkItem, WorkItemEvent
from reviews.models import PRReview, WebhookDelivery
from tests.callbacks_support import snapshot, token_of
from tests.factories import WorkItemFactory, running_attempt
from tests.helpers import assert_error
from tests.test_api_validation import run_submit
from tests.test_github_webhook import deliver, nothing_stored, review_payload

pytestmark = pytest.mark.django_db

SPEC = "# Add a login page"
LONE = '"# A \\ud800 b"'  # a JSON string literal holding a lone high surrogate
NOT_UTF8 = ["%ff", "%ed%a0%80", "%c3"]  # a stray byte, an encoded surrogate, a cut sequence


def counts() -> tuple[int, int]:
    return WorkItem.objects.count(), WorkItemEvent.objects.count()


# --- the JSON API --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        pytest.param('{"repo": "acme/widgets", "spec": ' + LONE + "}", "spec", id="escaped"),
        pytest.param(
            b'{"repo": "acme/widgets", "spec": "# A \xed\xa0\x80"}', "spec", id="utf8_encoded"
        ),
        pytest.param(
            '{"repo": "acme/widgets", "spec": "# A", "metadata": {"k": [' + LONE + "]}}",
            "metadata",
            id="nested",
        ),
        pytest.param(
            '{"repo": "acme/widgets", "spec": "# A", "\\udc00": 1}', "request", id="in_a_key"
        ),
        pytest.param(
            '{"repo": "acme/widgets", "spec": "# A", "extra": "\\udfff"}', "extra", id="unknown"
        ),
    ],
)
def test_the_api_refuses_a_lone_surrogate_naming_the_field(
    api: Client, raw: str | bytes, field: str
) -> None:
    before = counts()

    resp = api.post("/api/work", raw, content_type="application/json")

    assert_error(resp, 400, "VALIDATION_ERROR", details={field: NOT_UNICODE})
    assert counts() == before


def test_the_api_refuses_a_body_that_is_not_utf8(api: Client) -> None:
    before = counts()

    resp = api.post("/api/work", b'{"repo": "acme/widgets", "spec": "\xff"}', "application/json")

    assert_error(resp, 400, "VALIDATION_ERROR")
    assert counts() == before


@pytest.mark.parametrize("bad", NOT_UTF8)
def test_the_api_refuses_a_query_string_that_is_not_utf8(api: Client, bad: str) -> None:
    resp = api.get(f"/api/queue?repo=acme/{bad}")

    assert_error(resp, 400, "VALIDATION_ERROR", details=["query"])


def test_the_api_accepts_real_unicode_astral_characters_included(api: Client) -> None:
    raw = '{"repo": "acme/widgets", "spec": "# Café \\ud83d\\ude00", "metadata": {"é": "✓"}}'

    resp = api.post("/api/work", raw, content_type="application/json")

    assert resp.status_code == 201, resp.content
    assert WorkItem.objects.get().spec == "# Café \U0001f600"
    assert api.get("/api/queue?repo=acme/caf%C3%A9").status_code == 200


# --- worker callbacks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "raw", "field"),
    [
        ("heartbeat", '{"iteration": 1, "status": ' + LONE + "}", "status"),
        ("fail", '{"iteration": 1, "error": ' + LONE + "}", "error"),
        ("stuck", '{"attempts": 1, "reason": ' + LONE + "}", "reason"),
        ("complete", '{"learnings": [' + LONE + "]}", "learnings"),
        ("lock", '{"repo": "acme/widgets", "files": [' + LONE + "]}", "files"),
    ],
)
@pytest.mark.parametrize("token_in", ["header", "path"])
def test_a_worker_callback_with_a_lone_surrogate_is_a_400_and_changes_nothing(
    client: Client, route: str, raw: str, field: str, token_in: str
) -> None:
    item, worker = running_attempt()
    before = snapshot(item, worker)
    token = token_of(worker)
    if token_in == "path":
        resp = client.post(f"/w/{token}/api/worker/{worker.pk}/{route}", raw, "application/json")
    else:
        resp = client.post(
            f"/api/worker/{worker.pk}/{route}",
            raw,
            "application/json",
            headers={"Authorization": f"Bearer {token}"},
        )

    assert_error(resp, 400, "VALIDATION_ERROR", details={field: NOT_UNICODE})
    assert snapshot(item, worker) == before


# --- the GitHub webhook --------------------------------------------------------------------


@pytest.fixture
def _webhook_secret(settings: Any) -> None:
    settings.GITHUB_WEBHOOK_SECRET = "s3cret-for-the-webhook"


@pytest.mark.usefixtures("_webhook_secret")
def test_a_signed_review_with_a_lone_surrogate_is_a_400_and_stores_nothing(
    client: Client,
) -> None:
    WorkItemFactory.create(repo="acme/widgets", pr_number=7, status="completed")
    raw = json.dumps(review_payload()).replace("edge case.", "edge \\ud800 case.").encode()

    resp = deliver(client, raw)

    assert_error(resp, 400, "VALIDATION_ERROR", details={"review": NOT_UNICODE})
    assert nothing_stored()


@pytest.mark.usefixtures("_webhook_secret")
@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"payload=%7B%22action%22%3A%22%ff%22%7D", id="not_utf8"),
        pytest.param(b"payload=%7B%22action%22%3A%22%5Cud800%22%7D", id="escaped_surrogate"),
    ],
)
def test_a_signed_form_delivery_with_undecodable_text_is_a_400(client: Client, body: bytes) -> None:
    resp = deliver(client, body, event="ping", content_type="application/x-www-form-urlencoded")

    assert_error(resp, 400, "VALIDATION_ERROR")
    assert nothing_stored()
    assert not WebhookDelivery.objects.exists() and not PRReview.objects.exists()


# --- the console ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", NOT_UTF8)
def test_the_web_form_refuses_a_body_that_is_not_utf8(user_client: Client, bad: str) -> None:
    before = counts()

    resp = user_client.post(
        "/work/new/", f"repo=acme%2Fwidgets&spec=%23+A{bad}", "application/x-www-form-urlencoded"
    )

    assert resp.status_code == 400
    assert b"not valid" in resp.content
    assert counts() == before


def test_the_web_form_refuses_metadata_holding_a_lone_surrogate(user_client: Client) -> None:
    before = counts()

    resp = user_client.post(
        "/work/new/", {"repo": "acme/widgets", "spec": SPEC, "metadata": '{"k": ' + LONE + "}"}
    )

    assert resp.status_code == 400
    assert resp.context["form"].errors["metadata"] == [NOT_UNICODE]
    assert counts() == before


def test_the_web_form_accepts_real_unicode(user_client: Client) -> None:
    resp = user_client.post(
        "/work/new/", "repo=acme%2Fwidgets&spec=%23+Caf%C3%A9", "application/x-www-form-urlencoded"
    )

    assert resp.status_code == 302
    assert WorkItem.objects.get().spec == "# Café"


@pytest.mark.parametrize("bad", NOT_UTF8)
def test_console_pages_refuse_a_query_string_that_is_not_utf8(
    user_client: Client, bad: str
) -> None:
    assert user_client.get(f"/queue/?repo={bad}").status_code == 400
    assert user_client.get(f"/?x={bad}").status_code == 400


def test_the_bulk_form_refuses_a_body_that_is_not_utf8(user_client: Client) -> None:
    item = WorkItemFactory.create(status="queued")

    resp = user_client.post(
        "/queue/bulk/",
        f"action=cancel&scope=selected&confirm=yes&ids={item.pk}&repo=%ff",
        "application/x-www-form-urlencoded",
    )

    assert resp.status_code == 400
    item.refresh_from_db()
    assert item.status == "queued"


# --- the command line ----------------------------------------------------------------------


def test_the_submit_command_refuses_an_argument_that_is_not_utf8() -> None:
    # What Python makes of a shell argument holding the byte 0xff (surrogateescape).
    spec = b"# A \xff".decode("utf-8", "surrogateescape")
    before = counts()

    code, out, err = run_submit(
        "submit", f"--spec={spec}", f"--idempotency-key={uuid.uuid4()}", "--", "acme/widgets"
    )

    assert code == 2 and out == ""
    error = json.loads(err)
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"]["spec"] == NOT_UNICODE
    assert counts() == before
