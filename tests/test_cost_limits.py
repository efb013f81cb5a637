"""Money as a limit: DAILY_COST_BUDGET holds dispatch; the per-item cap reaches the container as
WHIM_COST_CAP_USD; a COST_CAP failure pauses the item (not retried, not failed, locks freed)
until an operator continues it with a raised cap — from the API, the console, the admin or
``whim continue`` — and the item page, /api/work/<id> and the status filters show it."""

from __future__ import annotations

import io
import json
import re
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from orchestration.choices import ErrorCategory, EventKind
from orchestration.clock import budget_date, db_now
from orchestration.models import (
    CostUsage,
    FileLock,
    Worker,
    WorkerStatus,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
)
from orchestration.services.dispatch import dispatch_claim_one
from orchestration.services.work_items import work_item_cancel, work_item_continue
from orchestration.services.workers import worker_fail, worker_heartbeat
from tests.callbacks_support import call
from tests.factories import WorkItemFactory, running_attempt
from tests.helpers import assert_error
from workers.runtime import worker_environment

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("retry_policy")]


def spend_today(amount: str, repo: str = "acme/widgets", model: str = "m") -> None:
    CostUsage.objects.create(
        date=budget_date(db_now()), repo=repo, model=model, cost_usd=Decimal(amount)
    )


def environment(worker: Worker) -> dict[str, str]:
    worker.refresh_from_db()
    item = WorkItem.objects.get(pk=worker.work_item_id)
    return worker_environment(worker=worker, work_item=item, token="t", callback_base="http://h")


def paused_item(*, cap: float = 2.0, spent: str = "2.0") -> WorkItem:
    """An item whose attempt spent ``spent`` against its cap and stopped: paused."""
    item, worker = running_attempt(metadata={"maxCostUsd": cap, "mockSeconds": 0})
    FileLock.objects.create(repo=item.repo, path="a.py", worker=worker, expires_at=db_now())
    worker_heartbeat(worker_id=worker.pk, iteration=2, tokens_in=10, cost_usd=Decimal(spent))
    worker_fail(worker_id=worker.pk, error="cost cap reached", category=ErrorCategory.COST_CAP)
    item.refresh_from_db()
    return item


# --- the daily cost budget -----------------------------------------------------------------------


def test_the_daily_cost_budget_holds_dispatch_and_the_item_page_says_why(
    settings: Any, staff_client: Client
) -> None:
    settings.DAILY_COST_BUDGET = 5.0
    spend_today("5")
    item = WorkItemFactory.create()

    assert dispatch_claim_one() is None
    page = staff_client.get(f"/work/{item.pk}/").content.decode()
    assert "Daily cost budget spent ($5 of $5 today) until" in page
    item.refresh_from_db()
    assert item.status == WorkItemStatus.QUEUED


def test_under_the_daily_cost_budget_or_with_it_off_dispatch_goes_on(settings: Any) -> None:
    spend_today("4.99")
    WorkItemFactory.create_batch(2)
    settings.DAILY_COST_BUDGET = 5.0
    assert dispatch_claim_one() is not None
    settings.DAILY_COST_BUDGET = 0.0  # off, whatever was spent
    spend_today("100", repo="acme/other")
    assert dispatch_claim_one() is not None


def test_yesterdays_spending_does_not_count_against_today(settings: Any) -> None:
    settings.DAILY_COST_BUDGET = 1.0
    CostUsage.objects.create(
        date=budget_date(db_now()).replace(year=2000), repo="a/b", cost_usd=Decimal(50)
    )
    WorkItemFactory.create()
    assert dispatch_claim_one() is not None


# --- the per-item cap reaches the container -------------------------------------------------------


def test_the_container_gets_what_the_item_may_still_spend(settings: Any) -> None:
    settings.ITEM_COST_CAP = 10.0
    item, worker = running_attempt()
    WorkItem.objects.filter(pk=item.pk).update(cost_usd=Decimal("2.5"))
    assert environment(worker)["WHIM_COST_CAP_USD"] == "7.5"

    WorkItem.objects.filter(pk=item.pk).update(metadata={"maxCostUsd": 3})
    assert environment(worker)["WHIM_COST_CAP_USD"] == "0.5"

    WorkItem.objects.filter(pk=item.pk).update(cost_usd=Decimal("4"))
    assert environment(worker)["WHIM_COST_CAP_USD"] == "0"


