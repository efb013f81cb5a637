"""The operator's console pages: access, CSRF, bulk actions, escaping and "why not running"."""

from __future__ import annotations

import datetime as dt
import html
import re
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from orchestration.clock import db_now
from orchestration.models import (
    DailyUsage,
    DispatchState,
    FileLock,
    Worker,
    WorkerStatus,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
)
from orchestration.services.events import event_record
from reviews.models import PRReview
from tests.factories import WorkerFactory, WorkItemFactory, running_item
from tests.helpers import logged_in_client

pytestmark = pytest.mark.django_db

XSS = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
ANSI = "\x1b[31mred alert\x1b[0m \x1b]0;title\x07done"

PAGES = ["/", "/dashboard/", "/work/new/", "/queue/", "/workers/", "/locks/"]


@pytest.fixture
def busy_console() -> dict[str, Any]:
    """A bit of everything: waiting, running, finished items, a lock, events, a review."""
    queued = WorkItemFactory.create(repo="acme/widgets")
    item, worker = running_item(repo="acme/gadgets")
    FileLock.objects.create(
        repo="acme/gadgets",
        path="src/app.py",
        worker=worker,
        expires_at=timezone.now() + dt.timedelta(minutes=10),
    )
    done = WorkItemFactory.create(
        status=WorkItemStatus.COMPLETED,
        completed_at=timezone.now(),
        pr_url="https://github.com/acme/widgets/pull/7",
        pr_number=7,
        commit_sha="abc1234",
    )
    PRReview.objects.create(
        work_item=done,
        repo=done.repo,
        pr_number=7,
        model_used="reviewer-1",
        findings=[{"severity": "high", "file": "a.py", "line": 3, "message": "unchecked input"}],
    )
    event_record(work_item=queued, kind="submitted", to_status="queued", actor="user:grace")
    return {"queued": queued, "running": item, "worker": worker, "done": done}


# --- access ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_for_staff(
    staff_client: Client, busy_console: dict[str, Any], path: str
) -> None:
    resp = staff_client.get(path)
    assert resp.status_code == 200
    assert "<html" in resp.content.decode()


def test_each_work_item_page_renders_for_staff(
    staff_client: Client, busy_console: dict[str, Any]
) -> None:
    for key in ("queued", "running", "done"):
        resp = staff_client.get(f"/work/{busy_console[key].pk}/")
        assert resp.status_code == 200, key


@pytest.mark.parametrize("path", [*PAGES, "/work/{id}/", "/work/{id}/log/"])
def test_an_anonymous_visitor_is_sent_to_the_login_page(
    anonymous_client: Client, path: str
) -> None:
    item = WorkItemFactory.create()
    resp = anonymous_client.get(path.format(id=item.pk))
    assert resp.status_code == 302
    assert resp["Location"].startswith("/accounts/login/?next=")


@pytest.mark.parametrize(
    "path",
    [
        "/queue/bulk/",
        "/work/{id}/cancel/",
        "/work/{id}/requeue/",
        "/workers/{worker}/kill/",
        "/work/new/branch-preview/",
    ],
)
def test_an_anonymous_post_is_sent_to_log_in_and_changes_nothing(
    anonymous_client: Client, path: str
) -> None:
    item, worker = running_item()
    resp = anonymous_client.post(
        path.format(id=item.pk, worker=worker.pk),
        {"op": "cancel:matching", "confirm": "yes", "status": "all"},
    )
    assert resp.status_code == 302
    assert resp["Location"].startswith("/accounts/login/")
    item.refresh_from_db()
    assert item.status == WorkItemStatus.IN_PROGRESS
    assert not WorkItemEvent.objects.exists()


@pytest.mark.parametrize("path", ["/admin/", "/admin/orchestration/workitem/"])
def test_a_user_who_is_not_staff_cannot_reach_the_admin(user_client: Client, path: str) -> None:
    resp = user_client.get(path)
    assert resp.status_code == 302
    assert resp["Location"].startswith("/admin/login/")


def test_staff_reach_the_admin(staff: Any) -> None:
    staff.is_superuser = True
    staff.save()
    client = logged_in_client(staff)
    assert client.get("/admin/").status_code == 200


