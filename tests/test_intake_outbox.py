"""The outbox of GitHub calls (intake/outbox.py) against the fake GitHub over real HTTP: one
row per key, one call on GitHub per row even when the first answer never arrived, failures
recorded on the item, due rows re-sent by the sweep, and a row in flight never delivered twice."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from intake import credentials
from intake.github import GitHubClient
from intake.models import GitHubAction, GitHubActionStatus
from intake.outbox import (
    Outcome,
    _handlers,
    action_handler_register,
    github_action_deliver,
    github_action_enqueue,
    github_actions_retry,
    github_actions_sweep,
    marked,
    marker,
)
from orchestration.choices import EventKind
from orchestration.models import WorkItemEvent
from orchestration.nudge import TaskName
from tests.factories import WorkItemFactory
from tests.fakes.github import FakeGitHub
from tests.helpers import task_mocks

REPO = "acme/widgets"
KIND = "test_comment"


def comment_handler(client: GitHubClient, action: GitHubAction) -> dict[str, Any]:
    """A comment posted once: the marker found on the issue means it is there already."""
    number = action.number or 0
    for comment in client.comments(number):
        if marked([comment.get("body")], action):
            return {"id": comment["id"], "html_url": comment["html_url"], "found": True}
    posted = client.comment_create(number, f"{action.payload['body']}\n\n{marker(action)}")
    return {"id": posted["id"], "html_url": posted["html_url"]}


@pytest.fixture
def github(settings: Any) -> Iterator[FakeGitHub]:
    fake = FakeGitHub().start()
    settings.GITHUB_API_URL = fake.url
    settings.GITHUB_TOKEN = "ghp_outbox0123456789abcdefghijklmnopqrst"
    settings.GITHUB_APP_ID = settings.GITHUB_APP_PRIVATE_KEY = ""
    settings.GITHUB_TIMEOUT = 0.5
    settings.GITHUB_ACTION_MAX_ATTEMPTS = 3
    credentials.loop_tokens_clear()
    action_handler_register(KIND, comment_handler)
    fake.add_issue(REPO, 3, "Widgets", labels=["whim"])
    try:
        yield fake
    finally:
        _handlers.pop(KIND, None)
        fake.stop()


def enqueue(key: str = "comment:1", **fields: Any) -> GitHubAction | None:
    return github_action_enqueue(
        key=key,
        kind=fields.pop("kind", KIND),
        repo=REPO,
        number=3,
        payload=fields.pop("payload", {"body": "PR: https://github.example/acme/widgets/pull/7"}),
        **fields,
    )


def make_due(action: GitHubAction) -> None:
    GitHubAction.objects.filter(pk=action.pk).update(next_attempt_at=timezone.now())


@pytest.mark.django_db
def test_enqueueing_a_key_twice_writes_one_row_and_one_nudge(
    django_capture_on_commit_callbacks: Any,
) -> None:
    with (
        task_mocks(TaskName.GITHUB_DELIVER) as sent,
        django_capture_on_commit_callbacks(execute=True),
    ):
        first = enqueue()
        second = enqueue(payload={"body": "something else"})

    assert first is not None and second is None
    assert GitHubAction.objects.count() == 1
    assert first.status == GitHubActionStatus.PENDING and first.payload["body"].startswith("PR:")
    sent[TaskName.GITHUB_DELIVER].assert_called_once_with(str(first.pk))


@pytest.mark.django_db
def test_a_delivery_posts_once_and_records_githubs_answer(github: FakeGitHub) -> None:
    action = enqueue()
    assert action is not None

    assert github_action_deliver(action_id=action.pk) == Outcome.DONE
    assert github_action_deliver(action_id=action.pk) == Outcome.SKIPPED  # a repeated nudge

    action.refresh_from_db()
    [comment] = github.comments[REPO][3]
    assert (action.status, action.attempts, action.result["id"]) == ("done", 1, comment["id"])
    assert marker(action) in comment["body"] and action.done_at is not None


@pytest.mark.django_db
def test_a_retry_after_a_timeout_finds_the_comment_instead_of_posting_twice(
    github: FakeGitHub,
) -> None:
    github.timeout_sleep = 1.0  # past GITHUB_TIMEOUT: GitHub stored it, the answer is lost
    github.fault("POST", r"/issues/3/comments$", "timeout_after_write")
    action = enqueue()
    assert action is not None

    first = github_action_deliver(action_id=action.pk)
    action.refresh_from_db()
    assert first == Outcome.RETRY and action.attempts == 1 and "no answer" in action.last_error
    assert action.next_attempt_at is not None and action.status == GitHubActionStatus.PENDING
    assert github_action_deliver(action_id=action.pk) == Outcome.SKIPPED  # not due yet
    make_due(action)
    second = github_action_deliver(action_id=action.pk)

    action.refresh_from_db()
    assert second == Outcome.DONE and action.result["found"] is True
    assert len(github.comments[REPO][3]) == 1


@pytest.mark.django_db
def test_a_permanent_refusal_fails_the_row_and_tells_the_item(
    github: FakeGitHub, settings: Any
) -> None:
    item = WorkItemFactory.create(repo=REPO)
    github.fault("POST", r"/comments$", 403)
    action = enqueue(work_item=item)
    assert action is not None

    assert github_action_deliver(action_id=action.pk) == Outcome.FAILED

    action.refresh_from_db()
    assert (action.status, action.attempts) == (GitHubActionStatus.FAILED, 1)
    assert "answered 403" in action.last_error and github.comments[REPO][3] == []
    [event] = WorkItemEvent.objects.filter(work_item=item, kind=EventKind.GITHUB_ACTION_FAILED)
    assert "GitHub refused it" in event.message and event.data["key"] == action.key
    assert settings.GITHUB_TOKEN not in action.last_error + event.message


@pytest.mark.django_db
def test_transient_failures_back_off_then_fail_after_the_last_attempt(
    github: FakeGitHub,
) -> None:
    item = WorkItemFactory.create(repo=REPO)
    github.fault("POST", r"/comments$", 502, times=3)
    action = enqueue(work_item=item)
    assert action is not None
    delays = []

    outcomes = []
    for _ in range(3):
        started = timezone.now()
        outcomes.append(github_action_deliver(action_id=action.pk))
        action.refresh_from_db()
        if action.next_attempt_at:
            delays.append(round((action.next_attempt_at - started).total_seconds()))
        make_due(action)

    assert outcomes == [Outcome.RETRY, Outcome.RETRY, Outcome.FAILED]
    assert delays[:2] == [30, 60]
    assert action.status == GitHubActionStatus.FAILED and action.attempts == 3
    [event] = WorkItemEvent.objects.filter(work_item=item, kind=EventKind.GITHUB_ACTION_FAILED)
    assert "3 attempts failed" in event.message


@pytest.mark.django_db
def test_a_rate_limit_waits_for_the_reset_without_spending_an_attempt(
    github: FakeGitHub,
) -> None:
    github.rate_limit_remaining = 0
    github.rate_limit_reset = time.time() + 600
    action = enqueue()
    assert action is not None

    assert github_action_deliver(action_id=action.pk) == Outcome.RATE_LIMITED

    action.refresh_from_db()
    reset = dt.datetime.fromtimestamp(int(github.rate_limit_reset), dt.UTC)
    assert (action.status, action.attempts, action.next_attempt_at) == ("pending", 0, reset)


@pytest.mark.django_db
def test_the_sweep_nudges_the_due_rows_only() -> None:
    old = timezone.now() - dt.timedelta(minutes=5)
    lost = enqueue("lost")  # its nudge never arrived
    backed_off = enqueue("backed-off")  # its backoff has passed
    fresh = enqueue("fresh")  # its own nudge is on the way
    waiting = enqueue("waiting")  # its backoff has not passed
    done = enqueue("done")
    assert lost and backed_off and fresh and waiting and done
    GitHubAction.objects.filter(pk__in=[lost.pk, backed_off.pk, waiting.pk, done.pk]).update(
        created_at=old
    )
    GitHubAction.objects.filter(pk=backed_off.pk).update(next_attempt_at=old)
    GitHubAction.objects.filter(pk=waiting.pk).update(
        next_attempt_at=timezone.now() + dt.timedelta(minutes=5)
    )
    GitHubAction.objects.filter(pk=done.pk).update(status=GitHubActionStatus.DONE)

    with task_mocks(TaskName.GITHUB_DELIVER) as sent:
        counts = github_actions_sweep()

    nudged = {c.args[0] for c in sent[TaskName.GITHUB_DELIVER].call_args_list}
    assert nudged == {str(lost.pk), str(backed_off.pk)}
    assert counts == {"due": 2, "nudged": 2}


@pytest.mark.django_db
def test_retry_now_puts_a_failed_row_back_due_at_once(
    github: FakeGitHub, django_capture_on_commit_callbacks: Any
) -> None:
    action = enqueue()
    assert action is not None
    GitHubAction.objects.filter(pk=action.pk).update(
        status=GitHubActionStatus.FAILED, attempts=3, next_attempt_at=timezone.now()
    )

    with (
        task_mocks(TaskName.GITHUB_DELIVER) as sent,
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert github_actions_retry(action_ids=[action.pk]) == 1

    sent[TaskName.GITHUB_DELIVER].assert_called_once_with(str(action.pk))
    assert github_action_deliver(action_id=action.pk) == Outcome.DONE


@pytest.mark.django_db(transaction=True)
def test_a_row_in_flight_is_skipped_by_another_deliverer(github: FakeGitHub) -> None:
    action = enqueue()
    assert action is not None
    holding, release = threading.Event(), threading.Event()

    def first_deliverer() -> None:
        try:
            with transaction.atomic():
                GitHubAction.objects.select_for_update().get(pk=action.pk)
                holding.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=first_deliverer)
    thread.start()
    try:
        assert holding.wait(10)
        assert github_action_deliver(action_id=action.pk) == Outcome.SKIPPED
    finally:
        release.set()
        thread.join(10)
    assert github.comments[REPO][3] == []
    assert github_action_deliver(action_id=action.pk) == Outcome.DONE