def test_without_a_cap_the_container_gets_none(settings: Any) -> None:
    settings.ITEM_COST_CAP = 0.0
    _item, worker = running_attempt()
    assert "WHIM_COST_CAP_USD" not in environment(worker)
    settings.ITEM_COST_CAP = 10.0
    WorkItem.objects.filter(pk=worker.work_item_id).update(metadata={"maxCostUsd": 0})
    assert "WHIM_COST_CAP_USD" not in environment(worker)  # 0 in metadata: none for this item


def test_the_harness_settings_and_agent_keys_are_passed_through(settings: Any) -> None:
    settings.AGENT_IDLE_TIMEOUT = 120
    settings.TEST_TIMEOUT = 60
    settings.FIX_ITERATIONS = 1
    settings.WHIM_REVIEWER = "anthropic"
    settings.AI_REVIEW_MODEL = "claude-x"
    settings.ANTHROPIC_BASE_URL = "http://127.0.0.1:9/"
    settings.ANTHROPIC_API_KEY = "sk-ant-secret"
    settings.OPENAI_API_KEY = ""
    _item, worker = running_attempt()

    env = environment(worker)

    assert {k: env[k] for k in ("AGENT_IDLE_TIMEOUT", "TEST_TIMEOUT", "FIX_ITERATIONS")} == {
        "AGENT_IDLE_TIMEOUT": "120",
        "TEST_TIMEOUT": "60",
        "FIX_ITERATIONS": "1",
    }
    assert (env["WHIM_REVIEWER"], env["AI_REVIEW_MODEL"]) == ("anthropic", "claude-x")
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9/"
    assert env["ANTHROPIC_API_KEY"] == "sk-ant-secret"
    assert "OPENAI_API_KEY" not in env  # unset keys are not handed over empty


def test_the_submit_form_checks_max_cost_usd(api: Client) -> None:
    for bad in (-1, "5", True, [1], 10_000_000):
        resp = api.post(
            "/api/work",
            {"repo": "acme/widgets", "spec": "# x", "metadata": {"maxCostUsd": bad}},
            content_type="application/json",
        )
        body = assert_error(resp, 400, "VALIDATION_ERROR", details=["metadata"])
        assert "maxCostUsd" in body["details"]["metadata"]
    assert WorkItem.objects.count() == 0
    ok = api.post(
        "/api/work",
        {"repo": "acme/widgets", "spec": "# x", "metadata": {"maxCostUsd": 2.5}},
        content_type="application/json",
    )
    assert ok.status_code == 201, ok.content


# --- cap reached: paused, not retried, not failed -------------------------------------------------


def test_a_cost_cap_failure_pauses_the_item_without_a_retry_or_a_failure() -> None:
    item = paused_item()

    assert item.status == WorkItemStatus.PAUSED
    assert (item.retry_count, item.next_retry_at, item.worker_id) == (0, None, None)
    assert item.error_category == ErrorCategory.COST_CAP
    assert not FileLock.objects.exists()
    kinds = list(WorkItemEvent.objects.filter(work_item=item).values_list("kind", flat=True))
    assert EventKind.PAUSED in kinds
    assert EventKind.FAILED not in kinds and EventKind.RETRY_SCHEDULED not in kinds
    # Paused items are neither claimed nor touched by the sweeps.
    assert dispatch_claim_one() is None
    call_command("whim_sweep", "all", stdout=io.StringIO())
    item.refresh_from_db()
    assert item.status == WorkItemStatus.PAUSED


def test_the_cost_cap_callback_answers_200_and_a_repeat_changes_nothing(client: Client) -> None:
    item, worker = running_attempt(metadata={"maxCostUsd": 1})
    body = {"error": "cost cap reached", "iteration": 2, "category": "COST_CAP"}

    assert call(client, worker, "fail", body).status_code == 200
    assert call(client, worker, "fail", body).status_code == 200

    item.refresh_from_db()
    assert item.status == WorkItemStatus.PAUSED
    assert WorkItemEvent.objects.filter(work_item=item, kind=EventKind.PAUSED).count() == 1


def test_the_item_page_says_why_it_is_paused_and_offers_continue(staff_client: Client) -> None:
    item = paused_item(cap=2.0, spent="2.0")
    page = staff_client.get(f"/work/{item.pk}/").content.decode()
    assert "Paused: it has spent $2, reaching its cost cap of $2" in page
    assert 'id="continue-form"' in page and 'id="requeue-button"' not in page
    assert (
        '<span class="badge paused">' in staff_client.get("/queue/?status=paused").content.decode()
    )


# --- continue -------------------------------------------------------------------------------------