# --- CSRF ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/work/new/",
        "/queue/bulk/",
        "/work/{id}/cancel/",
        "/work/{id}/requeue/",
        "/workers/{worker}/kill/",
        "/work/new/branch-preview/",
    ],
)
def test_a_post_without_a_csrf_token_is_refused(staff_csrf_client: Client, path: str) -> None:
    item, worker = running_item()
    resp = staff_csrf_client.post(
        path.format(id=item.pk, worker=worker.pk),
        {
            "repo": "acme/widgets",
            "spec": "# x",
            "op": "cancel:selected",
            "ids": [str(item.pk)],
            "confirm": "yes",
        },
    )
    assert resp.status_code == 403
    item.refresh_from_db()
    worker.refresh_from_db()
    assert (item.status, worker.status) == (WorkItemStatus.IN_PROGRESS, WorkerStatus.RUNNING)
    assert WorkItem.objects.count() == 1
    assert not WorkItemEvent.objects.exists()


def test_the_console_pages_carry_a_csrf_token_for_htmx(staff_client: Client) -> None:
    page = staff_client.get("/queue/").content.decode()
    assert 'hx-headers=\'{"X-CSRFToken": "' in page
    assert 'name="csrfmiddlewaretoken"' in page


def test_an_htmx_post_with_the_header_token_is_accepted(staff_csrf_client: Client) -> None:
    token = str(staff_csrf_client.get("/work/new/").context["csrf_token"])
    resp = staff_csrf_client.post(
        "/work/new/branch-preview/",
        {"spec": "# Add a login page"},
        HTTP_X_CSRFTOKEN=token,
        HTTP_HX_REQUEST="true",
    )
    assert resp.status_code == 200
    assert "add-a-login-page" in resp.content.decode()


# --- submit: branch preview --------------------------------------------------------------------


def test_the_branch_preview_derives_the_branch_from_the_spec(staff_client: Client) -> None:
    resp = staff_client.post("/work/new/branch-preview/", {"spec": "intro\n## Fix the <b>bug"})
    page = resp.content.decode()
    assert '<code id="branch-preview-value">fix-the-bbug</code>' in page
    assert "derived from the spec" in page


def test_the_branch_preview_shows_a_given_branch_or_why_it_is_refused(
    staff_client: Client,
) -> None:
    ok = staff_client.post("/work/new/branch-preview/", {"branch": "feature/x", "spec": "# y"})
    assert '<code id="branch-preview-value">feature/x</code>' in ok.content.decode()
    bad = staff_client.post("/work/new/branch-preview/", {"branch": "a..b"}).content.decode()
    assert "branch must not contain &#x27;..&#x27;" in bad


def test_the_form_page_wires_the_preview(staff_client: Client) -> None:
    page = staff_client.get("/work/new/").content.decode()
    assert 'hx-post="/work/new/branch-preview/"' in page
    assert "orchestration/htmx.min.js" in page


# --- queue -----------------------------------------------------------------------------------


def test_the_queue_filters_live_in_the_query_string(staff_client: Client) -> None:
    WorkItemFactory.create(repo="acme/widgets", branch="in-view")
    WorkItemFactory.create(repo="acme/other", branch="other-repo")
    WorkItemFactory.create(repo="acme/widgets", branch="finished", status=WorkItemStatus.FAILED)
    page = staff_client.get("/queue/?repo=acme/widgets").content.decode()
    assert "in-view" in page
    assert "other-repo" not in page
    assert "finished" not in page
    failed = staff_client.get("/queue/?repo=acme/widgets&status=failed").content.decode()
    assert "finished" in failed
    assert "in-view" not in failed
    assert '<option value="failed" selected>' in failed


def test_the_queue_is_paginated_by_cursor(staff_client: Client) -> None:
    for i in range(7):
        WorkItemFactory.create(branch=f"page-item-{i}")
    first = staff_client.get("/queue/?limit=5")
    page = first.content.decode()
    assert page.count('name="ids"') == 5
    next_url = re.search(
        r'href="(\?[^"]*cursor=[^"]+)" class="button secondary" id="next-page"', page
    )
    assert next_url is not None
    second = staff_client.get("/queue/" + next_url.group(1).replace("&amp;", "&")).content.decode()
    assert second.count('name="ids"') == 2
    assert 'id="next-page"' not in second


