"""POST /webhooks/github (API.md "GitHub webhook"): signed with the shared secret, recorded by
delivery id, applied once. A submitted review of a pull request a work item opened becomes a
PRReview on that item; anything else is recorded and ignored. Bad input changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid
from typing import Any
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.test import Client

from orchestration.models import WorkItemEvent, WorkItemStatus
from orchestration.services.sweeps import sweep_retention
from reviews.models import PRReview, WebhookDelivery
from tests.factories import WorkItemFactory

pytestmark = pytest.mark.django_db

SECRET = "s3cret-for-the-webhook"
URL = "/webhooks/github"


@pytest.fixture(autouse=True)
def _secret(settings: Any) -> None:
    settings.GITHUB_WEBHOOK_SECRET = SECRET


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def review_payload(
    *, repo: str = "acme/widgets", number: int = 7, state: str = "CHANGES_REQUESTED"
) -> dict[str, Any]:
    return {
        "action": "submitted",
        "repository": {"full_name": repo},
        "pull_request": {"number": number},
        "review": {
            "user": {"login": "octocat"},
            "state": state,
            "body": "Please add a test for the <script> edge case.",
            "html_url": f"https://github.com/{repo}/pull/{number}#pullrequestreview-1",
        },
    }


def deliver(
    client: Client,
    payload: dict[str, Any] | bytes,
    *,
    event: str = "pull_request_review",
    delivery: str | None = None,
    signature: str | None = None,
    content_type: str = "application/json",
) -> Any:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4())}
    headers["X-Hub-Signature-256"] = sign(body) if signature is None else signature
    return client.post(URL, data=body, content_type=content_type, headers=headers)


def nothing_stored() -> bool:
    return not (
        WebhookDelivery.objects.exists()
        or PRReview.objects.exists()
        or WorkItemEvent.objects.filter(kind="github_review").exists()
    )


def test_a_submitted_review_of_a_whim_pull_request_is_stored_on_its_item(
    client: Client, api_key: str
) -> None:
    item = WorkItemFactory.create(repo="acme/widgets", pr_number=7, status=WorkItemStatus.COMPLETED)

    resp = deliver(client, review_payload(), delivery="d-1")

    assert resp.status_code == 200, resp.content
    assert resp.json() == {"success": True, "delivery": "d-1", "outcome": "review_stored"}
    review = PRReview.objects.get()
    assert review.work_item_id == item.pk and review.pr_number == 7
    assert review.model_used == "github:octocat"
    # Stored in the original Whim's ReviewFindings shape (the console and API show that).
    url = "https://github.com/acme/widgets/pull/7#pullrequestreview-1"
    assert review.findings == {
        "specAlignment": {"score": "partial", "summary": "", "gaps": [], "extras": []},
        "codeQuality": {
            "score": "needs-work",
            "summary": f"GitHub review by octocat: changes_requested ({url})",
            "concerns": [],
        },
        "overallSummary": "Please add a test for the <script> edge case.",
    }
    event = WorkItemEvent.objects.get(work_item=item, kind="github_review")
    assert event.actor == "github:octocat"
    assert event.data == {"delivery": "d-1", "requestId": resp["X-Request-ID"]}
    shown = client.get("/api/reviews/pr/7", headers={"X-API-Key": api_key}).json()
    assert shown["modelUsed"] == "github:octocat"
    assert shown["findings"] == review.findings


def test_the_review_reaches_the_item_page_escaped(admin_client: Client) -> None:
    item = WorkItemFactory.create(repo="acme/widgets", pr_number=7, status="completed")
    assert deliver(admin_client, review_payload()).status_code == 200

    page = admin_client.get(f"/work/{item.pk}/").content.decode()

    assert "github:octocat" in page
    assert "&lt;script&gt; edge case" in page and "<script> edge case" not in page


def test_a_redelivery_is_a_no_op_that_answers_200(client: Client) -> None:
    WorkItemFactory.create(repo="acme/widgets", pr_number=7, status="completed")
    assert deliver(client, review_payload(), delivery="same").status_code == 200

    again = deliver(client, review_payload(), delivery="same")

    assert again.status_code == 200
    assert again.json() == {"success": True, "delivery": "same", "outcome": "duplicate"}
    assert PRReview.objects.count() == 1 and WebhookDelivery.objects.count() == 1
    assert WorkItemEvent.objects.filter(kind="github_review").count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_same_delivery_twice_at_once_is_applied_once() -> None:
    WorkItemFactory.create(repo="acme/widgets", pr_number=7, status="completed")
    body = json.dumps(review_payload()).encode()
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def post() -> None:
        try:
            barrier.wait()
            resp = deliver(Client(), body, delivery="raced")
            statuses.append(resp.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert statuses == [200] * 8
    assert PRReview.objects.count() == 1 and WebhookDelivery.objects.count() == 1
    assert WorkItemEvent.objects.filter(kind="github_review").count() == 1


@pytest.mark.parametrize(
    "signature",
    [
        "",  # missing
        "sha256=" + "0" * 64,  # wrong
        "sha1=abc",  # the old header's scheme
        None,  # signed with another secret (below)
    ],
)
def test_a_bad_or_missing_signature_is_401_and_stores_nothing(
    client: Client, signature: str | None
) -> None:
    WorkItemFactory.create(repo="acme/widgets", pr_number=7, status="completed")
    body = json.dumps(review_payload()).encode()
    sig = sign(body, "another-secret") if signature is None else signature

    resp = deliver(client, body, signature=sig)

    assert resp.status_code == 401
    assert resp.json()["code"] == "UNAUTHORIZED"
    assert SECRET not in resp.content.decode()
    assert nothing_stored()


def test_a_body_changed_after_signing_is_refused(client: Client) -> None:
    body = json.dumps(review_payload()).encode()
    tampered = body.replace(b"octocat", b"mallory")

    resp = deliver(client, tampered, signature=sign(body))

    assert resp.status_code == 401 and nothing_stored()


def test_without_a_configured_secret_every_delivery_is_refused(
    client: Client, settings: Any
) -> None:
    settings.GITHUB_WEBHOOK_SECRET = ""
    body = json.dumps(review_payload()).encode()

    resp = deliver(client, body, signature=sign(body, ""))

    assert resp.status_code == 401
    assert "GITHUB_WEBHOOK_SECRET" in resp.json()["error"]
    assert nothing_stored()


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda p: p["repository"].update(full_name="not a repo"), "repo"),
        (lambda p: p["pull_request"].update(number=7.5), "prNumber"),
        (lambda p: p["pull_request"].update(number=0), "prNumber"),
        (lambda p: p["pull_request"].update(number=2**40), "prNumber"),
        (lambda p: p.pop("review"), "state"),
        (lambda p: p["review"].update(state=["APPROVED"]), "state"),
        (lambda p: p["review"].update(body="x" * 65_537), "body"),
        (lambda p: p["review"].update(body="nul \x00 here"), "body"),
        (lambda p: p["review"].update(html_url="javascript:alert(1)"), "url"),
    ],
)
def test_a_malformed_review_is_a_400_naming_the_field_and_stores_nothing(
    client: Client, mutate: Any, field: str
) -> None:
    WorkItemFactory.create(repo="acme/widgets", pr_number=7, status="completed")
    payload = review_payload()
    mutate(payload)

    resp = deliver(client, payload)

    assert resp.status_code == 400, resp.content
    body = resp.json()
    assert body["code"] == "VALIDATION_ERROR" and field in body["details"]
    assert nothing_stored()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "VALIDATION_ERROR"),
        (b"[1, 2]", "VALIDATION_ERROR"),
        (b'{"action": NaN}', "VALIDATION_ERROR"),
        (b'{"a": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", "VALIDATION_ERROR"),
    ],
)
def test_a_signed_body_that_is_not_a_json_object_is_a_400(
    client: Client, raw: bytes, code: str
) -> None:
    resp = deliver(client, raw)

    assert resp.status_code == 400 and resp.json()["code"] == code
    assert nothing_stored()


@pytest.mark.parametrize(
    ("event", "delivery", "field"),
    [("", "d-1", "event"), ("Pull Request", "d-1", "event"), ("ping", "../etc", "delivery")],
)
def test_bad_delivery_headers_are_a_400(
    client: Client, event: str, delivery: str, field: str
) -> None:
    resp = deliver(client, {"zen": "hi"}, event=event, delivery=delivery)

    assert resp.status_code == 400
    assert field in resp.json()["details"]
    assert nothing_stored()


def test_a_missing_delivery_id_is_a_400(client: Client) -> None:
    body = b'{"zen": "hi"}'
    resp = client.post(
        URL,
        data=body,
        content_type="application/json",
        headers={"X-GitHub-Event": "ping", "X-Hub-Signature-256": sign(body)},
    )

    assert resp.status_code == 400 and resp.json()["details"]["delivery"] == "is required"
    assert nothing_stored()


def test_a_ping_and_other_events_are_recorded_and_ignored(client: Client) -> None:
    ping = deliver(client, {"zen": "Keep it logically awesome."}, event="ping", delivery="p-1")
    push = deliver(client, {"ref": "refs/heads/main"}, event="push", delivery="p-2")
    edited = deliver(client, {**review_payload(), "action": "edited"}, delivery="p-3")

    for resp in (ping, push, edited):
        assert resp.status_code == 200
        assert resp.json()["outcome"] == "ignored"
    assert ping.json()["note"] == "Whim does not act on ping deliveries"
    assert sorted(WebhookDelivery.objects.values_list("event", "action")) == [
        ("ping", ""),
        ("pull_request_review", "edited"),
        ("push", ""),
    ]
    assert not PRReview.objects.exists()


def test_a_review_of_a_pull_request_whim_did_not_open_is_recorded_and_ignored(
    client: Client,
) -> None:
    WorkItemFactory.create(repo="acme/widgets", pr_number=8, status="completed")

    resp = deliver(client, review_payload(number=7))

    assert resp.status_code == 200
    assert resp.json()["outcome"] == "ignored"
    assert resp.json()["note"] == "no work item opened this pull request"
    delivery = WebhookDelivery.objects.get()
    assert (delivery.repo, delivery.pr_number) == ("acme/widgets", 7)
    assert not PRReview.objects.exists()


def test_a_long_review_a_deleted_author_and_a_nul_in_an_unread_field_are_all_stored(
    client: Client,
) -> None:
    item = WorkItemFactory.create(repo="acme/widgets", pr_number=7, status="completed")
    payload = review_payload()
    payload["review"].update(user=None, body="y" * 65_536)
    payload["pull_request"]["body"] = "a PR description with a \x00 in it"

    resp = deliver(client, payload)

    assert resp.status_code == 200, resp.content
    review = PRReview.objects.get(work_item=item)
    assert review.model_used == "github:ghost"
    assert len(review.findings["overallSummary"]) == 65_536


def test_a_review_lands_on_the_item_that_opened_the_pr_not_its_verification(
    client: Client,
) -> None:
    opener = WorkItemFactory.create(repo="acme/widgets", pr_number=7, status="completed")
    WorkItemFactory.create(
        repo="acme/widgets",
        pr_number=7,
        status="completed",
        type="verification",
        parent_work_item=opener,
    )

    assert deliver(client, review_payload()).status_code == 200

    assert PRReview.objects.get().work_item_id == opener.pk


def test_an_action_with_a_nul_is_a_400(client: Client) -> None:
    resp = deliver(client, {"action": "sub\x00mitted"}, event="ping")

    assert resp.status_code == 400 and "action" in resp.json()["details"]
    assert nothing_stored()


def test_a_form_with_too_many_fields_is_a_400_not_a_crash(client: Client) -> None:
    body = urlencode([(f"f{n}", "x") for n in range(1500)]).encode()

    resp = deliver(client, body, event="ping", content_type="application/x-www-form-urlencoded")

    assert resp.status_code == 400 and resp.json()["code"] == "VALIDATION_ERROR"
    assert nothing_stored()


def test_a_form_encoded_delivery_is_read_from_its_payload_field(client: Client) -> None:
    item = WorkItemFactory.create(repo="acme/widgets", pr_number=7, status="completed")
    body = urlencode({"payload": json.dumps(review_payload(state="APPROVED"))}).encode()

    resp = deliver(client, body, content_type="application/x-www-form-urlencoded")

    assert resp.status_code == 200, resp.content
    assert PRReview.objects.get().work_item_id == item.pk
    assert PRReview.objects.get().findings["codeQuality"]["score"] == "good"


def test_only_post_is_allowed(client: Client) -> None:
    resp = client.get(URL)

    assert resp.status_code == 405 and resp.json()["code"] == "METHOD_NOT_ALLOWED"
    assert resp["Allow"] == "POST"


def test_a_body_over_the_limit_is_413(client: Client, settings: Any) -> None:
    settings.MAX_REQUEST_BYTES = settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    body = json.dumps({"zen": "x" * 2048}).encode()

    resp = deliver(client, body, event="ping")

    assert resp.status_code == 413 and resp.json()["code"] == "PAYLOAD_TOO_LARGE"
    assert nothing_stored()


def test_other_webhook_paths_are_404_in_the_api_shape(client: Client) -> None:
    resp = client.post("/webhooks/gitlab", data=b"{}", content_type="application/json")

    assert resp.status_code == 404 and resp.json()["code"] == "NOT_FOUND"


def test_retention_purges_old_deliveries_only(settings: Any) -> None:
    settings.RETENTION_DAYS = 30
    old = WebhookDelivery.objects.create(delivery_id="old", event="ping", outcome="ignored")
    WebhookDelivery.objects.filter(pk=old.pk).update(
        received_at=old.received_at.replace(year=old.received_at.year - 1)
    )
    WebhookDelivery.objects.create(delivery_id="new", event="ping", outcome="ignored")

    counts = sweep_retention()

    assert counts["deliveries"] == 1
    assert list(WebhookDelivery.objects.values_list("delivery_id", flat=True)) == ["new"]
