"""The review bot's intake (README "Review bot"): a ``pull_request`` delivery on a watched
repository makes one review job per (repository, pull request, head sha); a redelivery or a
poll of the same head makes nothing; a new head supersedes the older job; drafts wait; a closed
pull request cancels its jobs; a payload of the wrong shape is a 400 with nothing written. And
the claim runs at most REVIEW_CONCURRENCY_PER_REPO reviews per repository at a time.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from django.test import Client

from intake.models import Repository
from intake.pull_forms import PullForm, pull_fields
from intake.pulls import review_job_ensure
from orchestration.models import WorkItem, WorkItemStatus, WorkItemType
from orchestration.pages.explain import why_not_running
from orchestration.services.dispatch import dispatch_claim_one
from reviews.models import WebhookDelivery
from tests.factories import WorkItemFactory
from tests.helpers import assert_error
from tests.test_github_webhook import SECRET, deliver

pytestmark = pytest.mark.django_db

REPO = "acme/widgets"
SHA1 = "1" * 40
SHA2 = "2" * 40


@pytest.fixture(autouse=True)
def _watched(settings: Any) -> None:
    settings.GITHUB_WEBHOOK_SECRET = SECRET
    settings.INTAKE_REPOS = [REPO]
    settings.REVIEW_BOT = True
    settings.REVIEW_DRAFTS = False
    settings.REVIEW_CONCURRENCY_PER_REPO = 1


def pull(*, number: int = 7, sha: str = SHA1, draft: bool = False) -> dict[str, Any]:
    return {
        "number": number,
        "title": "Add the frobnicator",
        "body": "It frobnicates.",
        "draft": draft,
        "user": {"login": "octocat"},
        "head": {"ref": "feature/frob", "sha": sha, "repo": {"full_name": REPO}},
        "base": {"ref": "main", "sha": "b" * 40},
    }


def event(action: str = "opened", **kwargs: Any) -> dict[str, Any]:
    return {
        "action": action,
        "number": kwargs.get("number", 7),
        "repository": {"full_name": REPO},
        "pull_request": pull(**kwargs),
    }


def reviews() -> list[WorkItem]:
    return list(WorkItem.objects.filter(type=WorkItemType.REVIEW).order_by("created_at"))


def test_an_opened_pull_request_becomes_one_queued_review_job(client: Client) -> None:
    resp = deliver(client, event(), event="pull_request", delivery="d-1")

    assert resp.status_code == 200, resp.content
    assert resp.json()["outcome"] == "review_queued"
    (item,) = reviews()
    assert item.status == WorkItemStatus.QUEUED
    assert (item.repo, item.branch, item.pr_number, item.commit_sha) == (
        REPO,
        "feature/frob",
        7,
        SHA1,
    )
    assert (item.source, item.source_ref) == ("github", f"pr:7@{SHA1}")
    assert item.idempotency_key == f"github-review:{REPO}#7@{SHA1}"
    assert item.metadata == {
        "headSha": SHA1,
        "baseRef": "main",
        "baseSha": "b" * 40,
        "headRepo": REPO,
        "author": "octocat",
    }
    assert item.spec.startswith("# Add the frobnicator\n\nIt frobnicates.")
    delivery = WebhookDelivery.objects.get()
    assert (delivery.outcome, delivery.repo, delivery.pr_number) == ("review_queued", REPO, 7)


def test_the_same_head_redelivered_or_polled_makes_nothing_new(client: Client) -> None:
    deliver(client, event(), event="pull_request", delivery="d-1")
    again = deliver(client, event(), event="pull_request", delivery="d-1")
    reopened = deliver(client, event("synchronize"), event="pull_request", delivery="d-2")
    polled = review_job_ensure(PullForm.from_json(pull_fields(pull(), repo=REPO)).validated())

    assert again.json()["outcome"] == "duplicate"
    assert reopened.json()["outcome"] == "item_exists"
    assert polled[0] == "item_exists"
    assert len(reviews()) == 1


def test_a_new_head_supersedes_the_older_unfinished_job(client: Client) -> None:
    deliver(client, event(), event="pull_request")
    old = reviews()[0]
    WorkItem.objects.filter(pk=old.pk).update(status=WorkItemStatus.IN_PROGRESS)

    resp = deliver(client, event("synchronize", sha=SHA2), event="pull_request")

    assert resp.json()["outcome"] == "superseded"
    old.refresh_from_db()
    assert old.status == WorkItemStatus.CANCELLED
    assert old.error == f"superseded by {SHA2}"
    new = reviews()[1]
    assert (new.status, new.commit_sha) == (WorkItemStatus.QUEUED, SHA2)


def test_a_late_delivery_of_a_replaced_head_is_not_reviewed(client: Client) -> None:
    newer = event("synchronize", sha=SHA2)
    newer["before"] = SHA1
    deliver(client, newer, event="pull_request")

    late = deliver(client, event("opened", sha=SHA1), event="pull_request")

    assert late.json()["outcome"] == "ignored"
    assert [r.commit_sha for r in reviews()] == [SHA2]
    assert reviews()[0].status == WorkItemStatus.QUEUED


def test_drafts_wait_for_ready_for_review_unless_configured(client: Client, settings: Any) -> None:
    draft = deliver(client, event(draft=True), event="pull_request")
    assert draft.json()["outcome"] == "ignored" and not reviews()

    ready = deliver(client, event("ready_for_review"), event="pull_request")
    assert ready.json()["outcome"] == "review_queued" and len(reviews()) == 1

    settings.REVIEW_DRAFTS = True
    other = deliver(client, event(number=8, draft=True), event="pull_request")
    assert other.json()["outcome"] == "review_queued" and len(reviews()) == 2


def test_a_closed_pull_request_cancels_its_unfinished_jobs(client: Client) -> None:
    deliver(client, event(), event="pull_request")

    resp = deliver(client, event("closed"), event="pull_request")

    assert resp.json()["outcome"] == "item_cancelled"
    assert reviews()[0].status == WorkItemStatus.CANCELLED
    reopened = deliver(client, event("reopened"), event="pull_request")
    assert reopened.json()["outcome"] == "review_queued"
    assert [r.status for r in reviews()] == [WorkItemStatus.QUEUED]


def test_unwatched_repositories_and_the_bot_switched_off_are_ignored(
    client: Client, settings: Any
) -> None:
    Repository.objects.create(name="acme/private", review_enabled=False)
    other = event()
    other["repository"]["full_name"] = "acme/private"
    off = deliver(client, other, event="pull_request")
    stranger = event()
    stranger["repository"]["full_name"] = "someone/else"
    unknown = deliver(client, stranger, event="pull_request")
    settings.REVIEW_BOT = False
    bot_off = deliver(client, event(), event="pull_request")

    assert [r.json()["outcome"] for r in (off, unknown, bot_off)] == ["ignored"] * 3
    assert not reviews()


@pytest.mark.parametrize(
    ("spoil", "field"),
    [
        (lambda p: p["pull_request"]["head"].update(sha="not-a-sha"), "headSha"),
        (lambda p: p["pull_request"]["head"].update(sha=12), "headSha"),
        (lambda p: p["pull_request"].update(number="7"), "number"),
        (lambda p: p["pull_request"].update(draft="no"), "draft"),
        (lambda p: p["pull_request"]["head"].update(ref="bad..ref"), "headRef"),
        (lambda p: p["pull_request"].pop("base"), "baseRef"),
        (lambda p: p["repository"].update(full_name=["x"]), "repo"),
        (lambda p: p["pull_request"].update(title=["x"]), "title"),
    ],
)
def test_a_payload_of_the_wrong_shape_is_refused_with_nothing_written(
    client: Client, spoil: Any, field: str
) -> None:
    payload = copy.deepcopy(event())
    spoil(payload)

    resp = deliver(client, payload, event="pull_request")

    assert_error(resp, 400, "VALIDATION_ERROR", details=[field])
    assert not WebhookDelivery.objects.exists() and not reviews()


def test_a_nul_in_the_pull_request_body_is_dropped_not_refused(client: Client) -> None:
    payload = event()
    payload["pull_request"]["body"] = "nul \x00 here"

    resp = deliver(client, payload, event="pull_request")

    assert resp.status_code == 200
    assert "nul  here" in reviews()[0].spec


def test_one_review_per_repository_runs_at_a_time() -> None:
    first = WorkItemFactory.create(repo=REPO, type=WorkItemType.REVIEW, pr_number=1)
    second = WorkItemFactory.create(repo=REPO, type=WorkItemType.REVIEW, pr_number=2)
    elsewhere = WorkItemFactory.create(repo="acme/other", type=WorkItemType.REVIEW, pr_number=1)
    execution = WorkItemFactory.create(repo=REPO)

    claimed = {WorkItem.objects.get(worker_id=w).pk for w in _claim_all()}

    assert claimed == {first.pk, elsewhere.pk, execution.pk}
    second.refresh_from_db()
    assert second.status == WorkItemStatus.QUEUED
    assert any("REVIEW_CONCURRENCY_PER_REPO" in r for r in why_not_running(second))


def test_the_review_limit_per_repository_is_configurable(settings: Any) -> None:
    settings.REVIEW_CONCURRENCY_PER_REPO = 2
    for n in range(3):
        WorkItemFactory.create(repo=REPO, type=WorkItemType.REVIEW, pr_number=n + 1)

    assert len(_claim_all()) == 2

    settings.REVIEW_CONCURRENCY_PER_REPO = 0  # no limit
    assert len(_claim_all()) == 1


def _claim_all() -> list[Any]:
    claimed = []
    while (worker := dispatch_claim_one(use_gate=False)) is not None:
        claimed.append(worker)
    return claimed