def test_a_bad_cursor_or_filter_shows_an_error_state(staff_client: Client) -> None:
    resp = staff_client.get("/queue/?cursor=garbage")
    assert resp.status_code == 400
    assert "cursor is not a cursor this API issued" in resp.content.decode()
    resp = staff_client.get("/queue/?status=bogus")
    assert resp.status_code == 400
    assert 'id="queue-error"' in resp.content.decode()


def test_an_empty_queue_says_so(staff_client: Client) -> None:
    page = staff_client.get("/queue/").content.decode()
    assert 'id="queue-empty"' in page


def test_bulk_cancel_of_the_selected_confirms_the_count_then_acts_exactly_once(
    staff_client: Client,
) -> None:
    picked = [WorkItemFactory.create() for _ in range(3)]
    spared = WorkItemFactory.create()
    ids = [str(i.pk) for i in picked]
    confirm = staff_client.post("/queue/bulk/", {"op": "cancel:selected", "ids": ids})
    assert confirm.status_code == 200
    page = confirm.content.decode()
    assert "<strong>3</strong> work items" in page
    assert not WorkItem.objects.filter(status=WorkItemStatus.CANCELLED).exists()

    form = {"action": "cancel", "scope": "selected", "ids": ids, "confirm": "yes", "asof": asof()}
    first = staff_client.post("/queue/bulk/", form, follow=True)
    assert "Cancel: 3 changed, 0 already done, 0 refused." in first.content.decode()
    again = staff_client.post("/queue/bulk/", form, follow=True)  # the double click
    assert "Cancel: 0 changed" in again.content.decode()

    for item in picked:
        item.refresh_from_db()
        assert item.status == WorkItemStatus.CANCELLED
        events = WorkItemEvent.objects.filter(work_item=item, kind="cancelled")
        assert events.count() == 1
        assert events.get().actor == "user:grace"
    spared.refresh_from_db()
    assert spared.status == WorkItemStatus.QUEUED


def test_bulk_cancel_of_everything_matching_the_filter(staff_client: Client) -> None:
    match = [WorkItemFactory.create(repo="acme/widgets") for _ in range(4)]
    other = WorkItemFactory.create(repo="acme/other")
    done = WorkItemFactory.create(repo="acme/widgets", status=WorkItemStatus.COMPLETED)
    confirm = staff_client.post(
        "/queue/bulk/", {"op": "cancel:matching", "repo": "acme/widgets", "status": "all"}
    )
    assert "<strong>4</strong> work items matching the filter" in confirm.content.decode()
    staff_client.post(
        "/queue/bulk/",
        {
            "action": "cancel",
            "scope": "matching",
            "repo": "acme/widgets",
            "status": "all",
            "confirm": "yes",
            "asof": asof(),
        },
    )
    assert all(WorkItem.objects.get(pk=i.pk).status == WorkItemStatus.CANCELLED for i in match)
    assert WorkItem.objects.get(pk=other.pk).status == WorkItemStatus.QUEUED
    assert WorkItem.objects.get(pk=done.pk).status == WorkItemStatus.COMPLETED


def test_bulk_requeue_twice_requeues_each_item_once(staff_client: Client) -> None:
    failed = [WorkItemFactory.create(status=WorkItemStatus.FAILED, retry_count=3) for _ in range(2)]
    form = {
        "action": "requeue_reset",
        "scope": "matching",
        "status": "failed",
        "confirm": "yes",
        "asof": asof(),
    }
    staff_client.post("/queue/bulk/", form)
    selected = {
        "action": "requeue_reset",
        "scope": "selected",
        "ids": [str(i.pk) for i in failed],
        "confirm": "yes",
        "asof": asof(),
    }
    staff_client.post("/queue/bulk/", selected)
    for item in failed:
        item.refresh_from_db()
        assert (item.status, item.retry_count) == (WorkItemStatus.QUEUED, 0)
        assert WorkItemEvent.objects.filter(work_item=item, kind="requeued").count() == 1


def asof() -> str:
    """What the confirmation page carries: the moment the count was shown."""
    return db_now().isoformat()


