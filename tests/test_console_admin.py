"""The Django admin: list pages stay bounded on huge tables; actions call the services once."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from orchestration.admin.base import COUNT_CAP, CappedCountPaginator
from orchestration.choices import ErrorCategory, EventKind
from orchestration.clock import db_now
from orchestration.models import (
    PRIORITY_RANK,
    ApiKey,
    FileLock,
    Priority,
    Worker,
    WorkerStatus,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
)
from orchestration.services.events import event_record
from tests.factories import WorkerFactory, WorkItemFactory

pytestmark = pytest.mark.django_db

HUGE = 100_000
# Session, user, the page's rows, a capped count, filters' lookups, date hierarchy: a handful
# of queries whatever the table size. The bound is generous; N+1 would blow it at once.
MAX_QUERIES = 10


def bulk_items(n: int) -> None:
    statuses = [WorkItemStatus.QUEUED, WorkItemStatus.COMPLETED, WorkItemStatus.FAILED]
    priorities = list(Priority)
    rows = [
        WorkItem(
            repo=f"acme/repo-{i % 7}",
            branch=f"bulk-{i}",
            spec="# bulk",
            status=statuses[i % 3],
            priority=priorities[i % 4],
            priority_rank=PRIORITY_RANK[priorities[i % 4]],
            error="boom" if i % 3 == 2 else "",
        )
        for i in range(n)
    ]
    WorkItem.objects.bulk_create(rows, batch_size=10_000)


def test_list_pages_with_100000_work_items_run_a_bounded_number_of_queries(
    superuser_client: Client, django_assert_max_num_queries: Any
) -> None:
    bulk_items(HUGE)
    item = WorkItem.objects.order_by("created_at").first()
    assert item is not None
    worker = WorkerFactory.create(work_item=item, status=WorkerStatus.FAILED)
    for i in range(300):
        event_record(work_item=item, worker=worker, kind="submitted", message=f"e{i}")
    FileLock.objects.create(repo=item.repo, path="a.py", worker=worker, expires_at=timezone.now())
    today = timezone.now()
    pages = [
        "/admin/orchestration/workitem/",
        "/admin/orchestration/workitem/?status__exact=queued",
        "/admin/orchestration/workitem/?priority__exact=high&type__exact=execution",
        "/admin/orchestration/workitem/?repo=acme/repo-3",
        "/admin/orchestration/workitem/?q=repo-4",
        "/admin/orchestration/workitem/?o=-6",
        "/admin/orchestration/workitem/?p=50",
        f"/admin/orchestration/workitem/?created_at__year={today.year}"
        f"&created_at__month={today.month}&created_at__day={today.day}",
        "/admin/orchestration/worker/",
        "/admin/orchestration/workitemevent/",
        "/admin/orchestration/workitemevent/?kind=submitted",
        "/admin/orchestration/filelock/",
        f"/admin/orchestration/workitem/{item.pk}/change/",
    ]
    for page in pages:
        with django_assert_max_num_queries(MAX_QUERIES):
            resp = superuser_client.get(page)
        assert resp.status_code == 200, page


def test_the_paginator_never_counts_past_its_cap() -> None:
    bulk_items(COUNT_CAP + 50)
    filtered = CappedCountPaginator(
        WorkItem.objects.filter(repo__startswith="acme/").order_by("pk"), 100
    )
    assert filtered.count == COUNT_CAP
    small = CappedCountPaginator(WorkItem.objects.filter(repo="acme/repo-1").order_by("pk"), 100)
    assert small.count == WorkItem.objects.filter(repo="acme/repo-1").count()


# --- actions ---------------------------------------------------------------------------------


def action(client: Client, model: str, name: str, pks: list[Any], **extra: Any) -> Any:
    data = {"action": name, "_selected_action": [str(pk) for pk in pks], **extra}
    return client.post(f"/admin/orchestration/{model}/", data, follow=True)


def test_cancel_asks_for_a_reason_then_cancels_once_with_an_audit_event(
    superuser_client: Client,
) -> None:
    items = [WorkItemFactory.create() for _ in range(2)]
    ask = action(superuser_client, "workitem", "cancel", [i.pk for i in items])
    assert "Reason" in ask.content.decode()
    assert not WorkItem.objects.filter(status=WorkItemStatus.CANCELLED).exists()
    form = {"apply": "yes", "reason": "duplicate work"}
    done = action(superuser_client, "workitem", "cancel", [i.pk for i in items], **form)
    assert "Cancel: 2 changed" in done.content.decode()
    again = action(superuser_client, "workitem", "cancel", [i.pk for i in items], **form)
    assert "Cancel: 0 changed, 2 already so" in again.content.decode()
    for item in items:
        event = WorkItemEvent.objects.get(work_item=item, kind="cancelled")
        assert (event.actor, event.message) == ("admin:admin", "duplicate work")


@pytest.mark.parametrize("name", ["requeue", "requeue_reset"])
def test_requeue_twice_has_one_effect(superuser_client: Client, name: str) -> None:
    item = WorkItemFactory.create(status=WorkItemStatus.FAILED, retry_count=3)
    ask = action(superuser_client, "workitem", name, [item.pk])
    assert 'id="apply-action"' in ask.content.decode()
    assert WorkItem.objects.get(pk=item.pk).status == WorkItemStatus.FAILED
    form = {"apply": "yes", "reason": "the flaky runner is fixed"}
    action(superuser_client, "workitem", name, [item.pk], **form)
    action(superuser_client, "workitem", name, [item.pk], **form)
    item.refresh_from_db()
    assert item.status == WorkItemStatus.QUEUED
    assert item.retry_count == (0 if name == "requeue_reset" else 3)
    event = WorkItemEvent.objects.get(work_item=item, kind="requeued")
    assert (event.actor, event.message) == ("admin:admin", "the flaky runner is fixed")


def test_requeue_of_a_running_item_is_refused(superuser_client: Client) -> None:
    item = WorkItemFactory.create(status=WorkItemStatus.IN_PROGRESS)
    resp = action(superuser_client, "workitem", "requeue", [item.pk], apply="yes")
    assert "1 refused" in resp.content.decode()
    item.refresh_from_db()
    assert item.status == WorkItemStatus.IN_PROGRESS


def test_setting_the_priority_twice_changes_it_once(superuser_client: Client) -> None:
    item = WorkItemFactory.create(priority=Priority.LOW, priority_rank=0)
    form = {"apply": "yes", "reason": "customer escalation"}
    superuser_client.defaults["HTTP_X_REQUEST_ID"] = "admin-1"  # on the event, as data
    action(superuser_client, "workitem", "priority_critical", [item.pk], **form)
    action(superuser_client, "workitem", "priority_critical", [item.pk], **form)
    item.refresh_from_db()
    assert (item.priority, item.priority_rank) == (Priority.CRITICAL, 3)
    event = WorkItemEvent.objects.get(work_item=item, kind="priority_changed")
    assert event.actor == "admin:admin"
    assert event.data == {"from": "low", "to": "critical", "requestId": "admin-1"}
    assert event.message == "priority low → critical: customer escalation"


def running_worker() -> tuple[WorkItem, Worker]:
    item = WorkItemFactory.create(status=WorkItemStatus.IN_PROGRESS)
    worker = WorkerFactory.create(work_item=item, status=WorkerStatus.RUNNING)
    WorkItem.objects.filter(pk=item.pk).update(worker=worker)
    return item, worker


def test_kill_asks_for_a_reason_records_it_and_retries_the_item(superuser_client: Client) -> None:
    item, worker = running_worker()
    ask = action(superuser_client, "worker", "kill", [worker.pk])
    assert 'id="apply-action"' in ask.content.decode()
    form = {"apply": "yes", "reason": "runaway loop"}
    action(superuser_client, "worker", "kill", [worker.pk], **form)
    again = action(superuser_client, "worker", "kill", [worker.pk], **form)
    assert "Kill: 0 changed, 1 already so" in again.content.decode()
    worker.refresh_from_db()
    item.refresh_from_db()
    assert worker.status == WorkerStatus.KILLED
    assert (item.status, item.retry_count, item.error) == (
        WorkItemStatus.QUEUED,
        1,
        "killed: runaway loop",
    )
    event = WorkItemEvent.objects.get(work_item=item, kind="retry_scheduled")
    assert event.actor == "admin:admin"
    assert "runaway loop" in event.message


def test_kill_and_fail_fails_the_item_and_an_empty_reason_is_manual_kill(
    superuser_client: Client,
) -> None:
    item, worker = running_worker()
    ask = action(superuser_client, "worker", "kill_and_fail", [worker.pk])
    assert 'id="apply-action"' in ask.content.decode()
    done = action(superuser_client, "worker", "kill_and_fail", [worker.pk], apply="yes", reason="")
    assert "Kill and fail: 1 changed" in done.content.decode()
    worker.refresh_from_db()
    item.refresh_from_db()
    assert worker.status == WorkerStatus.KILLED
    assert (item.status, item.retry_count) == (WorkItemStatus.FAILED, 0)
    assert item.error == "killed: Manual kill"
    event = WorkItemEvent.objects.get(work_item=item, kind="failed")
    assert event.actor == "admin:admin"


def test_show_logs_renders_the_tail_escaped(superuser_client: Client) -> None:
    worker = WorkerFactory.create(
        status=WorkerStatus.FAILED, log_tail="hello \x1b[32mgreen\x1b[0m <script>x</script>"
    )
    page = action(superuser_client, "worker", "show_logs", [worker.pk]).content.decode()
    assert "hello green" in page
    assert "<script>x</script>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page


def test_releasing_a_lock_frees_it_once_with_an_event(superuser_client: Client) -> None:
    worker = WorkerFactory.create(status=WorkerStatus.RUNNING)
    lock = FileLock.objects.create(
        repo="acme/x",
        path="src/a.py",
        worker=worker,
        expires_at=timezone.now() + dt.timedelta(minutes=5),
    )
    form = {"apply": "yes", "reason": "holder is wedged"}
    action(superuser_client, "filelock", "release", [lock.pk], **form)
    action(superuser_client, "filelock", "release", [lock.pk], **form)
    assert not FileLock.objects.exists()
    event = WorkItemEvent.objects.get(kind="lock_released")
    assert event.actor == "admin:admin"
    assert event.data["reason"] == "holder is wedged"


def test_an_api_key_is_shown_once_and_can_be_revoked(superuser_client: Client) -> None:
    resp = superuser_client.post("/admin/orchestration/apikey/add/", {"name": "ci"}, follow=True)
    page = resp.content.decode()
    assert "Copy it now, it is not shown again" in page
    key = ApiKey.objects.get(name="ci")
    assert (
        superuser_client.get("/admin/orchestration/apikey/")
        .content.decode()
        .count("not shown again")
        == 0
    )
    action(superuser_client, "apikey", "revoke", [key.pk], apply="yes", reason="leaked in CI")
    action(superuser_client, "apikey", "revoke", [key.pk], apply="yes", reason="again")
    key.refresh_from_db()
    assert key.revoked_at is not None
    # The second click has no effect and no entry.
    [entry] = LogEntry.objects.filter(object_id=str(key.pk), action_flag=CHANGE)
    assert (entry.user.get_username(), entry.get_change_message()) == (
        "admin",
        "Revoked: leaked in CI",
    )


@pytest.mark.parametrize(
    ("name", "enabled_after"),
    [("disable_tasks", False), ("enable_tasks", True), ("toggle_tasks", False)],
)
def test_beat_schedule_actions_ask_why_and_leave_a_history_entry(
    superuser_client: Client, name: str, enabled_after: bool
) -> None:
    every = IntervalSchedule.objects.create(every=5, period=IntervalSchedule.SECONDS)
    task = PeriodicTask.objects.create(
        name="probe", task="orchestration.sweep", interval=every, enabled=True
    )
    url = "/admin/django_celery_beat/periodictask/"
    ask = superuser_client.post(url, {"action": name, "_selected_action": [task.pk]})
    assert 'id="apply-action"' in ask.content.decode()
    assert PeriodicTask.objects.get(pk=task.pk).enabled is True

    superuser_client.post(
        url,
        {"action": name, "_selected_action": [task.pk], "apply": "yes", "reason": "maintenance"},
    )

    assert PeriodicTask.objects.get(pk=task.pk).enabled is enabled_after
    entry = LogEntry.objects.get(object_id=str(task.pk))
    assert entry.user.get_username() == "admin"
    state = "enabled" if enabled_after else "disabled"
    assert entry.get_change_message().endswith(f"(now {state}): maintenance")


def test_running_a_schedule_whose_task_does_not_exist_is_refused_without_a_history_entry(
    superuser_client: Client,
) -> None:
    every = IntervalSchedule.objects.create(every=5, period=IntervalSchedule.SECONDS)
    task = PeriodicTask.objects.create(name="ghost", task="no.such.task", interval=every)

    page = superuser_client.post(
        "/admin/django_celery_beat/periodictask/",
        {"action": "run_tasks", "_selected_action": [task.pk], "apply": "yes", "reason": "x"},
        follow=True,
    ).content.decode()

    assert "Not run: no such task no.such.task" in page
    assert not LogEntry.objects.filter(object_id=str(task.pk)).exists()


def test_an_action_on_all_matching_rows_carries_the_selection_not_thousands_of_ids(
    superuser_client: Client, settings: Any
) -> None:
    settings.MAX_QUEUED = settings.MAX_QUEUED_PER_REPO = 5_000  # the bounds are tested elsewhere
    # More than DATA_UPLOAD_MAX_NUMBER_FIELDS (1,000) hidden ids would be refused outright.
    items = WorkItemFactory.create_batch(1_010, status=WorkItemStatus.FAILED)
    base = {"action": "requeue", "_selected_action": [str(items[0].pk)], "select_across": "1"}

    ask = superuser_client.post("/admin/orchestration/workitem/?status__exact=failed", base)
    page = ask.content.decode()
    assert "1010 selected" in page
    assert page.count('name="_selected_action"') == 1

    superuser_client.post(
        "/admin/orchestration/workitem/?status__exact=failed",
        {**base, "apply": "yes", "reason": "runner fixed"},
    )
    assert WorkItem.objects.filter(status=WorkItemStatus.QUEUED).count() == 1_010


def test_one_click_handles_at_most_action_max_rows_and_says_so(
    superuser_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestration.admin import base as whim_admin

    monkeypatch.setattr(whim_admin, "ACTION_MAX", 3)
    items = WorkItemFactory.create_batch(5)
    base = {"action": "cancel", "_selected_action": [str(items[0].pk)], "select_across": "1"}

    ask = superuser_client.post("/admin/orchestration/workitem/", base).content.decode()
    assert "the first 3 of more selected" in ask
    done = superuser_client.post(
        "/admin/orchestration/workitem/", {**base, "apply": "yes"}, follow=True
    ).content.decode()

    assert "Cancel: 3 changed" in done and "run it again for the rest" in done
    assert WorkItem.objects.filter(status=WorkItemStatus.CANCELLED).count() == 3


def test_the_beat_schedules_are_in_the_admin(superuser_client: Client) -> None:
    resp = superuser_client.get("/admin/django_celery_beat/periodictask/")
    assert resp.status_code == 200


def test_a_worker_page_opens_with_its_log_and_link(superuser_client: Client) -> None:
    worker = WorkerFactory.create(log_tail="tail")
    page = superuser_client.get(f"/admin/orchestration/worker/{worker.pk}/change/")
    assert page.status_code == 200
    assert f"/work/{worker.work_item_id}/" in page.content.decode()
    assert Worker.objects.count() == 1


def test_a_work_items_row_cannot_be_edited_or_deleted_in_the_admin(
    superuser_client: Client,
) -> None:
    """The row is the job: it changes through the actions (the services), never by editing
    it behind the state machine's back."""
    item = WorkItemFactory.create(spec="# old")
    for i in range(250):
        event_record(work_item=item, kind="submitted", message=f"e{i}")
    page = superuser_client.get(f"/admin/orchestration/workitem/{item.pk}/change/")
    assert page.status_code == 200
    assert "events (latest 200)" in page.content.decode().lower()
    assert not page.context["adminform"].form.fields  # every field is read-only

    superuser_client.post(f"/admin/orchestration/workitem/{item.pk}/change/", {"spec": "# new"})
    item.refresh_from_db()
    assert item.spec == "# old"
    delete = superuser_client.get(f"/admin/orchestration/workitem/{item.pk}/delete/")
    assert delete.status_code == 403


