"""The intake poll (``issues_poll``): conditional requests, GitHub's rate limit honoured and
shown, and nothing taken twice however often it runs."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from django.test import Client

from intake.issues import issues_poll
from intake.models import Repository
from orchestration.models import WorkItem, WorkItemStatus
from orchestration.services.work_items import work_item_cancel
from tests.fakes.github import FakeGitHub
from tests.intake_support import REPO, deliver_outbox

pytestmark = [pytest.mark.django_db]


def listed(github: FakeGitHub) -> list[Any]:
    return [r for r in github.requests if r.method == "GET" and r.path == f"/repos/{REPO}/issues"]


def test_a_labelled_issue_becomes_an_item_and_an_unchanged_list_is_a_304(
    github: FakeGitHub,
) -> None:
    github.add_issue(REPO, 5, title="Fix the footer", labels=["whim"], user="octocat")

    first = issues_poll(repo=REPO)
    repository = Repository.objects.get(name=REPO)  # INTAKE_REPOS got its row on first use
    assert first["created"] == 1 and WorkItem.objects.get().source_ref == "issue:5"
    assert not repository.issues_etag  # the label is about to come off: the list will change
    deliver_outbox()
    settled = issues_poll(repo=REPO)
    repository.refresh_from_db()
    unchanged = issues_poll(repo=REPO)

    assert settled.get("created", 0) == 0 and "not_modified" not in settled
    assert repository.issues_etag and repository.polled_at is not None
    assert unchanged == {"not_modified": 1, "closed": 0}
    assert listed(github)[-1].headers["if-none-match"] == repository.issues_etag
    assert listed(github)[-1].query["labels"] == ["whim"]
    assert WorkItem.objects.count() == 1


def test_pull_requests_and_issues_of_strangers_are_not_taken(github: FakeGitHub) -> None:
    github.add_issue(REPO, 5, labels=["whim"], user="stranger")
    github.issues[REPO][5]["user"]["login"] = "stranger"

    counts = issues_poll(repo=REPO)

    assert counts["ignored"] == 1 and not WorkItem.objects.exists()


def test_the_labeller_must_be_allowed_too(github: FakeGitHub) -> None:
    github.add_issue(REPO, 5, labels=[], user="octocat")
    github.label_add(REPO, 5, "whim", actor="stranger")

    assert issues_poll(repo=REPO)["ignored"] == 1
    assert not WorkItem.objects.exists()


def test_rate_limited_it_backs_off_until_the_reset_then_catches_up_once(
    github: FakeGitHub,
) -> None:
    github.add_issue(REPO, 5, labels=["whim"], user="octocat")
    github.rate_limit_remaining = 0
    github.rate_limit_reset = time.time() + 2

    limited = issues_poll(repo=REPO)
    repository = Repository.objects.get(name=REPO)
    skipped = issues_poll(repo=REPO)

    assert limited["rate_limited"] == 1 and skipped == {"rate_limited": 1}
    assert repository.rate_limited_until is not None
    reset = dt.datetime.fromtimestamp(int(github.rate_limit_reset), tz=dt.UTC)
    assert abs((repository.rate_limited_until - reset).total_seconds()) < 2
    assert "rate limited" in repository.poll_note
    calls = len(listed(github))
    assert calls == 1  # the skipped poll asked GitHub nothing
    assert not WorkItem.objects.exists()

    time.sleep(max(0.0, github.rate_limit_reset - time.time()) + 1.1)
    caught_up = issues_poll(repo=REPO)
    again = issues_poll(repo=REPO)

    assert caught_up["created"] == 1
    assert again.get("created", 0) == 0
    assert WorkItem.objects.count() == 1
    repository.refresh_from_db()
    assert repository.rate_limited_until is None


def test_the_dashboard_says_when_github_holds_intake_back(
    github: FakeGitHub, superuser_client: Client
) -> None:
    github.rate_limit_remaining = 0
    github.rate_limit_reset = time.time() + 600
    issues_poll(repo=REPO)

    page = superuser_client.get("/").content.decode()

    assert "GitHub: rate limited" in page and REPO in page


def test_a_disabled_repository_is_not_polled(github: FakeGitHub) -> None:
    Repository.objects.create(name=REPO, intake_enabled=False)
    github.add_issue(REPO, 5, labels=["whim"])

    assert issues_poll(repo=REPO) == {"skipped": 1}
    assert not listed(github) and not WorkItem.objects.exists()


def test_an_issue_labelled_again_after_its_item_was_cancelled_is_requeued(
    github: FakeGitHub,
) -> None:
    github.add_issue(REPO, 5, labels=["whim"], user="octocat")
    issues_poll(repo=REPO)
    deliver_outbox()  # whim → whim:processing on the issue
    item = WorkItem.objects.get()
    work_item_cancel(work_item_id=item.pk)
    deliver_outbox()
    assert github.labels[REPO][5] == []

    github.label_add(REPO, 5, "whim", actor="maintainer")
    counts = issues_poll(repo=REPO)

    assert counts["requeued"] == 1
    item.refresh_from_db()
    # Back to waiting for its spec (it never had one): a spec-less change is never queued.
    assert item.status == WorkItemStatus.GENERATING and WorkItem.objects.count() == 1


def test_the_admin_lists_configured_repositories_with_their_rate_limit(
    github: FakeGitHub, superuser_client: Client
) -> None:
    page = superuser_client.get("/admin/intake/repository/")
    assert page.status_code == 200 and REPO in page.content.decode()  # before any poll

    github.rate_limit_remaining = 0
    github.rate_limit_reset = time.time() + 600
    issues_poll(repo=REPO)
    listed_page = superuser_client.get("/admin/intake/repository/").content.decode()

    assert "until " in listed_page and "rate limited by GitHub" in listed_page


def test_the_admin_refuses_a_bad_priority_and_bad_logins(superuser_client: Client) -> None:
    resp = superuser_client.post(
        "/admin/intake/repository/add/",
        {
            "name": "acme/other",
            "enabled": "on",
            "intake_enabled": "on",
            "label": "",
            "allowed_users": '["ok-user", "not a login"]',
            "priority": "urgent",
        },
    )

    assert resp.status_code == 200  # the form again, with its errors
    assert not Repository.objects.filter(name="acme/other").exists()
