"""The console in a real browser: Playwright driving Debian's Chromium against a live server.

Playwright's own browser download does not work offline, so this uses ``/usr/bin/chromium``
(the Debian ``chromium`` package, installed by ``scripts/bootstrap.sh``); without it the tests
fail (they are never skipped). Screenshots of every page land in ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import playwright.sync_api as playwright_api
import pytest
from django.utils import timezone

from orchestration.models import (
    FileLock,
    Worker,
    WorkerStatus,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
)
from orchestration.services.events import event_record
from tests.factories import WorkerFactory, WorkItemFactory

CHROMIUM = os.environ.get("WHIM_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "browser-pw-1234"
# How Chromium words every Content-Security-Policy refusal in the page's console.
CSP_REFUSAL = "Content Security Policy"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not shutil.which(CHROMIUM):  # make test installs it (scripts/bootstrap.sh)
        pytest.fail(f"{CHROMIUM} is not installed: run scripts/bootstrap.sh")
    # Playwright's sync API runs an event loop in this thread; Django's ORM, used by the test
    # body between browser steps, would otherwise refuse to run "from async code".
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def csp_violations() -> list[str]:
    """Every Content-Security-Policy refusal the ``page`` logs (the page fails the test with any
    left at its end)."""
    return []


@pytest.fixture
def page(
    browser: Any,
    live_server: Any,
    transactional_db: None,
    django_user_model: Any,
    csp_violations: list[str],
) -> Any:
    django_user_model.objects.create_superuser("ops", "ops@example.com", PASSWORD)
    context = browser.new_context(viewport={"width": 1360, "height": 900}, base_url=live_server.url)
    context.set_default_timeout(15_000)
    # expect() keeps its own 5 s default; a loaded CI machine needs the same patience.
    playwright_api.expect.set_options(timeout=15_000)
    tab = context.new_page()
    tab.on("console", lambda msg: _note_csp_refusal(csp_violations, msg, tab))
    tab.goto("/")
    # Anonymous: the login page, which sends us back where we were going.
    assert "/accounts/login/" in tab.url
    tab.fill("#id_username", "ops")
    tab.fill("#id_password", PASSWORD)
    tab.click("input[type=submit]")
    tab.wait_for_url(f"{live_server.url}/")
    yield tab
    context.close()
    assert not csp_violations, "the console broke its Content-Security-Policy:\n" + "\n".join(
        csp_violations
    )


def _note_csp_refusal(violations: list[str], msg: Any, tab: Any) -> None:
    if CSP_REFUSAL in msg.text:
        violations.append(f"{tab.url}: {msg.text}")


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_an_operator_submits_watches_and_cancels_a_work_item(page: Any) -> None:
    expect = playwright_api.expect
    expect(page.locator("h1")).to_have_text("Dashboard")
    shot(page, "01-dashboard")

    # Submit: the branch preview follows the spec; a bad repo is shown inline.
    page.goto("/work/new/")
    page.fill("#id_repo", "not a repo")
    page.fill("#id_spec", "# Add a widget\n\nMake the <b>widget</b>.")
    expect(page.locator("#branch-preview-value")).to_have_text("add-a-widget")
    shot(page, "02-submit-form")
    page.click("#submit-button")
    expect(page.locator(".errorlist").first).to_contain_text("must be owner/name")
    expect(page.locator("#id_repo")).to_have_value("not a repo")
    assert not WorkItem.objects.exists()
    shot(page, "03-submit-validation-error")
    page.fill("#id_repo", "acme/widgets")
    page.click("#submit-button")
    page.wait_for_url("**/work/*/")
    item = WorkItem.objects.get()
    assert item.branch == "add-a-widget"
    expect(page.locator("#status")).to_have_text("queued")

    # It is in the queue.
    page.goto("/queue/")
    expect(page.locator("#queue-table")).to_contain_text("acme/widgets")
    expect(page.locator(f'input[name=ids][value="{item.pk}"]')).to_be_visible()
    shot(page, "04-queue")

    # Its page updates live as it runs: no reload, htmx polling.
    page.goto(f"/work/{item.pk}/")
    page.evaluate("window.__notReloaded = true")
    worker = WorkerFactory.create(
        work_item=item,
        status=WorkerStatus.RUNNING,
        container_id="fake-1",
        iteration=4,
        last_heartbeat=timezone.now(),
        started_at=timezone.now(),
        log_tail="cloning\n\x1b[32mrunning agent\x1b[0m\n<script>alert(1)</script>\n",
    )
    WorkItem.objects.filter(pk=item.pk).update(
        status=WorkItemStatus.IN_PROGRESS, worker=worker, iteration=4
    )
    expect(page.locator("#status")).to_have_text("in_progress", timeout=10_000)
    expect(page.locator("#log-text")).to_contain_text("running agent", timeout=10_000)
    expect(page.locator("#log-text")).to_contain_text("<script>alert(1)</script>")
    assert page.evaluate("window.__notReloaded") is True
    shot(page, "05-work-item-running")

    # Workers and locks show the running attempt.
    FileLock.objects.create(
        repo="acme/widgets",
        path="src/widget.py",
        worker=worker,
        expires_at=timezone.now() + dt.timedelta(minutes=10),
    )
    page.goto("/workers/")
    expect(page.locator("#active-workers")).to_contain_text("acme/widgets")
    expect(page.locator("#active-workers")).to_contain_text("4 / 50")
    shot(page, "06-workers")
    page.goto("/locks/")
    expect(page.locator("#locks")).to_contain_text("src/widget.py")
    shot(page, "07-locks")

    # Cancel it from its page.
    page.goto(f"/work/{item.pk}/")
    page.fill("input[name=reason]", "changed my mind")
    page.click("#cancel-button")
    expect(page.locator(".messages")).to_contain_text("Cancelled.")
    expect(page.locator("#status")).to_have_text("cancelled")
    item.refresh_from_db()
    assert item.status == WorkItemStatus.CANCELLED
    assert Worker.objects.get(pk=worker.pk).status == WorkerStatus.KILLED
    assert not FileLock.objects.exists()
    event = WorkItemEvent.objects.get(work_item=item, kind="cancelled")
    assert (event.actor, event.message) == ("user:ops", "changed my mind")
    shot(page, "08-work-item-cancelled")

    # A day of history for the dashboard's charts: finished items and queue movements.
    seed_history()
    page.goto("/dashboard/")
    expect(page.locator("svg.chart").first).to_be_visible()
    shot(page, "09-dashboard-with-history")


def seed_history() -> None:
    now = timezone.now()
    for hour in range(12):
        when = now - dt.timedelta(hours=hour, minutes=5)
        for n in range(hour % 4 + 1):
            status = WorkItemStatus.FAILED if n == 3 else WorkItemStatus.COMPLETED
            done = WorkItemFactory.create(status=status)
            WorkItem.objects.filter(pk=done.pk).update(
                created_at=when - dt.timedelta(minutes=20), completed_at=when
            )
            event_record(work_item=done, kind="submitted", to_status="queued")
            event_record(work_item=done, kind="claimed", from_status="queued", to_status="assigned")
            WorkItemEvent.objects.filter(work_item=done, kind="submitted").update(
                created_at=when - dt.timedelta(minutes=20)
            )
            WorkItemEvent.objects.filter(work_item=done, kind="claimed").update(created_at=when)
    for _ in range(3):
        waiting = WorkItemFactory.create()
        event_record(work_item=waiting, kind="submitted", to_status="queued")


def test_an_operator_runs_a_bulk_action_in_the_admin_and_in_the_queue(page: Any) -> None:
    expect = playwright_api.expect
    failed = [
        WorkItemFactory.create(
            repo="acme/bulk", status=WorkItemStatus.FAILED, error="boom", retry_count=3
        )
        for _ in range(2)
    ]
    page.goto("/admin/orchestration/workitem/?status__exact=failed")
    for item in failed:
        page.check(f'input[name=_selected_action][value="{item.pk}"]')
    page.select_option("select[name=action]", "requeue_reset")
    shot(page, "10-admin-workitems")
    page.click("button[name=index]")
    page.fill("#id_reason", "the flaky runner is fixed")  # every admin action asks why
    page.click("#apply-action")
    expect(page.locator("ul.messagelist")).to_contain_text("Requeue: 2 changed")
    shot(page, "11-admin-after-bulk-requeue")
    for item in failed:
        item.refresh_from_db()
        assert (item.status, item.retry_count) == (WorkItemStatus.QUEUED, 0)
        event = WorkItemEvent.objects.get(work_item=item, kind="requeued")
        assert (event.actor, event.message) == ("admin:ops", "the flaky runner is fixed")

    # The console's own bulk cancel, with its confirmation page.
    page.goto("/queue/?repo=acme/bulk")
    page.click("button[value='cancel:matching']")
    expect(page.locator("#confirm-count")).to_contain_text("2 work items")
    shot(page, "12-queue-bulk-confirm")
    page.click("#confirm-button")
    expect(page.locator(".messages")).to_contain_text("Cancel: 2 changed")
    assert WorkItem.objects.filter(status=WorkItemStatus.CANCELLED).count() == 2


@pytest.mark.celery
def test_a_running_item_page_follows_a_real_worker_to_completion(
    page: Any, celery_workers: Any
) -> None:
    """No test-side status changes here: a real Celery worker (fake runtime, mock agent) runs
    the item while the page, never reloaded, follows it through htmx polling."""
    expect = playwright_api.expect
    workers = celery_workers()
    workers.start(concurrency=2)

    page.goto("/work/new/")
    page.fill("#id_repo", "acme/widgets")
    page.fill("#id_spec", "# Watch me run")
    # Long enough that the 2 s polling cannot step from assigned straight to completed.
    page.fill("#id_metadata", '{"mockSeconds": 12}')
    page.click("#submit-button")
    page.wait_for_url("**/work/*/")
    page.evaluate("window.__notReloaded = true")

    expect(page.locator("#status")).to_have_text("in_progress", timeout=20_000)
    expect(page.locator("#log-text")).to_contain_text("mock agent", timeout=10_000)
    shot(page, "10-work-item-live-running")
    expect(page.locator("#status")).to_have_text("completed", timeout=60_000)
    assert page.evaluate("window.__notReloaded") is True
    shot(page, "11-work-item-live-completed")


def test_every_console_page_works_under_the_content_security_policy(
    page: Any, csp_violations: list[str]
) -> None:
    """Each page (the admin's too) is served with the policy, runs htmx and the console's own
    script under it, and logs no refusal; the ``page`` fixture fails the test on any."""
    expect = playwright_api.expect
    item = WorkItemFactory.create(repo="acme/csp", status=WorkItemStatus.IN_PROGRESS)
    worker = WorkerFactory.create(
        work_item=item,
        status=WorkerStatus.RUNNING,
        container_id="fake-csp",
        last_heartbeat=timezone.now(),
        started_at=timezone.now(),
        log_tail="working\n",
    )
    WorkItem.objects.filter(pk=item.pk).update(worker=worker)
    FileLock.objects.create(
        repo="acme/csp",
        path="a/very/long/path/" * 8 + "file.py",
        worker=worker,
        expires_at=timezone.now() + dt.timedelta(minutes=10),
    )
    seed_history()
    pages = [
        "/",
        "/queue/",
        "/workers/",
        "/locks/",
        "/admin/",
        "/admin/orchestration/workitem/",
        f"/admin/orchestration/workitem/{item.pk}/change/",
        "/admin/orchestration/worker/",
    ]
    for path in pages:
        resp = page.goto(path)
        policy = resp.headers.get("content-security-policy", "")
        assert "default-src 'self'" in policy and "unsafe-inline" not in policy, (path, policy)
        assert resp.headers.get("x-content-type-options") == "nosniff"
        assert resp.headers.get("referrer-policy") == "same-origin"
        page.wait_for_load_state("networkidle")

    # The dashboard's bars are <progress> elements, drawn without an inline style.
    page.goto("/dashboard/")
    expect(page.locator("progress.bar").first).to_be_visible()
    shot(page, "13-dashboard-under-csp")

    # htmx under the policy: the branch preview posts and swaps in its answer.
    page.goto("/work/new/")
    page.fill("#id_spec", "# Strict policies\n")
    expect(page.locator("#branch-preview-value")).to_have_text("strict-policies")

    # console.js instead of an onclick: "select all" ticks every row.
    page.goto("/queue/")
    page.check("input[data-select-all=ids]")
    assert page.locator("input[name=ids]").count() > 1
    assert page.locator("input[name=ids]:not(:checked)").count() == 0

    # console.js instead of an hx-trigger filter (eval): a reason being typed survives polls;
    # the page still polls (the status follows the row).
    page.goto(f"/work/{item.pk}/")
    page.fill("input[name=reason]", "typing slowly")
    page.wait_for_timeout(5_000)
    expect(page.locator("input[name=reason]")).to_have_value("typing slowly")
    page.locator("h1").click()  # focus leaves the form: polling resumes
    WorkItem.objects.filter(pk=item.pk).update(status=WorkItemStatus.FAILED, error="boom")
    expect(page.locator("#status")).to_have_text("failed", timeout=10_000)
    shot(page, "14-work-item-under-csp")

    # The detector itself: an inline style set from script is refused and reported.
    assert not csp_violations
    page.evaluate("document.body.setAttribute('style', 'color: red')")
    page.wait_for_timeout(500)
    assert any("style" in v for v in csp_violations), csp_violations
    csp_violations.clear()
