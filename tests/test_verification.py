"""Verification items (issue 10 §4): the child a completion asks for, the verdict it reports to
its parent, its immediate bounded retries, and the environment its container gets — through
the real callback views, on PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from orchestration import nudge
from orchestration.choices import EventKind
from orchestration.models import WorkItem, WorkItemEvent, WorkItemStatus, WorkItemType
from orchestration.nudge import TaskName
from orchestration.services.dispatch import worker_token
from tests.callbacks_support import SHA, call
from tests.factories import running_attempt
from tests.helpers import assert_error, task_mocks
from workers.runtime import worker_environment

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("retry_policy")]

SPEC = "# Add a widget\n\nThe widget must spin."
DONE = {"commitSha": SHA, "metrics": {"tokensIn": 10, "tokensOut": 5}}


def completed_with_verification(client: Client, **extra: Any) -> tuple[WorkItem, WorkItem]:
    """An execution item completed with verification on; returns it and its child."""
    parent, worker = running_attempt(spec=SPEC, metadata={"mockSeconds": 0, "testCommand": "t"})
    resp = call(client, worker, "complete", {**DONE, "verificationEnabled": True, **extra})
    assert resp.status_code == 200, resp.content
    parent.refresh_from_db()
    return parent, WorkItem.objects.get(parent_work_item=parent)


# --- the child -------------------------------------------------------------------------------


def test_the_child_is_made_once_with_the_pull_request_and_no_spec(
    client: Client, api: Client
) -> None:
    parent, child = completed_with_verification(
        client, prNumber=42, prUrl="https://github.com/acme/w/pull/42"
    )
    # The same complete again is a repeat: no second child.
    assert call(
        client, parent.workers.get(), "complete", {**DONE, "verificationEnabled": True}
    ).json() == {"success": True}
    assert WorkItem.objects.filter(parent_work_item=parent).count() == 1

    assert child.type == WorkItemType.VERIFICATION
    assert child.status == WorkItemStatus.QUEUED
    assert (child.repo, child.branch, child.priority) == (parent.repo, parent.branch, "medium")
    assert (child.pr_number, child.commit_sha) == (42, SHA)
    assert child.description == SPEC
    assert child.metadata == {"mockSeconds": 0, "testCommand": "t"}
    shown = api.get(f"/api/work/{child.pk}").json()
    assert shown["spec"] is None
    assert shown["description"] == SPEC
    assert shown["prNumber"] == 42
    assert shown["parentWorkItemId"] == str(parent.pk)
    assert shown["type"] == "verification"


def test_without_a_pull_request_the_child_verifies_the_pushed_branch(client: Client) -> None:
    _parent, child = completed_with_verification(client)

    assert child.pr_number is None
    assert child.branch and child.commit_sha == SHA


# --- the verdict -----------------------------------------------------------------------------


@pytest.mark.parametrize(("passed", "word"), [(True, "PASS"), (False, "FAIL")])
def test_the_verdict_reaches_the_parent_and_both_pages_show_it(
    client: Client, api: Client, staff_client: Client, passed: bool, word: str
) -> None:
    parent, child = completed_with_verification(client, prNumber=7)
    WorkItem.objects.filter(pk=parent.pk).update(metadata={**parent.metadata, "other": 1})
    child, verifier = running_attempt(child)

    # No commit: a verifier pushes nothing.
    resp = call(client, verifier, "complete", {"verificationPassed": passed, "metrics": {}})

    assert resp.status_code == 200, resp.content
    child.refresh_from_db()
    parent.refresh_from_db()
    assert child.status == WorkItemStatus.COMPLETED
    assert child.verification_passed is passed
    assert child.pr_number == 7  # kept: the child reported no PR of its own
    assert parent.verification_passed is passed
    status = parent.metadata["verificationStatus"]
    assert status["passed"] is passed
    assert status["verificationWorkItemId"] == str(child.pk)
    assert status["completedAt"]
    assert parent.metadata["other"] == 1  # the key was set in place, nothing else lost
    assert WorkItemEvent.objects.filter(work_item=parent, kind="verified").count() == 1
    assert api.get(f"/api/work/{parent.pk}").json()["verificationPassed"] is passed
    parent_page = staff_client.get(f"/work/{parent.pk}/").content.decode()
    assert f'href="/work/{child.pk}/"' in parent_page
    assert f"<strong>{word}</strong>" in parent_page
    child_page = staff_client.get(f"/work/{child.pk}/").content.decode()
    assert f'href="/work/{parent.pk}/"' in child_page
    assert f"Verdict: <strong>{word}</strong>" in child_page


def test_a_verifier_completes_without_a_commit_where_commits_are_checked(
    client: Client, settings: Any, tmp_path: Path
) -> None:
    settings.WHIM_GIT_BASE_URL = f"file://{tmp_path}/"
    settings.WHIM_LOCAL_REPOS_DIR = str(tmp_path)
    parent, worker = running_attempt()
    # The check applies here: a change that names no commit is refused…
    assert_error(call(client, worker, "complete", {}), 400, "VALIDATION_ERROR")
    child = WorkItem.objects.create(
        repo=parent.repo,
        branch=parent.branch,
        type=WorkItemType.VERIFICATION,
        parent_work_item=parent,
        description=parent.spec,
    )
    worker.delete()
    WorkItem.objects.filter(pk=parent.pk).update(status=WorkItemStatus.COMPLETED, worker=None)
    child, verifier = running_attempt(child)

    # …a verification is not.
    resp = call(client, verifier, "complete", {"verificationPassed": True})

    assert resp.status_code == 200, resp.content
    child.refresh_from_db()
    assert child.status == WorkItemStatus.COMPLETED


# --- retries ---------------------------------------------------------------------------------


def test_a_failed_verification_is_retried_at_once_up_to_its_own_bound(
    client: Client, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.VERIFICATION_MAX_RETRIES, settings.MAX_RETRIES = 2, 0
    parent, child = completed_with_verification(client)

    for retry in (1, 2):
        child, verifier = running_attempt(child)
        nudge.dispatch_pending_clear()  # the previous retry's dispatch run ran (coalescing)
        with (
            task_mocks(TaskName.DISPATCH) as sent,
            django_capture_on_commit_callbacks(execute=True),
        ):
            resp = call(client, verifier, "fail", {"error": "tests broke", "iteration": 1})
        assert resp.status_code == 200, resp.content
        child.refresh_from_db()
        assert child.status == WorkItemStatus.QUEUED
        assert child.retry_count == retry
        assert child.next_retry_at is None  # no backoff: claimable now
        assert WorkItem.objects.claimable(child.created_at).filter(pk=child.pk).exists()
        sent[TaskName.DISPATCH].assert_called_once_with()

    child, verifier = running_attempt(child)
    call(client, verifier, "fail", {"error": "tests broke again", "iteration": 1})

    child.refresh_from_db()
    assert child.status == WorkItemStatus.FAILED
    assert child.retry_count == 2
    # Its parent learns that no verdict will come, rather than waiting for one for ever.
    parent.refresh_from_db()
    status = parent.metadata["verificationStatus"]
    assert status["passed"] is None and status["verificationWorkItemId"] == str(child.pk)
    verified = parent.events.filter(kind=EventKind.VERIFIED).last()
    assert verified is not None and verified.message == "verification gave no verdict"


def test_an_execution_item_still_waits_out_its_backoff(client: Client, settings: Any) -> None:
    settings.VERIFICATION_MAX_RETRIES = 3
    item, worker = running_attempt()

    call(client, worker, "fail", {"error": "agent broke", "iteration": 1})

    item.refresh_from_db()
    assert item.status == WorkItemStatus.QUEUED and item.next_retry_at is not None


# --- the container's environment -------------------------------------------------------------


def test_a_verification_container_runs_in_verification_mode(
    client: Client, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKER_MODE", "verification")
    settings.WHIM_AGENT_ENV = ["WORKER_MODE"]  # a passed-through variable cannot set it
    parent, child = completed_with_verification(client, prNumber=9)
    _, parent_worker = parent, parent.workers.get()
    child, verifier = running_attempt(child)

    child_env = worker_environment(
        worker=verifier, work_item=child, token=worker_token(verifier.pk), callback_base="http://x"
    )
    parent_env = worker_environment(
        worker=parent_worker,
        work_item=parent,
        token=worker_token(parent_worker.pk),
        callback_base="http://x",
    )

    assert child_env["WORKER_MODE"] == "verification"
    assert "WORKER_MODE" not in parent_env
    item = json.loads(child_env["WORK_ITEM"])
    assert item["type"] == "verification"
    assert item["prNumber"] == 9
    assert item["parentWorkItemId"] == str(parent.pk)
    assert item["description"] == SPEC
    assert item["spec"] is None
