"""What ends an issue's item, and what takes it again: a label left on the issue does not undo
an operator's cancel nor run a failing item again at every poll (only a labelling after the
end does); a reopened issue runs again only the item its closing cancelled; and a ``closed``
delivery the webhook missed is caught by the poll."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.test import Client

from intake.issues import CLOSED_CHECK_MAX, issues_poll
from intake.models import GitHubAction, GitHubActionStatus, Repository
from orchestration.clock import db_now
from orchestration.models import WorkItem, WorkItemStatus
from orchestration.services.work_items import work_item_cancel
from tests.factories import WorkItemFactory
from tests.fakes.github import FakeGitHub
from tests.intake_support import REPO, deliver, deliver_outbox, issue_event

pytestmark = [pytest.mark.django_db]
ISSUE_GET = re.compile(rf"^/repos/{REPO}/issues/\d+$")


def ended_with_the_label_left_on(github: FakeGitHub, how: str) -> WorkItem:
    """Issue #5, labelled an hour ago, polled into an item; the label's removal never reached
    GitHub (its outbox rows failed); then the item ended ``how``."""
    github.add_issue(REPO, 5, labels=["whim"], user="octocat")
    github.issue_events[REPO][5][-1]["created_at"] = _github_time(db_now() - dt.timedelta(hours=1))
    assert issues_poll(repo=REPO)["created"] == 1
    item = WorkItem.objects.get()
    if how == "cancelled":
        work_item_cancel(work_item_id=item.pk, reason="not wanted after all")
    else:
        WorkItem.objects.filter(pk=item.pk).update(
            status=WorkItemStatus.FAILED, completed_at=db_now(), error="tests keep failing"
        )
    GitHubAction.objects.update(status=GitHubActionStatus.FAILED)
    assert github.labels[REPO][5] == ["whim"]
    return item


@pytest.mark.parametrize("how", ["cancelled", "failed"])
def test_a_label_left_on_the_issue_does_not_take_an_ended_item_again(
    github: FakeGitHub, how: str
) -> None:
    item = ended_with_the_label_left_on(github, how)

    counts = []
    for _ in range(3):
        Repository.objects.update(issues_etag="")  # the full list, every poll
        counts.append(issues_poll(repo=REPO))

    assert [c["exists"] for c in counts] == [1, 1, 1], counts
    assert not any(c["requeued"] for c in counts)
    item.refresh_from_db()
    assert item.status == how
    assert not GitHubAction.objects.filter(status=GitHubActionStatus.PENDING).exists()


def test_labelling_the_issue_after_the_end_takes_it_again(github: FakeGitHub) -> None:
    item = ended_with_the_label_left_on(github, "failed")
    github.labels[REPO][5].remove("whim")
    github.label_add(REPO, 5, "whim", actor="maintainer")

    counts = issues_poll(repo=REPO)

    assert counts["requeued"] == 1, counts
    item.refresh_from_db()
    assert item.status == WorkItemStatus.GENERATING


def test_reopening_does_not_undo_an_operators_cancel(client: Client, github: FakeGitHub) -> None:
    assert deliver(client, issue_event(number=12)).json()["outcome"] == "item_created"
    item = WorkItem.objects.get()
    work_item_cancel(work_item_id=item.pk, reason="not wanted after all")

    reopened = deliver(client, issue_event("reopened", label=None, number=12))
    opened = deliver(client, issue_event("opened", label=None, number=12))

    assert reopened.json()["outcome"] == "item_exists"
    assert opened.json()["outcome"] == "item_exists"
    item.refresh_from_db()
    assert item.status == WorkItemStatus.CANCELLED


def test_reopening_runs_the_item_its_closing_cancelled(client: Client, github: FakeGitHub) -> None:
    deliver(client, issue_event(number=12))
    closed = deliver(client, issue_event("closed", label=None, number=12, state="closed"))
    assert closed.json()["outcome"] == "item_cancelled"

    reopened = deliver(client, issue_event("reopened", label=None, number=12))

    assert reopened.json()["outcome"] == "item_requeued"
    assert WorkItem.objects.get().status == WorkItemStatus.GENERATING


def test_the_poll_cancels_the_item_of_an_issue_closed_while_the_webhook_was_away(
    github: FakeGitHub,
) -> None:
    github.add_issue(REPO, 5, labels=["whim"], user="octocat")
    issues_poll(repo=REPO)
    deliver_outbox()  # whim → whim:processing: the issue is no longer in the labelled list
    github.issue_close(REPO, 5, by="maintainer")

    counts = issues_poll(repo=REPO)

    assert counts["closed"] == 1, counts
    item = WorkItem.objects.get()
    assert item.status == WorkItemStatus.CANCELLED and item.error == "issue closed"
    assert item.events.filter(kind="cancelled", actor="github:maintainer").exists()


def test_a_close_the_webhook_missed_is_noticed_while_the_labelled_list_is_unchanged(
    github: FakeGitHub,
) -> None:
    github.add_issue(REPO, 5, labels=["whim"], user="octocat")
    issues_poll(repo=REPO)
    deliver_outbox()
    issues_poll(repo=REPO)  # settled: the ETag is kept
    assert Repository.objects.get().issues_etag
    github.issue_close(REPO, 5, by="maintainer")

    counts = issues_poll(repo=REPO)

    assert counts == {"not_modified": 1, "closed": 1}
    assert WorkItem.objects.get().status == WorkItemStatus.CANCELLED


def test_the_closed_check_is_bounded_and_a_github_error_is_not_now(github: FakeGitHub) -> None:
    for number in range(1, CLOSED_CHECK_MAX + 6):  # issues GitHub does not know (404)
        WorkItemFactory.create(
            repo=REPO,
            source="github",
            source_ref=f"issue:{number}",
            idempotency_key=f"github-issue:{REPO}#{number}",
        )

    counts = issues_poll(repo=REPO)

    asked = [r for r in github.requests if r.method == "GET" and ISSUE_GET.match(r.path)]
    assert len(asked) == CLOSED_CHECK_MAX
    assert counts["closed"] == 0 and "error" not in counts
    assert not WorkItem.objects.exclude(status=WorkItemStatus.QUEUED).exists()


def test_an_issue_github_could_not_show_is_asked_about_at_the_next_full_list(
    github: FakeGitHub,
) -> None:
    github.add_issue(REPO, 5, labels=["whim"], user="octocat")
    issues_poll(repo=REPO)
    deliver_outbox()
    github.issue_close(REPO, 5)
    github.fault("GET", r"/issues/5$", 502)

    first = issues_poll(repo=REPO)
    assert WorkItem.objects.get().status == WorkItemStatus.GENERATING
    Repository.objects.update(issues_etag="")  # the list changed: the next poll is a full one
    second = issues_poll(repo=REPO)

    assert first["closed"] == 0 and "error" not in first
    assert second["closed"] == 1
    assert WorkItem.objects.get().status == WorkItemStatus.CANCELLED


def _github_time(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
