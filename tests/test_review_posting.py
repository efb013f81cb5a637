"""A review job's end, reported on GitHub through the outbox (README "Review bot"): the
completing transaction stores the PRReview and writes a ``review_post`` and a ``check_run``
row; a job that failed for good writes a neutral check run; the handlers post each once, even
when GitHub stored the first post and then timed out; the poll catches what webhooks missed;
REVIEW_FIX_ROUNDS queues bounded fix-ups on Whim's own pull requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from intake.models import GitHubAction, Repository
from intake.outbox import github_action_deliver
from intake.pull_forms import PullForm, pull_fields
from intake.pulls import pulls_poll, review_job_ensure
from orchestration.choices import ErrorCategory
from orchestration.errors import ValidationFailed
from orchestration.forms.callbacks import CompleteForm
from orchestration.models import Worker, WorkItem, WorkItemStatus, WorkItemType
from orchestration.services.dispatch import dispatch_claim_one
from orchestration.services.work_items import work_item_requeue
from orchestration.services.workers import (
    Completion,
    worker_complete,
    worker_fail,
    worker_mark_started,
)
from reviews.models import PRReview
from tests.factories import WorkItemFactory, running_item
from tests.fakes.github import FakeGitHub
from tests.intake_support import fake_github_serving

pytestmark = pytest.mark.django_db

REPO = "acme/widgets"
HEAD = "c" * 40


@pytest.fixture(autouse=True)
def _app(settings: Any, app_keys: tuple[str, str]) -> None:
    """A GitHub App: only an App's token may create check runs."""
    settings.GITHUB_APP_ID, settings.GITHUB_APP_PRIVATE_KEY = FakeGitHub().app_id, app_keys[0]


@pytest.fixture
def github(settings: Any, app_keys: tuple[str, str]) -> Iterator[FakeGitHub]:
    with fake_github_serving(settings) as fake:
        fake.app_public_key = app_keys[1]
        settings.INTAKE_REPOS = [REPO]
        settings.REVIEW_CHECK_NAME = "Whim review"
        yield fake


def findings(spec: str = "aligned", quality: str = "needs-work") -> dict[str, Any]:
    return {
        "specAlignment": {"score": spec, "summary": "Does what it says.", "gaps": [], "extras": []},
        "codeQuality": {
            "score": quality,
            "summary": "One bug @octocat should see.",
            "concerns": [
                {"file": "src/frob.py", "line": 12, "issue": "Off by one.", "suggestion": "<b>"},
                {"file": "src/frob.py", "line": 90, "issue": "Not in the diff.", "suggestion": ""},
                {"file": "README.md", "issue": "Whole-file remark.", "suggestion": ""},
            ],
        },
        "overallSummary": "Close, one fix needed.",
    }


def review_job(sha: str = HEAD) -> tuple[WorkItem, Any]:
    return running_item(
        repo=REPO,
        type=WorkItemType.REVIEW,
        branch="feature/frob",
        pr_number=7,
        commit_sha=sha,
        metadata={"headSha": sha, "baseRef": "main"},
    )


def dispatch_and_run(item: WorkItem) -> tuple[WorkItem, Any]:
    """Claim ``item`` again and start its new attempt."""
    worker_id = dispatch_claim_one(use_gate=False)
    assert worker_id is not None
    worker_mark_started(worker_id=worker_id, container_id="c-2")
    return item, Worker.objects.get(pk=worker_id)


def pull_of(number: int, sha: str) -> dict[str, Any]:
    """PullForm's cleaned fields for a pull request of REPO at ``sha``."""
    pull = {
        "number": number, "title": "Frob", "body": "", "draft": False,
        "user": {"login": "octocat"},
        "head": {"ref": "feature/frob", "sha": sha, "repo": {"full_name": REPO}},
        "base": {"ref": "main", "sha": "b" * 40},
    }  # fmt: skip
    return PullForm.from_json(pull_fields(pull, repo=REPO)).validated()


def complete(worker: Any, *, sha: str = HEAD, found: dict[str, Any] | None = None) -> None:
    worker_complete(
        worker_id=worker.pk,
        result=Completion(
            commit_sha=sha,
            review={"modelUsed": "claude", "findings": found or findings()},
            diff_lines={"src/frob.py": [[10, 20]]},
        ),
    )