def test_continue_requeues_with_the_raised_cap_and_the_container_gets_the_rest(
    api: Client,
) -> None:
    item = paused_item(cap=2.0, spent="2.0")

    resp = api.post(
        f"/api/work/{item.pk}/continue", {"maxCostUsd": 5}, content_type="application/json"
    )

    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert (body["status"], body["metadata"]["maxCostUsd"], body["costUsd"]) == ("queued", 5.0, 2.0)
    assert body["retryCount"] == 0
    event = WorkItemEvent.objects.get(work_item=item, kind=EventKind.CONTINUED)
    assert event.message == "cost cap $2 → $5" and event.actor.startswith("api")
    worker_id = dispatch_claim_one()
    assert worker_id is not None
    assert environment(Worker.objects.get(pk=worker_id))["WHIM_COST_CAP_USD"] == "3"


def test_continue_refuses_what_is_not_paused_or_a_cap_not_above_the_spending(api: Client) -> None:
    item = paused_item(cap=2.0, spent="2.0")
    queued = WorkItemFactory.create()
    resp = api.post(
        f"/api/work/{queued.pk}/continue", {"maxCostUsd": 5}, content_type="application/json"
    )
    assert_error(resp, 400, "INVALID_STATE")

    for body, field in (
        ({"maxCostUsd": 2}, "maxCostUsd"),  # not above the $2 already spent
        ({"maxCostUsd": -1}, "maxCostUsd"),
        ({"maxCostUsd": "9"}, "maxCostUsd"),
        ({}, "maxCostUsd"),
    ):
        resp = api.post(f"/api/work/{item.pk}/continue", body, content_type="application/json")
        assert_error(resp, 400, "VALIDATION_ERROR", details=[field])
    item.refresh_from_db()
    assert item.status == WorkItemStatus.PAUSED and item.metadata["maxCostUsd"] == 2.0
    resp = api.post(
        "/api/work/00000000-0000-0000-0000-000000000000/continue",
        {"maxCostUsd": 5},
        content_type="application/json",
    )
    assert_error(resp, 404, "NOT_FOUND")


def test_continue_twice_with_the_same_cap_is_one_continue() -> None:
    item = paused_item()
    assert work_item_continue(work_item_id=item.pk, max_cost_usd=Decimal(9), actor="t")
    assert not work_item_continue(work_item_id=item.pk, max_cost_usd=Decimal(9), actor="t")
    assert WorkItemEvent.objects.filter(work_item=item, kind=EventKind.CONTINUED).count() == 1


def test_a_paused_item_can_be_cancelled_but_not_requeued(api: Client) -> None:
    item = paused_item()
    body = assert_error(
        api.post(f"/api/work/{item.pk}/requeue", {}, content_type="application/json"),
        400,
        "INVALID_STATE",
    )
    assert "continue it with a raised cost cap" in body["error"]
    assert work_item_cancel(work_item_id=item.pk, actor="t")
    item.refresh_from_db()
    assert item.status == WorkItemStatus.CANCELLED


def test_continue_from_the_console_needs_the_operator_role(
    staff_client: Client, viewer_client: Client
) -> None:
    item = paused_item()

    refused = viewer_client.post(f"/work/{item.pk}/continue/", {"max_cost_usd": "5"})
    assert refused.status_code == 403
    bad = staff_client.post(f"/work/{item.pk}/continue/", {"max_cost_usd": "x"}, follow=True)
    assert "New cost cap: must be a number of dollars." in bad.content.decode()
    item.refresh_from_db()
    assert item.status == WorkItemStatus.PAUSED

    page = staff_client.post(
        f"/work/{item.pk}/continue/", {"max_cost_usd": "4.5", "reason": "worth it"}, follow=True
    ).content.decode()

    assert "Continued: queued again." in page
    item.refresh_from_db()
    assert (item.status, item.metadata["maxCostUsd"]) == (WorkItemStatus.QUEUED, 4.5)
    event = WorkItemEvent.objects.get(work_item=item, kind=EventKind.CONTINUED)
    assert (event.actor, event.message) == ("user:grace", "cost cap $2 → $4.5: worth it")


def test_continue_from_the_admin_asks_for_the_cap_and_why(superuser_client: Client) -> None:
    item = paused_item()
    url = "/admin/orchestration/workitem/"
    data = {"action": "continue_paused", "_selected_action": [str(item.pk)]}

    ask = superuser_client.post(url, data)
    assert "New cost cap" in ask.content.decode()
    done = superuser_client.post(
        url, {**data, "apply": "yes", "max_cost_usd": "8", "reason": "ok"}, follow=True
    )

    assert "Continue: 1 changed" in done.content.decode()
    item.refresh_from_db()
    assert (item.status, item.metadata["maxCostUsd"]) == (WorkItemStatus.QUEUED, 8.0)
    event = WorkItemEvent.objects.get(work_item=item, kind=EventKind.CONTINUED)
    assert event.actor == "admin:admin" and event.message.endswith(": ok")