def test_everything_matching_means_what_the_confirmation_counted(staff_client: Client) -> None:
    shown = [WorkItemFactory.create(repo="acme/widgets") for _ in range(2)]
    confirm = staff_client.post(
        "/queue/bulk/", {"op": "cancel:matching", "repo": "acme/widgets", "status": "all"}
    ).content.decode()
    assert "<strong>2</strong> work items matching the filter" in confirm
    carried = re.search(r'name="asof" value="([^"]+)"', confirm)
    assert carried is not None
    late = WorkItemFactory.create(repo="acme/widgets")  # submitted while the operator reads

    done = staff_client.post(
        "/queue/bulk/",
        {
            "action": "cancel",
            "scope": "matching",
            "repo": "acme/widgets",
            "status": "all",
            "confirm": "yes",
            "asof": html.unescape(carried.group(1)),
        },
        follow=True,
    )

    assert "Cancel: 2 changed" in done.content.decode()
    assert all(WorkItem.objects.get(pk=i.pk).status == WorkItemStatus.CANCELLED for i in shown)
    assert WorkItem.objects.get(pk=late.pk).status == WorkItemStatus.QUEUED


@pytest.mark.parametrize("carried", [None, "", "yesterday", "2026-13-45T00:00:00+00:00"])
def test_a_confirmation_without_its_moment_changes_nothing(
    staff_client: Client, carried: str | None
) -> None:
    item = WorkItemFactory.create()
    form = {"action": "cancel", "scope": "matching", "status": "all", "confirm": "yes"}
    if carried is not None:
        form["asof"] = carried

    page = staff_client.post("/queue/bulk/", form, follow=True).content.decode()

    assert "start the bulk action again" in page
    assert WorkItem.objects.get(pk=item.pk).status == WorkItemStatus.QUEUED


def test_a_bulk_action_with_nothing_eligible_says_so(staff_client: Client) -> None:
    item = WorkItemFactory.create(status=WorkItemStatus.COMPLETED)
    page = staff_client.post(
        "/queue/bulk/", {"op": "cancel:selected", "ids": [str(item.pk)]}
    ).content.decode()
    assert 'id="confirm-none"' in page


# --- one work item -----------------------------------------------------------------------------


def test_cancel_from_the_item_page_records_who_and_why_once(staff_client: Client) -> None:
    item, worker = running_item()
    staff_client.post(f"/work/{item.pk}/cancel/", {"reason": "wrong repo"})
    again = staff_client.post(f"/work/{item.pk}/cancel/", {"reason": "wrong repo"}, follow=True)
    assert "It was already cancelled." in again.content.decode()
    item.refresh_from_db()
    worker.refresh_from_db()
    assert (item.status, worker.status) == (WorkItemStatus.CANCELLED, WorkerStatus.KILLED)
    event = WorkItemEvent.objects.get(work_item=item, kind="cancelled")
    assert (event.actor, event.message) == ("user:grace", "wrong repo")


def test_requeue_from_the_item_page_happens_once(staff_client: Client) -> None:
    item = WorkItemFactory.create(status=WorkItemStatus.FAILED, retry_count=2)
    staff_client.post(f"/work/{item.pk}/requeue/", {"reset_retries": "1"})
    again = staff_client.post(f"/work/{item.pk}/requeue/", {"reset_retries": "1"}, follow=True)
    assert "It is already queued." in again.content.decode()
    item.refresh_from_db()
    assert (item.status, item.retry_count) == (WorkItemStatus.QUEUED, 0)
    assert WorkItemEvent.objects.filter(work_item=item, kind="requeued").count() == 1


def test_the_item_page_shows_result_review_and_attempts(
    staff_client: Client, busy_console: dict[str, Any]
) -> None:
    done = busy_console["done"]
    page = staff_client.get(f"/work/{done.pk}/").content.decode()
    assert '<a href="https://github.com/acme/widgets/pull/7"' in page
    assert "abc1234" in page
    assert "unchecked input" in page
    assert "<code>a.py:3</code>" in page
    assert 'id="requeue-button"' in page
    assert 'id="cancel-button"' not in page
    # Finished: the live part no longer polls.
    assert 'hx-trigger="every 2s' not in page


def test_an_htmx_poll_gets_only_the_live_fragment(staff_client: Client) -> None:
    item, _ = running_item()
    resp = staff_client.get(f"/work/{item.pk}/", HTTP_HX_REQUEST="true")
    page = resp.content.decode()
    assert page.lstrip().startswith('<div id="work-live"')
    assert "<html" not in page
    assert '<td id="status">in_progress</td>' in page
    assert 'hx-trigger="every 2s' in page


