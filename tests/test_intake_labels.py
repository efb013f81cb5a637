"""The label flow on an intake issue, delivered through the outbox to the fake GitHub: taken →
processing; completed → done + one comment linking the pull request; failed → one comment with
the error (no secrets) and processing removed; a comment whose answer was lost is not posted
twice."""

from __future__ import annotations

from typing import Any

import pytest

from intake.issues import issues_poll
from intake.labels import safe_reason
from intake.models import GitHubAction, GitHubActionStatus
from orchestration.models import WorkItem, WorkItemStatus
from orchestration.services.commits import CommitVerdict
from orchestration.services.dispatch import dispatch_claim_one
from orchestration.services.work_items import work_item_cancel, work_item_generate_spec
from orchestration.services.workers.completion import Completion, worker_complete
from orchestration.services.workers.endings import worker_fail
from tests.factories import WorkItemFactory
from tests.fakes.github import FakeGitHub
from tests.intake_support import REPO, deliver_outbox

pytestmark = [pytest.mark.django_db]
PR_URL = f"https://github.example/{REPO}/pull/40"


def taken(github: FakeGitHub, number: int = 5) -> str:
    """An allowed, labelled issue polled into an item, its label flow delivered, the item
    claimed (spec by the template generator) so an attempt can end it."""
    github.add_issue(REPO, number, title="Fix the footer", labels=["whim"], user="octocat")
    assert issues_poll(repo=REPO)["created"] == 1
    assert set(deliver_outbox()) == {"done"}
    item = WorkItem.objects.get()
    assert work_item_generate_spec(work_item_id=item.pk)
    worker_id = dispatch_claim_one(use_gate=False)
    assert worker_id is not None
    return str(worker_id)


def bodies(github: FakeGitHub, number: int = 5) -> list[str]:
    return [c["body"] for c in github.comments[REPO][number]]


def test_taking_an_issue_swaps_its_label_for_processing(github: FakeGitHub) -> None:
    taken(github)

    assert github.labels[REPO][5] == ["whim:processing"]


def test_completion_labels_the_issue_done_and_links_the_pull_request_once(
    github: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker_id = taken(github)
    monkeypatch.setattr(
        "orchestration.services.workers.completion.commit_verify",
        lambda **_: CommitVerdict(ok=True, note="test"),
    )

    assert worker_complete(worker_id=worker_id, result=Completion(pr_url=PR_URL, pr_number=40))
    deliver_outbox()

    assert github.labels[REPO][5] == ["whim:pr-ready"]
    [comment] = bodies(github)
    assert PR_URL in comment and "<!-- whim:" in comment
    assert not GitHubAction.objects.exclude(status=GitHubActionStatus.DONE).exists()


def test_failure_comments_the_error_without_secrets_and_removes_processing(
    github: FakeGitHub, settings: Any
) -> None:
    settings.MAX_RETRIES = 0
    worker_id = taken(github)

    worker_fail(
        worker_id=worker_id,
        error="the agent gave up; token ghs_abcdefghijklmnop0123 leaked\nsecond line",
    )
    assert WorkItem.objects.get().status == WorkItemStatus.FAILED
    deliver_outbox()

    assert github.labels[REPO][5] == []
    [comment] = bodies(github)
    assert "the agent gave up" in comment and "AGENT_ERROR" in comment
    assert "ghs_abcdefghijklmnop0123" not in comment and "second line" not in comment
    assert "`whim` label again" in comment


def test_a_comment_whose_answer_was_lost_is_posted_once(github: FakeGitHub, settings: Any) -> None:
    settings.MAX_RETRIES = 0
    worker_id = taken(github)
    github.fault("POST", rf"/repos/{REPO}/issues/5/comments$", "timeout_after_write")
    worker_fail(worker_id=worker_id, error="tests failed")

    outcomes = deliver_outbox()

    assert "retry" in outcomes
    assert len(bodies(github)) == 1
    comment = GitHubAction.objects.get(kind="comment")
    assert comment.status == GitHubActionStatus.DONE and comment.result["found"] is True
    assert comment.attempts == 2


def test_items_that_are_not_from_an_issue_ask_nothing_of_github(github: FakeGitHub) -> None:
    item = WorkItemFactory.create(repo=REPO, source="api", status=WorkItemStatus.QUEUED)
    work_item_cancel(work_item_id=item.pk)

    assert not GitHubAction.objects.exists()


def test_a_late_processing_label_is_not_put_back_on_a_finished_item(github: FakeGitHub) -> None:
    github.add_issue(REPO, 5, labels=["whim"], user="octocat")
    issues_poll(repo=REPO)
    item = WorkItem.objects.get()
    work_item_cancel(work_item_id=item.pk, reason="issue closed")
    deliver_outbox()

    assert github.labels[REPO][5] == []
    added = GitHubAction.objects.get(kind="labels_add")
    assert added.result == {"skipped": "the work item is cancelled"}


@pytest.mark.parametrize(
    "secret",
    ["ghp_0123456789abcdefghij", "github_pat_11ABCDEFG0123456789", "sk-ant-api03-abcdefghijk"],
)
def test_the_reason_shown_on_an_issue_masks_credentials(secret: str) -> None:
    shown = safe_reason(f"push failed with {secret} in the remote URL")

    assert secret not in shown and "***" in shown