def test_whim_continue_on_the_command_line() -> None:
    item = paused_item()
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as refused:
        call_command("whim", "continue", str(item.pk), "--max-cost-usd", "nope", stderr=err)
    assert refused.value.code == 2
    assert json.loads(err.getvalue())["details"]["maxCostUsd"] == "must be a number of dollars"

    call_command("whim", "continue", str(item.pk), "--max-cost-usd", "6", stdout=out)

    assert json.loads(out.getvalue())["status"] == "queued"
    item.refresh_from_db()
    assert item.metadata["maxCostUsd"] == 6.0


# --- what the API shows ---------------------------------------------------------------------------


def test_the_work_item_shows_its_cost_and_latest_metrics(api: Client, client: Client) -> None:
    item, worker = running_attempt()
    assert api.get(f"/api/work/{item.pk}").json()["metrics"] is None
    call(
        client,
        worker,
        "complete",
        {
            "commitSha": "0123456789abcdef0123456789abcdef01234567",
            "metrics": {
                "tokensIn": 30,
                "tokensOut": 3,
                "costUsd": 0.25,
                "duration": 1500,
                "filesModified": 2,
                "testsRun": 5,
                "testsPassed": 4,
                "testsFailed": 1,
                "testStatus": "failed",
            },
        },
    )

    body = api.get(f"/api/work/{item.pk}").json()

    assert body["costUsd"] == 0.25
    assert {k: v for k, v in body["metrics"].items() if k != "iterations"} == {
        "tokensIn": 30,
        "tokensOut": 3,
        "costUsd": 0.25,
        "duration": 1500,
        "filesModified": 2,
        "testsRun": 5,
        "testsPassed": 4,
        "testsFailed": 1,
        "testStatus": "failed",
    }


def test_estimated_cost_uses_reported_cost_and_prices_for_the_rest(
    api: Client, client: Client, settings: Any
) -> None:
    settings.TOKEN_PRICE_IN_PER_MILLION = 2.0
    settings.TOKEN_PRICE_OUT_PER_MILLION = 10.0
    sha = "0123456789abcdef0123456789abcdef01234567"
    _a, priced = running_attempt()
    call(client, priced, "complete", {"commitSha": sha, "metrics": {"tokensIn": 1_000_000}})
    _b, reported = running_attempt()
    metrics = {"tokensIn": 1_000_000, "tokensOut": 1_000_000, "costUsd": 0.5}
    call(client, reported, "complete", {"commitSha": sha, "metrics": metrics})

    usage = api.get("/api/metrics").json()["tokenUsage"]

    # $2 for the attempt that reported nothing, $0.50 as reported (not $12 by the prices).
    assert usage == {"tokensIn": 2_000_000, "tokensOut": 1_000_000, "estimatedCostUsd": 2.5}


def test_prometheus_shows_todays_cost_and_the_budget(client: Client, settings: Any) -> None:
    settings.DAILY_COST_BUDGET = 20.0
    spend_today("1.25")
    text = client.get("/metrics").content.decode()
    assert re.search(r"^whim_cost_today_usd 1\.25$", text, re.M)
    assert re.search(r"^whim_cost_budget_usd 20\.0$", text, re.M)


def test_paused_items_are_a_status_everywhere(api: Client) -> None:
    item = paused_item()
    listed = api.get("/api/queue?status=paused").json()
    assert [i["id"] for i in listed["items"]] == [str(item.pk)]
    assert listed["stats"]["byStatus"]["paused"] == 1
    assert Worker.objects.get(work_item=item).status == WorkerStatus.FAILED


def test_a_passed_through_variable_cannot_raise_or_drop_the_cap(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WHIM_COST_CAP_USD", "1000")
    monkeypatch.setenv("WHIM_REVIEWER", "none")
    settings.WHIM_AGENT_ENV = ["WHIM_COST_CAP_USD", "WHIM_REVIEWER"]
    settings.ITEM_COST_CAP, settings.WHIM_REVIEWER = 2.0, "agent"
    _item, worker = running_attempt()
    env = environment(worker)
    assert (env["WHIM_COST_CAP_USD"], env["WHIM_REVIEWER"]) == ("2", "agent")

    settings.ITEM_COST_CAP = 0.0  # no cap: none, not the passed-through one
    assert "WHIM_COST_CAP_USD" not in environment(worker)
