"""``issues`` deliveries to POST /webhooks/github (signed, through the real view): a labelled
issue from an allowed person becomes exactly one work item; anyone else's, a closed issue, a
bad payload or a replayed delivery changes nothing it should not."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from intake.github import GitHubClient
from intake.issues import issues_poll
from intake.models import GitHubAction, Repository
from orchestration.models import WorkItem, WorkItemEvent, WorkItemStatus
from orchestration.services.work_items import work_item_cancel
from reviews.models import WebhookDelivery
from tests.fakes.github import FakeGitHub
from tests.helpers import assert_error
from tests.intake_support import REPO, deliver, issue_event

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("github")]


def test_a_labelled_issue_becomes_one_generating_item(client: Client) -> None:
    resp = deliver(client, issue_event("labeled", number=12), delivery="d-1")

    assert resp.status_code == 200, resp.content
    assert resp.json()["outcome"] == "item_created"
    item = WorkItem.objects.get()
    assert (item.repo, item.source, item.source_ref) == (REPO, "github", "issue:12")
    assert item.idempotency_key == f"github-issue:{REPO}#12"
    assert item.status == WorkItemStatus.GENERATING
    assert item.description == "# Add a dark mode\n\nThe settings page needs a dark theme.\n"
    assert item.branch == "whim/issue-12-add-a-dark-mode"
    assert item.priority == "medium"
    assert item.metadata == {
        "issue": 12,
        "issueUrl": f"https://github.example/{REPO}/issues/12",
        "author": "octocat",
    }
    # The label flow is asked for in the same transaction: whim off, processing on.
    asked = {
        (a.kind, str(a.payload.get("label") or a.payload.get("labels")))
        for a in GitHubAction.objects.filter(work_item=item)
    }
    assert asked == {("label_remove", "whim"), ("labels_add", "['whim:processing']")}


def test_the_same_issue_seen_by_webhook_then_poll_is_one_item(
    client: Client, github: FakeGitHub
) -> None:
    github.add_issue(REPO, 12, title="Add a dark mode", labels=["whim"], user="octocat")
    assert deliver(client, issue_event("labeled", number=12)).json()["outcome"] == "item_created"

    counts = issues_poll(repo=REPO)

    assert counts["taken"] == 1 and counts["created"] == 0, counts
    assert WorkItem.objects.count() == 1


def test_opened_with_the_label_and_then_labeled_is_one_item(client: Client) -> None:
    first = deliver(client, issue_event("opened", label=None, number=3))
    second = deliver(client, issue_event("labeled", number=3))

    assert first.json()["outcome"] == "item_created"
    assert second.json()["outcome"] == "item_exists"
    assert WorkItem.objects.count() == 1


def test_an_issue_by_someone_who_is_not_a_collaborator_is_ignored(client: Client) -> None:
    resp = deliver(client, issue_event(user="stranger", sender="octocat"))

    assert resp.json()["outcome"] == "ignored"
    assert "stranger" in resp.json()["note"]
    assert not WorkItem.objects.exists() and not GitHubAction.objects.exists()


def test_a_label_added_by_someone_not_allowed_is_ignored(client: Client, settings: Any) -> None:
    settings.INTAKE_ALLOWED_USERS = ["octocat"]

    resp = deliver(client, issue_event(user="octocat", sender="maintainer"))

    assert resp.json()["outcome"] == "ignored"
    assert "labeller maintainer" in resp.json()["note"]
    assert not WorkItem.objects.exists()


def test_another_label_or_an_unwatched_repository_is_ignored(client: Client) -> None:
    other_label = deliver(client, issue_event("labeled", label="bug"))
    unwatched = deliver(client, issue_event(repo="someone/else"))

    assert other_label.json()["outcome"] == "ignored"
    assert unwatched.json()["outcome"] == "ignored"
    assert not WorkItem.objects.exists()


def test_when_github_cannot_say_who_may_ask_it_is_not_now_and_the_poll_takes_it(
    client: Client, github: FakeGitHub
) -> None:
    github.add_issue(REPO, 12, labels=["whim"], user="octocat")
    github.fault("GET", r"/collaborators/", 502)

    resp = deliver(client, issue_event(number=12))

    assert resp.json()["outcome"] == "ignored" and "not now" in resp.json()["note"]
    assert not WorkItem.objects.exists()
    assert issues_poll(repo=REPO)["created"] == 1
    assert WorkItem.objects.get().source_ref == "issue:12"


def test_closing_the_issue_cancels_its_unfinished_item(client: Client) -> None:
    deliver(client, issue_event(number=12))

    resp = deliver(client, issue_event("closed", label=None, number=12, state="closed"))

    assert resp.json()["outcome"] == "item_cancelled"
    item = WorkItem.objects.get()
    assert item.status == WorkItemStatus.CANCELLED and item.error == "issue closed"
    again = deliver(client, issue_event("closed", label=None, number=12, state="closed"))
    assert again.json()["outcome"] == "ignored"


def test_labelling_a_cancelled_items_issue_again_requeues_it(client: Client) -> None:
    deliver(client, issue_event(number=12))
    item = WorkItem.objects.get()
    work_item_cancel(work_item_id=item.pk, reason="not now")

    resp = deliver(client, issue_event(number=12))

    assert resp.json()["outcome"] == "item_requeued"
    item.refresh_from_db()
    # Back to waiting for its spec (it never had one): a spec-less change is never queued.
    assert item.status == WorkItemStatus.GENERATING and WorkItem.objects.count() == 1
    assert WorkItemEvent.objects.filter(work_item=item, kind="requeued").count() == 1


def test_a_replayed_delivery_is_a_duplicate_that_changes_nothing(client: Client) -> None:
    assert deliver(client, issue_event(), delivery="same").json()["outcome"] == "item_created"

    again = deliver(client, issue_event(), delivery="same")

    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    assert WorkItem.objects.count() == 1 and WebhookDelivery.objects.count() == 1
    assert WorkItemEvent.objects.count() == 1


def test_github_is_asked_who_may_ask_outside_the_deliverys_transaction(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    depths: list[int] = []
    real = GitHubClient.is_collaborator

    def spy(self: GitHubClient, login: str) -> bool:
        depths.append(len(connection.atomic_blocks))
        return real(self, login)

    monkeypatch.setattr(GitHubClient, "is_collaborator", spy)
    outside = len(connection.atomic_blocks)  # the test's own transaction, if any

    resp = deliver(client, issue_event(number=12, user="octocat", sender="maintainer"))

    assert resp.json()["outcome"] == "item_created"
    assert depths == [outside, outside]  # author and labeller, neither inside the delivery's


def test_a_replayed_delivery_asks_github_nothing(client: Client, github: FakeGitHub) -> None:
    deliver(client, issue_event(number=12), delivery="same")
    asked = len(github.requests)

    again = deliver(client, issue_event(number=12), delivery="same")

    assert again.json()["outcome"] == "duplicate"
    assert len(github.requests) == asked


def test_a_rate_limit_met_by_the_webhook_is_stored_for_the_poll(
    client: Client, github: FakeGitHub
) -> None:
    github.rate_limit_remaining = 0
    github.rate_limit_reset = time.time() + 600

    resp = deliver(client, issue_event(number=12))

    assert resp.json()["outcome"] == "ignored" and "not now" in resp.json()["note"]
    assert Repository.objects.get(name=REPO).rate_limited_until is not None
    assert not WorkItem.objects.exists()


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("issue", "number"), "12", "number"),
        (("issue", "title"), ["a", "list"], "title"),
        (("issue", "body"), {"an": "object"}, "body"),
        (("issue", "labels"), {"name": "whim"}, "labels"),
        (("issue", "user", "login"), "bad login!", "author"),
        (("sender",), None, "sender"),
        (("repository", "full_name"), 42, "repo"),
    ],
)
def test_a_payload_of_the_wrong_shape_is_400_and_nothing_is_written(
    client: Client, path: tuple[str, ...], value: Any, field: str
) -> None:
    payload = issue_event()
    target = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value

    resp = deliver(client, payload)

    assert_error(resp, 400, "VALIDATION_ERROR")
    assert field in resp.json()["details"]
    assert not WebhookDelivery.objects.exists() and not WorkItem.objects.exists()
    assert not GitHubAction.objects.exists()


def test_a_nul_in_the_issue_text_is_dropped_not_refused(client: Client) -> None:
    resp = deliver(client, issue_event(title="Dark\x00 mode", body="body\x00text"))

    assert resp.json()["outcome"] == "item_created"
    assert WorkItem.objects.get().description == "# Dark mode\n\nbodytext\n"