def test_a_completed_review_job_writes_its_review_and_check_run_rows() -> None:
    item, worker = review_job()

    complete(worker)

    item.refresh_from_db()
    assert item.status == WorkItemStatus.COMPLETED and item.pr_number == 7
    assert PRReview.objects.get(work_item=item).pr_number == 7
    post = GitHubAction.objects.get(key=f"review:{item.pk}:{worker.pk}")
    assert (post.kind, post.repo, post.number, post.work_item_id) == (
        "review_post",
        REPO,
        7,
        item.pk,
    )
    assert post.payload["commit_id"] == HEAD
    assert post.payload["comments"] == [
        {
            "path": "src/frob.py",
            "line": 12,
            "side": "RIGHT",
            "body": "Off by one.\n\n*Suggestion:* &lt;b>",
        }
    ]
    body = post.payload["body"]
    assert "Close, one fix needed." in body and "Code quality: needs-work" in body
    assert "`src/frob.py:90`: Not in the diff." in body and "`README.md`" in body
    assert "@octocat" not in body and "@\u200boctocat" in body  # nobody is pinged
    check = GitHubAction.objects.get(key=f"check:{item.pk}:{worker.pk}")
    assert check.payload["conclusion"] == "action_required"
    assert (check.payload["name"], check.payload["head_sha"]) == ("Whim review", HEAD)


@pytest.mark.parametrize(
    ("spec", "quality", "conclusion"),
    [
        ("aligned", "good", "success"),
        ("aligned", "acceptable", "neutral"),
        ("partial", "good", "neutral"),
        ("misaligned", "good", "action_required"),
    ],
)
def test_the_check_runs_conclusion_follows_the_scores(
    spec: str, quality: str, conclusion: str
) -> None:
    item, worker = review_job()
    complete(worker, found=findings(spec, quality))
    check = GitHubAction.objects.get(key=f"check:{item.pk}:{worker.pk}")
    assert check.payload["conclusion"] == conclusion


def test_a_review_of_another_commit_is_refused_with_nothing_written() -> None:
    item, worker = review_job()

    with pytest.raises(ValidationFailed):
        complete(worker, sha="d" * 40)

    item.refresh_from_db()
    assert item.status == WorkItemStatus.IN_PROGRESS
    assert not GitHubAction.objects.exists() and not PRReview.objects.exists()


def test_a_review_job_that_failed_for_good_gets_a_neutral_check_run() -> None:
    item, worker = review_job()

    worker_fail(worker_id=worker.pk, error="boom", category=ErrorCategory.PERMANENT)

    item.refresh_from_db()
    assert item.status == WorkItemStatus.FAILED
    (check,) = GitHubAction.objects.all()
    assert check.key == f"check:{item.pk}:{worker.pk}" and check.payload["conclusion"] == "neutral"
    assert "boom" not in str(check.payload)  # the error stays on the item page


def test_the_review_is_posted_once_though_github_timed_out_after_storing_it(
    github: FakeGitHub, settings: Any
) -> None:
    settings.GITHUB_TIMEOUT = 0.5
    github.timeout_sleep = 1.5
    github.add_pull(REPO, 7, "feature/frob", HEAD, diff={"src/frob.py": [(10, 20)]})
    item, worker = review_job()
    complete(worker)
    post = GitHubAction.objects.get(kind="review_post")
    github.fault("POST", r"/pulls/7/reviews$", "timeout_after_write")

    assert github_action_deliver(action_id=post.pk) == "retry"
    GitHubAction.objects.filter(pk=post.pk).update(next_attempt_at=None)
    assert github_action_deliver(action_id=post.pk) == "done"

    (review,) = github.reviews[REPO][7]
    assert (
        review["state"] == "COMMENTED"
        and f"<!-- whim:review:{item.pk}:{worker.pk} -->" in review["body"]
    )
    assert [c["line"] for c in review["comments"]] == [12]
    post.refresh_from_db()
    assert post.result["found"] is True and post.result["html_url"] == review["html_url"]


def test_line_comments_github_refuses_are_folded_into_the_body(github: FakeGitHub) -> None:
    github.add_pull(REPO, 7, "feature/frob", HEAD, diff={"src/frob.py": [(1, 5)]})
    _, worker = review_job()
    complete(worker)

    assert (
        github_action_deliver(action_id=GitHubAction.objects.get(kind="review_post").pk) == "done"
    )

    (review,) = github.reviews[REPO][7]
    assert review["comments"] == [] and "`src/frob.py:12`: Off by one." in review["body"]


