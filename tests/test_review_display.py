"""An attempt's self-review in the original Whim's ReviewFindings shape, its test results and
its "resumed from" note, on every surface: the item page, the admin and ``/api/reviews*``
(older list-shaped reviews, as the GitHub webhook stores them, still render)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from orchestration.models import WorkItemEvent
from reviews.models import PRReview
from tests.callbacks_support import SHA, call
from tests.factories import WorkItemFactory, running_attempt
from tests.helpers import assert_error

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("retry_policy")]

FINDINGS: dict[str, Any] = {
    "specAlignment": {
        "score": "partial",
        "summary": "Most of the spec is done.",
        "gaps": ["the widget does not spin"],
        "extras": ["a <b>bold</b> refactor"],
    },
    "codeQuality": {
        "score": "needs-work",
        "summary": "Input is not checked.",
        "concerns": [
            {
                "file": "src/widget.py",
                "line": 12,
                "issue": "unchecked input",
                "suggestion": "validate the size",
            },
            {"file": "README.md", "issue": "stale docs", "suggestion": ""},
        ],
    },
    "overallSummary": "Close, but not yet.",
}
COMPLETION: dict[str, Any] = {
    "commitSha": SHA,
    "prNumber": 5,
    "review": {"modelUsed": "claude-sonnet-4-5", "findings": FINDINGS},
    "metrics": {"testsRun": 12, "testsPassed": 11, "testsFailed": 1, "testStatus": "failed"},
}


def test_findings_in_whims_shape_render_on_the_item_page_admin_and_api(
    client: Client, staff_client: Client, superuser_client: Client, api: Client
) -> None:
    item, worker = running_attempt()
    assert call(client, worker, "complete", COMPLETION).status_code == 200

    page = staff_client.get(f"/work/{item.pk}/").content.decode()
    for text in (
        "Close, but not yet.",
        "partial",
        "Most of the spec is done.",
        "the widget does not spin",
        "needs-work",
        "<code>src/widget.py:12</code> unchecked input",
        "Suggestion: validate the size",
        "<code>README.md</code> stale docs",
        "a &lt;b&gt;bold&lt;/b&gt; refactor",  # escaped, as everything a model wrote
    ):
        assert text in page, text
    assert "<b>bold</b>" not in page
    # The tests of the latest attempt, beside the review.
    assert 'id="tests"' in page
    assert "12 / 11 / 1" in page
    review = PRReview.objects.get(work_item=item)
    admin_page = superuser_client.get(f"/admin/reviews/prreview/{review.pk}/change/")
    assert admin_page.status_code == 200
    assert "<code>src/widget.py:12</code> unchecked input" in admin_page.content.decode()
    for path in (
        "/api/reviews",
        f"/api/reviews/work-item/{item.pk}",
        "/api/reviews/pr/5",
    ):
        answer = api.get(path).json()
        shown = answer if isinstance(answer, dict) else answer[0]  # by PR: the one review
        assert shown["findings"] == FINDINGS, path
        assert shown["modelUsed"] == "claude-sonnet-4-5"


def test_list_shaped_findings_still_render(staff_client: Client, superuser_client: Client) -> None:
    item = WorkItemFactory.create(status="completed")
    review = PRReview.objects.create(
        work_item=item,
        repo=item.repo,
        pr_number=3,
        model_used="github:octocat",
        findings=[{"severity": "changes_requested", "message": "please add tests"}],
    )

    page = staff_client.get(f"/work/{item.pk}/").content.decode()

    assert "changes_requested" in page and "please add tests" in page
    admin_page = superuser_client.get(f"/admin/reviews/prreview/{review.pk}/change/")
    assert "please add tests" in admin_page.content.decode()


def test_no_review_and_no_tests_reported_leave_those_sections_out(
    client: Client, staff_client: Client
) -> None:
    item, worker = running_attempt()
    assert call(client, worker, "complete", {"commitSha": SHA}).status_code == 200

    page = staff_client.get(f"/work/{item.pk}/").content.decode()

    assert "Review findings" not in page
    assert "not reported" in page  # the tests section says so rather than inventing a status


# --- resumed from ----------------------------------------------------------------------------

RESUMED = "abcdef0123456789abcdef0123456789abcdef01"


def test_the_first_heartbeat_that_resumes_records_one_event(
    client: Client, staff_client: Client
) -> None:
    item, worker = running_attempt()

    answers = []
    for iteration in (1, 2, 3):
        resp = call(client, worker, "heartbeat", {"iteration": iteration, "resumedFrom": RESUMED})
        assert resp.status_code == 200, resp.content
        answers.append(resp)

    events = WorkItemEvent.objects.filter(work_item=item, kind="resumed")
    first = answers[0]["X-Request-ID"]  # recorded by the first heartbeat, under its id
    assert [(e.message, e.worker_id, e.data) for e in events] == [
        ("resumed from commit abcdef0", worker.pk, {"commitSha": RESUMED, "requestId": first})
    ]
    page = staff_client.get(f"/work/{item.pk}/").content.decode()
    assert "resumed from commit abcdef0" in page


def test_a_heartbeat_without_resumed_from_records_nothing(client: Client) -> None:
    item, worker = running_attempt()

    call(client, worker, "heartbeat", {"iteration": 1})

    assert not WorkItemEvent.objects.filter(work_item=item, kind="resumed").exists()


@pytest.mark.parametrize("bad", ["abc1234", "z" * 40, 40, RESUMED.upper()])
def test_a_bad_resumed_from_is_a_400_and_records_nothing(client: Client, bad: Any) -> None:
    item, worker = running_attempt()

    resp = call(client, worker, "heartbeat", {"iteration": 1, "resumedFrom": bad})

    assert_error(resp, 400, "VALIDATION_ERROR", details=["resumedFrom"])
    assert not WorkItemEvent.objects.filter(work_item=item, kind="resumed").exists()