def test_a_pr_url_that_is_not_http_is_never_a_link(staff_client: Client) -> None:
    item = WorkItemFactory.create(status=WorkItemStatus.COMPLETED, pr_url="javascript:alert(1)")
    page = staff_client.get(f"/work/{item.pk}/").content.decode()
    assert 'href="javascript:' not in page


def test_the_log_tail_comes_from_the_runtime_with_ansi_stripped_and_markup_escaped(
    staff_client: Client,
) -> None:
    item, worker = running_item()
    Worker.objects.filter(pk=worker.pk).update(log_tail=f"step 1\n{ANSI}\n{XSS}\n")
    page = staff_client.get(f"/work/{item.pk}/log/").content.decode()
    assert "red alert" in page
    assert "title" not in page.split('id="log-text"', 1)[1]
    assert "\x1b" not in page
    assert XSS not in page
    assert ESCAPED in page
    assert 'hx-trigger="every 3s"' in page
    assert "live from the container" in page


def test_a_finished_attempts_log_comes_from_the_worker_row(staff_client: Client) -> None:
    item = WorkItemFactory.create(status=WorkItemStatus.FAILED)
    WorkerFactory.create(
        work_item=item, status=WorkerStatus.FAILED, log_tail="last words\n", container_id=""
    )
    page = staff_client.get(f"/work/{item.pk}/log/").content.decode()
    assert "last words" in page
    assert "kept on the worker row" in page
    assert "every 3s" not in page  # a finished item stops polling


def test_no_attempt_means_an_empty_log_state(staff_client: Client) -> None:
    item = WorkItemFactory.create()
    page = staff_client.get(f"/work/{item.pk}/log/").content.decode()
    assert "No attempt has started" in page


def test_errors_events_and_attempts_are_escaped_and_ansi_free(staff_client: Client) -> None:
    item = WorkItemFactory.create(
        status=WorkItemStatus.FAILED, error=f"boom {XSS} {ANSI}", branch="b"
    )
    WorkerFactory.create(work_item=item, status=WorkerStatus.FAILED, error=f"w {XSS} {ANSI}")
    event_record(work_item=item, kind="failed", message=f"e {XSS} {ANSI}")
    page = staff_client.get(f"/work/{item.pk}/").content.decode()
    assert XSS not in page
    assert "\x1b" not in page
    assert page.count(ESCAPED) == 3
    assert "red alert" in page


def test_a_100000_character_spec_is_clipped_with_a_show_all_link(staff_client: Client) -> None:
    spec = "# Big\n" + ("x" * 99_990) + "THE-END"
    item = WorkItemFactory.create(spec=spec)
    page = staff_client.get(f"/work/{item.pk}/").content.decode()
    assert "THE-END" not in page
    assert 'id="spec-show-all"' in page
    full = staff_client.get(f"/work/{item.pk}/?full=spec").content.decode()
    assert "THE-END" in full


def test_a_1000_line_error_is_clipped_with_a_show_all_link(staff_client: Client) -> None:
    error = "\n".join(f"line {i}: traceback frame" for i in range(1000))
    item = WorkItemFactory.create(status=WorkItemStatus.FAILED, error=error)
    page = staff_client.get(f"/work/{item.pk}/").content.decode()
    assert "line 0: traceback" in page
    assert "line 999: traceback" not in page
    assert 'id="error-show-all"' in page
    assert (
        "line 999: traceback" in staff_client.get(f"/work/{item.pk}/?full=error").content.decode()
    )


# --- why is this not running? ------------------------------------------------------------------


def why(client: Client, item: WorkItem) -> str:
    page = client.get(f"/work/{item.pk}/").content.decode()
    return " ".join(re.findall(r'<div class="callout" id="why">(.*?)</div>', page, re.S))


def test_why_waiting_for_capacity(staff_client: Client, settings: Any) -> None:
    settings.MAX_WORKERS = 1
    running_item()
    item = WorkItemFactory.create()
    assert "Waiting for capacity: 1 of 1 workers are busy." in why(staff_client, item)


def test_why_cooling_down_until_a_time(staff_client: Client, settings: Any) -> None:
    settings.COOLDOWN_SECONDS = 600
    DispatchState.objects.update_or_create(pk=1, defaults={"last_spawn_at": timezone.now()})
    item = WorkItemFactory.create()
    text = why(staff_client, item)
    assert "Cooling down: the next attempt may start at " in text
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", text)


