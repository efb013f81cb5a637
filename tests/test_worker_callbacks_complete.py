"""The worker callback routes (API.md "Worker callbacks"): complete, through the Django test
client.

A completion records the result and frees the locks; sent twice it answers 200 and changes
nothing; a worker that is no longer the active attempt is fenced off with 409.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from orchestration.models import (
    FileLock,
    Learning,
    WorkerMetrics,
    WorkerStatus,
    WorkItem,
    WorkItemStatus,
)
from reviews.models import PRReview
from tests.callbacks_support import SHA, call, hold, kill, snapshot
from tests.factories import running_attempt
from tests.helpers import assert_error

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("retry_policy")]


# --- complete ------------------------------------------------------------------------------

FULL_COMPLETION: dict[str, Any] = {
    "prUrl": "https://github.com/acme/widgets/pull/42",
    "prNumber": 42,
    "commitSha": SHA,
    "metrics": {
        "tokensIn": 1000,
        "tokensOut": 250,
        "duration": 90_000,
        "filesModified": 3,
        "testsRun": 12,
        "testsPassed": 11,
        "testsFailed": 1,
        "testStatus": "failed",
    },
    "review": {
        "modelUsed": "claude",
        "findings": {
            "specAlignment": {"score": "aligned", "summary": "does it", "gaps": [], "extras": []},
            "codeQuality": {
                "score": "good",
                "summary": "clean",
                "concerns": [{"file": "a.py", "line": 3, "issue": "ok", "suggestion": "none"}],
            },
            "overallSummary": "ship it",
        },
    },
    "learnings": [{"content": "run the linter first", "spec": "# Do the thing"}],
}


def test_complete_records_the_result_and_frees_the_locks(client: Client, api: Client) -> None:
    item, worker = running_attempt()
    hold(worker, "a.py", "b.py")

    resp = call(client, worker, "complete", FULL_COMPLETION)

    assert resp.status_code == 200, resp.content
    assert resp.json() == {"success": True}
    item.refresh_from_db()
    worker.refresh_from_db()
    assert item.status == WorkItemStatus.COMPLETED
    assert worker.status == WorkerStatus.COMPLETED
    assert item.completed_at is not None
    assert (item.pr_url, item.pr_number, item.commit_sha) == (
        "https://github.com/acme/widgets/pull/42",
        42,
        SHA,
    )
    metrics = WorkerMetrics.objects.get(worker=worker)
    assert metrics.work_item_id == item.pk
    assert (metrics.tokens_in, metrics.tokens_out, metrics.duration_ms) == (1000, 250, 90_000)
    assert (metrics.files_modified, metrics.tests_run, metrics.tests_passed) == (3, 12, 11)
    assert (metrics.tests_failed, metrics.test_status) == (1, "failed")
    assert list(Learning.objects.values_list("repo", "content", "spec", "work_item_id")) == [
        (item.repo, "run the linter first", "# Do the thing", item.pk)
    ]
    review = PRReview.objects.get(work_item=item)
    assert (review.model_used, review.pr_number, review.repo) == ("claude", 42, item.repo)
    assert review.findings == FULL_COMPLETION["review"]["findings"]
    assert not FileLock.objects.filter(worker=worker).exists()
    shown = api.get(f"/api/work/{item.pk}").json()
    assert shown["status"] == "completed"
    assert shown["commitSha"] == SHA
    assert shown["prNumber"] == 42


def test_complete_twice_answers_200_and_changes_nothing(client: Client) -> None:
    item, worker = running_attempt()
    assert call(client, worker, "complete", FULL_COMPLETION).status_code == 200
    before = snapshot(item, worker)

    again = call(
        client,
        worker,
        "complete",
        {**FULL_COMPLETION, "prUrl": "https://github.com/acme/widgets/pull/43", "prNumber": 43},
    )

    assert again.status_code == 200, again.content
    assert again.json() == {"success": True}
    assert snapshot(item, worker) == before
    assert item.pr_number == 42


def test_complete_after_fail_is_fenced(client: Client) -> None:
    item, worker = running_attempt()
    assert call(client, worker, "fail", {"error": "boom"}).status_code == 200
    before = snapshot(item, worker)

    assert_error(call(client, worker, "complete", FULL_COMPLETION), 409, "INVALID_STATE")
    assert snapshot(item, worker) == before


def test_complete_of_a_killed_worker_is_fenced(client: Client) -> None:
    item, worker = running_attempt()
    kill(worker)
    before = snapshot(item, worker)

    assert_error(call(client, worker, "complete", FULL_COMPLETION), 409, "INVALID_STATE")
    assert snapshot(item, worker) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"metrics": {"tokensIn": "many"}}, "metrics", id="metric_string"),
        pytest.param({"metrics": {"testsRun": -1}}, "metrics", id="metric_negative"),
        pytest.param({"metrics": {"duration": True}}, "metrics", id="metric_bool"),
        pytest.param({"metrics": {"testStatus": 3}}, "metrics", id="test_status_number"),
        pytest.param({"metrics": [1]}, "metrics", id="metrics_list"),
        pytest.param({"prNumber": "forty-two"}, "prNumber", id="pr_number_word"),
        pytest.param({"prNumber": 0}, "prNumber", id="pr_number_zero"),
        pytest.param({"prUrl": "javascript:alert(1)"}, "prUrl", id="pr_url_scheme"),
        pytest.param({"commitSha": "zzz"}, "commitSha", id="commit_sha"),
        pytest.param({"verificationEnabled": "maybe"}, "verificationEnabled", id="verif_flag"),
        pytest.param({"review": "great"}, "review", id="review_string"),
        pytest.param({"learnings": "one"}, "learnings", id="learnings_string"),
        pytest.param({"learnings": ["one"]}, "learnings", id="learnings_of_strings"),
        pytest.param({"learnings": [{"content": 3}]}, "learnings", id="learning_number"),
        pytest.param({"learnings": [{"content": " "}]}, "learnings", id="learning_blank"),
        pytest.param(
            {"learnings": [{"content": "x" * 10_001}]}, "learnings", id="learning_too_long"
        ),
        pytest.param({"learnings": [{"content": "x"}] * 51}, "learnings", id="learnings_too_many"),
        pytest.param(
            {"learnings": [{"content": "x", "spec": ["s"]}]}, "learnings", id="learning_spec"
        ),
        pytest.param(
            {"review": {"modelUsed": "m", "findings": [{"file": "a.py"}]}},
            "review",
            id="findings_list",
        ),
        pytest.param(
            {"review": {**FULL_COMPLETION["review"], "modelUsed": 7}}, "review", id="model_used"
        ),
        pytest.param(
            {
                "review": {
                    "modelUsed": "m",
                    "findings": {
                        **FULL_COMPLETION["review"]["findings"],
                        "specAlignment": {"score": "great", "summary": "s"},
                    },
                }
            },
            "review",
            id="findings_score",
        ),
        pytest.param(
            {
                "review": {
                    "modelUsed": "m",
                    "findings": {
                        **FULL_COMPLETION["review"]["findings"],
                        "codeQuality": {
                            "score": "good",
                            "summary": "s",
                            "concerns": [{"file": "a.py", "line": "3", "issue": "i"}],
                        },
                    },
                }
            },
            "review",
            id="concern_line_text",
        ),
        pytest.param(
            {
                "review": {
                    "modelUsed": "m",
                    "findings": {**FULL_COMPLETION["review"]["findings"], "overallSummary": None},
                }
            },
            "review",
            id="overall_summary_missing",
        ),
    ],
)
def test_complete_with_a_bad_body_changes_nothing(
    client: Client, body: dict[str, Any], field: str
) -> None:
    item, worker = running_attempt()
    hold(worker, "a.py")
    before = snapshot(item, worker)

    details = assert_error(call(client, worker, "complete", body), 400, "VALIDATION_ERROR")[
        "details"
    ]

    assert field in details, details
    assert snapshot(item, worker) == before
    assert item.status == WorkItemStatus.IN_PROGRESS


def test_a_verified_completion_queues_a_linked_verification_item(
    client: Client, api: Client
) -> None:
    item, worker = running_attempt()

    resp = call(client, worker, "complete", {**FULL_COMPLETION, "verificationEnabled": True})

    assert resp.status_code == 200, resp.content
    child = WorkItem.objects.get(parent_work_item=item)
    assert child.type == "verification"
    assert child.status == WorkItemStatus.QUEUED
    assert (child.repo, child.branch) == (item.repo, item.branch)
    shown = api.get(f"/api/work/{item.pk}/verification")
    assert shown.status_code == 200, shown.content
    assert shown.json()["id"] == str(child.pk)
    assert shown.json()["parentWorkItemId"] == str(item.pk)
    assert shown.json()["type"] == "verification"


def test_a_completion_without_verification_queues_nothing(client: Client, api: Client) -> None:
    item, worker = running_attempt()

    assert call(client, worker, "complete", FULL_COMPLETION).status_code == 200

    assert not WorkItem.objects.filter(parent_work_item=item).exists()
    assert_error(api.get(f"/api/work/{item.pk}/verification"), 404, "NOT_FOUND")


@pytest.mark.parametrize("passed", [False, True])
def test_a_verification_result_reaches_the_parent(client: Client, passed: bool) -> None:
    parent, worker = running_attempt()
    assert (
        call(client, worker, "complete", {**FULL_COMPLETION, "verificationEnabled": True})
    ).status_code == 200
    child = WorkItem.objects.get(parent_work_item=parent)
    child, verifier = running_attempt(child)

    resp = call(client, verifier, "complete", {"verificationPassed": passed})

    assert resp.status_code == 200, resp.content
    parent.refresh_from_db()
    child.refresh_from_db()
    assert child.status == WorkItemStatus.COMPLETED
    assert parent.verification_passed is passed
    # A verification item does not ask for a verification of its own.
    assert not WorkItem.objects.filter(parent_work_item=child).exists()