def test_the_check_run_is_created_once(github: FakeGitHub) -> None:
    github.add_pull(REPO, 7, "feature/frob", HEAD)
    item, worker = review_job()
    complete(worker, found=findings("aligned", "good"))
    check = GitHubAction.objects.get(kind="check_run")

    assert github_action_deliver(action_id=check.pk) == "done"
    GitHubAction.objects.filter(pk=check.pk).update(status="pending", next_attempt_at=None)
    assert github_action_deliver(action_id=check.pk) == "done"

    (run,) = github.check_runs[REPO]
    assert (run["external_id"], run["conclusion"]) == (f"check:{item.pk}:{worker.pk}", "success")
    assert run["head_sha"] == HEAD and run["name"] == "Whim review"


def test_without_a_github_app_no_check_run_is_asked_for(settings: Any) -> None:
    settings.GITHUB_APP_ID = settings.GITHUB_APP_PRIVATE_KEY = ""  # GITHUB_TOKEN mode
    _, worker = review_job()

    complete(worker)

    # GitHub's Checks API takes an App's token only: a token's check run would fail for good.
    assert list(GitHubAction.objects.values_list("kind", flat=True)) == ["review_post"]


def test_a_requeued_review_job_reports_its_new_ending_too() -> None:
    item, worker = review_job()
    worker_fail(worker_id=worker.pk, error="boom", category=ErrorCategory.PERMANENT)
    work_item_requeue(work_item_id=item.pk)
    _, again = dispatch_and_run(item)

    complete(again, found=findings("aligned", "good"))

    checks = GitHubAction.objects.filter(kind="check_run").order_by("pk")
    assert [c.payload["conclusion"] for c in checks] == ["neutral", "success"]
    assert GitHubAction.objects.filter(kind="review_post").count() == 1


def test_a_review_body_past_githubs_limit_is_cut_to_fit(github: FakeGitHub) -> None:
    github.add_pull(REPO, 7, "feature/frob", HEAD, diff={"src/frob.py": [(10, 20)]})
    huge = findings()
    huge["specAlignment"]["gaps"] = [f"gap {n} " + "x" * 4_000 for n in range(100)]
    _, worker = review_job()
    complete(worker, found=huge)

    assert (
        github_action_deliver(action_id=GitHubAction.objects.get(kind="review_post").pk) == "done"
    )

    (review,) = github.reviews[REPO][7]
    assert len(review["body"]) < 65_536 and "(cut: the full review is on Whim)" in review["body"]
    assert "<!-- whim:review:" in review["body"]  # the marker survives the cut


def test_the_poll_restores_the_heads_review_a_late_delivery_superseded(
    github: FakeGitHub,
) -> None:
    new = "f" * 40
    github.add_pull(REPO, 7, "feature/frob", new)
    pulls_poll(repo=REPO)  # the poll makes the head's job first (no ``before`` on it)
    review_job_ensure(pull_of(7, HEAD))  # then a late delivery of an older head supersedes it

    Repository.objects.filter(name=REPO).update(pulls_etag="")
    pulls_poll(repo=REPO)

    jobs = {j.commit_sha: j.status for j in WorkItem.objects.filter(type=WorkItemType.REVIEW)}
    assert jobs == {new: WorkItemStatus.QUEUED, HEAD: WorkItemStatus.CANCELLED}


def test_a_pull_request_the_full_queue_turned_away_is_polled_again(
    github: FakeGitHub, settings: Any
) -> None:
    github.add_pull(REPO, 7, "feature/frob", HEAD)
    settings.MAX_QUEUED = 0
    assert pulls_poll(repo=REPO)["queued"] == 0
    settings.MAX_QUEUED = 100

    assert pulls_poll(repo=REPO)["queued"] == 1  # no 304: the ETag was not kept