def test_why_budget_exhausted_until_midnight(staff_client: Client, settings: Any) -> None:
    settings.DAILY_BUDGET = 2
    DailyUsage.objects.create(date=timezone.now().date(), spawns=2)
    item = WorkItemFactory.create()
    text = why(staff_client, item)
    assert "Daily budget exhausted (2 of 2 attempts today) until " in text
    assert "00:00:00" in text


def test_why_retry_scheduled(staff_client: Client) -> None:
    item = WorkItemFactory.create(
        retry_count=1, next_retry_at=timezone.now() + dt.timedelta(minutes=5)
    )
    assert "Retry 1 of 3 is scheduled at " in why(staff_client, item)


def test_why_blocked_by_a_lock_held_by_another_worker(staff_client: Client) -> None:
    _, holder = running_item(repo="acme/widgets")
    item, worker = running_item(repo="acme/widgets")
    event_record(
        work_item=item,
        worker=worker,
        kind="lock_blocked",
        message="src/app.py",
        data={"files": ["src/app.py"], "holder": str(holder.pk)},
    )
    text = why(staff_client, item)
    assert f"Blocked by a lock held by worker {holder.pk} on src/app.py" in text
    # Once it gets its locks, it is no longer blocked.
    event_record(work_item=item, worker=worker, kind="locks_acquired", data={"holder": None})
    assert why(staff_client, item) == ""


def test_why_ahead_in_the_queue_and_next_in_line(staff_client: Client) -> None:
    first = WorkItemFactory.create()
    second = WorkItemFactory.create()
    assert "1 item ahead of it in the queue" in why(staff_client, second)
    assert "It is next in line" in why(staff_client, first)


def test_why_generating_and_assigned(staff_client: Client) -> None:
    generating = WorkItemFactory.create(status=WorkItemStatus.GENERATING, spec="", description="d")
    assert "spec is being generated" in why(staff_client, generating)
    assigned = WorkItemFactory.create(status=WorkItemStatus.ASSIGNED)
    worker = WorkerFactory.create(work_item=assigned)
    WorkItem.objects.filter(pk=assigned.pk).update(worker=worker)
    assert f"Worker {worker.pk} was assigned" in why(staff_client, assigned)


def test_a_running_item_has_no_why(staff_client: Client) -> None:
    item, _ = running_item()
    assert why(staff_client, item) == ""


# --- workers, locks, dashboard ----------------------------------------------------------------


def test_the_workers_page_shows_heartbeat_progress_and_kills_with_a_reason(
    staff_client: Client,
) -> None:
    item, worker = running_item(max_iterations=10, iteration=3)
    Worker.objects.filter(pk=worker.pk).update(
        last_heartbeat=timezone.now() - dt.timedelta(seconds=42)
    )
    page = staff_client.get("/workers/").content.decode()
    assert "3 / 10" in page
    assert '<progress max="100" value="30"' in page
    assert re.search(r"4[2-9] s ago", page)
    assert ">Kill and fail</button>" in page
    done = staff_client.post(f"/workers/{worker.pk}/kill/", {"reason": "runaway"}, follow=True)
    assert "killed; its item is retried unless out of retries." in done.content.decode()
    again = staff_client.post(f"/workers/{worker.pk}/kill/", {"reason": "runaway"}, follow=True)
    assert "It was already killed." in again.content.decode()
    worker.refresh_from_db()
    item.refresh_from_db()
    assert worker.status == WorkerStatus.KILLED
    assert (item.status, item.retry_count, item.error) == (
        WorkItemStatus.QUEUED,
        1,
        "killed: runaway",
    )
    event = WorkItemEvent.objects.get(work_item=item, kind="retry_scheduled")
    assert event.actor == "user:grace"
    assert "runaway" in event.message