def test_work_items_are_not_added_in_the_admin(superuser_client: Client) -> None:
    assert superuser_client.get("/admin/orchestration/workitem/add/").status_code == 403


def test_requeue_reset_in_the_admin_leaves_an_item_waiting_for_its_retry_alone(
    superuser_client: Client,
) -> None:
    later = db_now() + dt.timedelta(minutes=5)
    item = WorkItemFactory.create(retry_count=2, next_retry_at=later)
    form = {"apply": "yes", "reason": "try again"}
    action(superuser_client, "workitem", "requeue_reset", [item.pk], **form)
    item.refresh_from_db()
    assert (item.status, item.retry_count, item.next_retry_at) == ("queued", 2, later)
    assert not WorkItemEvent.objects.filter(work_item=item, kind="requeued").exists()


def test_the_event_kind_filter_offers_every_named_kind(superuser_client: Client) -> None:
    page = superuser_client.get("/admin/orchestration/workitemevent/").content.decode()
    for kind in EventKind.values:  # github_review and container_cleanup_failed included
        assert f"?kind={kind}" in page, kind


def test_the_error_category_filter_offers_named_and_recently_reported_categories(
    superuser_client: Client,
) -> None:
    WorkerFactory.create(error_category="TEST_FAILURE")
    page = superuser_client.get("/admin/orchestration/worker/").content.decode()
    for category in (*ErrorCategory.values, "TEST_FAILURE"):
        assert f"?error_category={category}" in page, category