def test_the_poll_queues_open_pull_requests_once_and_backs_off_when_rate_limited(
    github: FakeGitHub,
) -> None:
    github.add_pull(REPO, 7, "feature/frob", HEAD)
    github.add_pull(REPO, 8, "feature/draft", "e" * 40, draft=True)

    first = pulls_poll(repo=REPO)
    second = pulls_poll(repo=REPO)

    assert first["queued"] == 1 and second["queued"] == 0
    (item,) = WorkItem.objects.filter(type=WorkItemType.REVIEW)
    assert (item.pr_number, item.commit_sha) == (7, HEAD)
    github.pull_push(REPO, 7, "f" * 40)
    github.rate_limit_remaining = 0
    assert pulls_poll(repo=REPO)["queued"] == 0
    row = Repository.objects.get(name=REPO)
    assert row.rate_limited_until is not None
    github.rate_limit_remaining = None
    assert pulls_poll(repo=REPO)["queued"] == 0  # still waiting for the reset


def test_a_poll_cancels_the_jobs_of_pull_requests_no_longer_open(github: FakeGitHub) -> None:
    github.add_pull(REPO, 7, "feature/frob", HEAD)
    pulls_poll(repo=REPO)
    github.pulls_store[REPO][7]["state"] = "closed"
    Repository.objects.filter(name=REPO).update(pulls_etag="")

    assert pulls_poll(repo=REPO)["cancelled"] == 1
    assert WorkItem.objects.get(type=WorkItemType.REVIEW).status == WorkItemStatus.CANCELLED


def test_fix_rounds_queue_a_bounded_fix_up_on_whims_own_pull_request(settings: Any) -> None:
    settings.REVIEW_FIX_ROUNDS = 1
    opened = WorkItemFactory.create(
        repo=REPO, pr_number=7, branch="whim/frob", status=WorkItemStatus.COMPLETED, spec="# Frob"
    )
    _, worker = review_job()
    complete(worker)

    (fix,) = WorkItem.objects.filter(source="review-fix")
    assert (fix.type, fix.branch, fix.status) == ("execution", "whim/frob", "queued")
    assert fix.parent_work_item_id == opened.pk and "Off by one." in fix.spec
    WorkItem.objects.filter(pk=fix.pk).update(status=WorkItemStatus.COMPLETED)

    _, again = review_job("9" * 40)
    complete(again, sha="9" * 40)
    assert WorkItem.objects.filter(source="review-fix").count() == 1  # one round only


def test_a_fix_up_respects_the_queue_bound_and_the_review_completes_anyway(
    settings: Any,
) -> None:
    settings.REVIEW_FIX_ROUNDS, settings.MAX_QUEUED = 1, 0
    WorkItemFactory.create(
        repo=REPO, pr_number=7, branch="whim/frob", status=WorkItemStatus.COMPLETED, spec="# Frob"
    )
    item, worker = review_job()

    complete(worker)

    item.refresh_from_db()
    assert item.status == WorkItemStatus.COMPLETED
    assert not WorkItem.objects.filter(source="review-fix").exists()
    assert GitHubAction.objects.filter(kind="review_post").count() == 1


def test_no_fix_up_when_off_or_not_a_whim_pull_request(settings: Any) -> None:
    _, worker = review_job()
    complete(worker)  # REVIEW_FIX_ROUNDS is 0 by default, and no Whim item opened #7
    settings.REVIEW_FIX_ROUNDS = 3
    _, other = review_job("9" * 40)
    complete(other, sha="9" * 40)
    assert not WorkItem.objects.filter(source="review-fix").exists()


@pytest.mark.parametrize(
    "lines",
    [
        ["src/a.py"],
        {"src/a.py": [[3, 2]]},
        {"src/a.py": [[0, 2]]},
        {"src/a.py": [[1, True]]},
        {"src/a.py": [[1, 2, 3]]},
        {"../etc/passwd": [[1, 2]]},
        {"/abs": [[1, 2]]},
        {"src/a.py": [[1, 1]] * 201},
        {f"f{n}": [[1, 1]] for n in range(1001)},
    ],
)
def test_diff_lines_of_the_wrong_shape_or_size_are_refused(lines: Any) -> None:
    form = CompleteForm.from_json({"diffLines": lines})
    assert not form.is_valid() and "diffLines" in form.errors


def test_diff_lines_within_bounds_are_kept() -> None:
    form = CompleteForm.from_json({"diffLines": {"src/./a.py": [[1, 4], [9, 9]]}})
    assert form.is_valid(), form.errors
    assert form.cleaned_data["diffLines"] == {"src/a.py": [[1, 4], [9, 9]]}