def test_kill_and_fail_from_the_workers_page_fails_the_item(staff_client: Client) -> None:
    item, worker = running_item()
    # The "Kill and fail" button sends retry=false with the form's (empty) reason.
    done = staff_client.post(
        f"/workers/{worker.pk}/kill/", {"reason": "", "retry": "false"}, follow=True
    )
    assert "killed; its item failed." in done.content.decode()
    worker.refresh_from_db()
    item.refresh_from_db()
    assert worker.status == WorkerStatus.KILLED
    assert (item.status, item.retry_count) == (WorkItemStatus.FAILED, 0)
    assert item.error == "killed: Manual kill"
    assert WorkItemEvent.objects.get(work_item=item, kind="failed").actor == "user:grace"


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"reason": "x" * 1001}, "reason"),
        ({"retry": "maybe"}, "must be true or false"),
    ],
)
def test_a_bad_kill_form_kills_nothing_and_says_why(
    staff_client: Client, form: dict[str, str], message: str
) -> None:
    _, worker = running_item()
    page = staff_client.post(f"/workers/{worker.pk}/kill/", form, follow=True).content.decode()
    assert "Invalid request" in page and message in page
    worker.refresh_from_db()
    assert worker.status == WorkerStatus.RUNNING


def test_empty_workers_and_locks_pages(staff_client: Client) -> None:
    assert 'id="no-active-workers"' in staff_client.get("/workers/").content.decode()
    assert 'id="no-locks"' in staff_client.get("/locks/").content.decode()


def test_the_locks_page_names_holder_and_expiry(
    staff_client: Client, busy_console: dict[str, Any]
) -> None:
    page = staff_client.get("/locks/").content.decode()
    assert "src/app.py" in page
    assert str(busy_console["worker"].pk)[:8] in page
    assert f"/work/{busy_console['running'].pk}/" in page


def test_the_dashboard_shows_counts_charts_and_flower(staff_client: Client, settings: Any) -> None:
    settings.MAX_WORKERS = 4
    settings.FLOWER_URL = "http://flower.example/"
    running_item()
    now = timezone.now()
    for _ in range(3):
        WorkItemFactory.create(status=WorkItemStatus.COMPLETED, completed_at=now)
    WorkItemFactory.create(status=WorkItemStatus.FAILED, completed_at=now)
    queued = WorkItemFactory.create()
    event_record(work_item=queued, kind="submitted", to_status="queued")
    page = staff_client.get("/").content.decode()
    assert '<div class="value" id="active-workers">1 / 4</div>' in page
    assert '<div class="value" id="queue-depth">1</div>' in page
    assert "success rate 75.0%" in page
    assert page.count('<svg class="chart"') == 2
    assert "3 completed, 1 failed" in page
    assert 'href="http://flower.example/"' in page


def test_the_dashboard_polls_a_fragment(staff_client: Client) -> None:
    resp = staff_client.get("/dashboard/", HTTP_HX_REQUEST="true")
    assert "<html" not in resp.content.decode()
    assert 'class="cards"' in resp.content.decode()


@pytest.mark.parametrize(
    ("runtime", "says"),
    [("local", "not isolated in containers"), ("fake", "no agent runs")],
)
def test_every_page_says_when_agents_are_not_isolated(
    staff_client: Client, settings: Any, runtime: str, says: str
) -> None:
    settings.WHIM_RUNTIME = runtime
    for path in ("/", "/queue/", "/workers/"):
        page = staff_client.get(path).content.decode()
        assert 'id="runtime-warning"' in page and says in page, path


def test_the_docker_runtime_shows_no_isolation_warning(staff_client: Client, settings: Any) -> None:
    settings.WHIM_RUNTIME = "docker"
    assert b'id="runtime-warning"' not in staff_client.get("/").content


def test_the_queue_offers_every_bulk_action_for_the_selected_and_for_all_matching(
    staff_client: Client,
) -> None:
    page = staff_client.get("/queue/?status=failed").content.decode()
    for action in ("cancel", "requeue", "requeue_reset"):
        for scope in ("selected", "matching"):
            assert f'value="{action}:{scope}"' in page, (action, scope)


def test_requeue_from_the_console_leaves_an_item_waiting_for_its_retry_alone(
    staff_client: Client,
) -> None:
    later = db_now() + dt.timedelta(minutes=5)
    item = WorkItemFactory.create(retry_count=2, next_retry_at=later)

    page = staff_client.post(f"/work/{item.pk}/requeue/", {"reset_retries": "1"}, follow=True)
    staff_client.post(
        "/queue/bulk/",
        {"action": "requeue_reset", "scope": "selected", "ids": [str(item.pk)], "confirm": "yes"},
    )

    assert "It is already queued." in page.content.decode()
    item.refresh_from_db()
    assert (item.retry_count, item.next_retry_at) == (2, later)
    assert not WorkItemEvent.objects.filter(work_item=item, kind="requeued").exists()
