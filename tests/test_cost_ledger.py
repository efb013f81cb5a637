"""The cost ledger (orchestration/services/costs.py), on PostgreSQL: each attempt's cumulative
tokens and cost are charged once to the item and to the day's row for its repo and model —
however often, late or concurrently the reports arrive — and the callbacks refuse bad values
with API.md's error shape, writing nothing."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from orchestration.choices import EventKind
from orchestration.clock import budget_date, db_now
from orchestration.models import CostUsage, Worker, WorkerMetrics, WorkItem, WorkItemEvent
from orchestration.services.workers import Completion, worker_complete, worker_heartbeat
from tests.callbacks_support import SHA, call, snapshot
from tests.factories import WorkItemFactory, running_attempt
from tests.helpers import assert_error


def ledger(item: WorkItem) -> tuple[int, int, Decimal]:
    item.refresh_from_db()
    return item.tokens_in, item.tokens_out, item.cost_usd


def usage_rows() -> list[tuple[str, str, int, int, Decimal]]:
    return sorted(
        CostUsage.objects.values_list("repo", "model", "tokens_in", "tokens_out", "cost_usd")
    )


def beat(worker: Worker, tokens_in: int, tokens_out: int, cost: str, model: str = "m") -> None:
    worker_heartbeat(
        worker_id=worker.pk,
        iteration=1,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=Decimal(cost),
        model=model,
    )


# --- charged once ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_cumulative_heartbeats_charge_the_item_and_the_day_by_their_deltas() -> None:
    item, worker = running_attempt(repo="acme/widgets")

    beat(worker, 100, 10, "0.25", model="claude-sonnet-4-5")
    beat(worker, 300, 40, "0.75", model="claude-sonnet-4-5")

    assert ledger(item) == (300, 40, Decimal("0.75"))
    assert usage_rows() == [("acme/widgets", "claude-sonnet-4-5", 300, 40, Decimal("0.75"))]
    assert CostUsage.objects.get().date == budget_date(db_now())
    worker.refresh_from_db()
    assert (worker.tokens_in, worker.cost_usd, worker.model) == (
        300,
        Decimal("0.75"),
        "claude-sonnet-4-5",
    )


@pytest.mark.django_db
def test_a_repeated_heartbeat_charges_nothing_more() -> None:
    item, worker = running_attempt()
    for _ in range(5):
        beat(worker, 500, 50, "1.5")

    assert ledger(item) == (500, 50, Decimal("1.5"))
    assert usage_rows()[0][2:] == (500, 50, Decimal("1.5"))


@pytest.mark.django_db
def test_a_late_heartbeat_with_lower_totals_charges_nothing() -> None:
    item, worker = running_attempt()
    beat(worker, 900, 90, "2.0")
    beat(worker, 400, 40, "1.0")  # sent earlier, delivered later

    assert ledger(item) == (900, 90, Decimal("2.0"))
    beat(worker, 1000, 95, "2.1")
    assert ledger(item) == (1000, 95, Decimal("2.1"))
    assert usage_rows()[0][2:] == (1000, 95, Decimal("2.1"))


@pytest.mark.django_db
def test_every_attempt_is_charged_to_the_item_and_each_model_has_its_own_row() -> None:
    item = WorkItemFactory.create(repo="acme/widgets")
    item, first = running_attempt(item)
    beat(first, 100, 10, "1", model="model-a")
    Worker.objects.filter(pk=first.pk).update(status="failed")
    WorkItem.objects.filter(pk=item.pk).update(status="queued", worker=None)
    item, second = running_attempt(item)
    beat(second, 50, 5, "0.5", model="model-b")  # the second attempt starts from zero again

    assert ledger(item) == (150, 15, Decimal("1.5"))
    assert usage_rows() == [
        ("acme/widgets", "model-a", 100, 10, Decimal("1")),
        ("acme/widgets", "model-b", 50, 5, Decimal("0.5")),
    ]


@pytest.mark.django_db
def test_completion_charges_what_the_heartbeats_did_not_and_records_the_metrics() -> None:
    item, worker = running_attempt()
    beat(worker, 1000, 100, "3", model="m")

    worker_complete(
        worker_id=worker.pk,
        result=Completion(
            commit_sha=SHA,
            metrics={
                "tokensIn": 1200,
                "tokensOut": 150,
                "costUsd": Decimal("3.5"),
                "iterations": 3,
                "testStatus": "passed",
            },
            model="m",
            warning="pull request could not be opened: 422",
        ),
    )
    # A repeat of the completion charges nothing.
    worker_complete(
        worker_id=worker.pk,
        result=Completion(commit_sha=SHA, metrics={"tokensIn": 1200, "costUsd": Decimal("3.5")}),
    )

    assert ledger(item) == (1200, 150, Decimal("3.5"))
    assert usage_rows()[0][2:] == (1200, 150, Decimal("3.5"))
    metrics = WorkerMetrics.objects.get(worker=worker)
    assert (metrics.tokens_in, metrics.cost_usd, metrics.iterations, metrics.test_status) == (
        1200,
        Decimal("3.5"),
        3,
        "passed",
    )
    warning = WorkItemEvent.objects.get(work_item=item, kind=EventKind.WARNING)
    assert warning.message == "pull request could not be opened: 422"


@pytest.mark.django_db
def test_a_completion_reporting_less_than_the_heartbeats_keeps_the_most_reported() -> None:
    item, worker = running_attempt()
    beat(worker, 800, 80, "2")

    worker_complete(
        worker_id=worker.pk,
        result=Completion(commit_sha=SHA, metrics={"tokensIn": 700, "costUsd": Decimal("1")}),
    )

    assert ledger(item) == (800, 80, Decimal("2"))
    assert WorkerMetrics.objects.get(worker=worker).cost_usd == Decimal("2")


@pytest.mark.django_db(transaction=True)
def test_concurrent_heartbeats_of_one_attempt_charge_exactly_once() -> None:
    item, worker = running_attempt()
    reports = [(100 * n, 10 * n, Decimal(n) / 4) for n in range(1, 11)] * 2
    barrier = threading.Barrier(len(reports))
    errors: list[BaseException] = []

    def send(report: tuple[int, int, Decimal]) -> None:
        try:
            barrier.wait(timeout=30)
            worker_heartbeat(
                worker_id=worker.pk,
                iteration=1,
                tokens_in=report[0],
                tokens_out=report[1],
                cost_usd=report[2],
                model="m",
            )
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(r,)) for r in reports]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert errors == []
    assert ledger(item) == (1000, 100, Decimal("2.5"))
    assert usage_rows()[0][2:] == (1000, 100, Decimal("2.5"))


# --- the callbacks' edges ----------------------------------------------------------------------


def full_snapshot(item: WorkItem, worker: Worker) -> tuple[Any, ...]:
    base = snapshot(item, worker)
    return (*base, item.cost_usd, item.tokens_in, worker.cost_usd, worker.model, usage_rows())


@pytest.mark.django_db
def test_the_heartbeat_carries_cost_and_model(client: Client) -> None:
    item, worker = running_attempt()

    resp = call(
        client,
        worker,
        "heartbeat",
        {"iteration": 1, "tokensIn": 10, "tokensOut": 2, "costUsd": 0.125, "model": "gpt-5"},
    )

    assert resp.status_code == 200, resp.content
    assert ledger(item) == (10, 2, Decimal("0.125"))
    assert usage_rows()[0][1] == "gpt-5"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"costUsd": -0.01}, "costUsd"),
        ({"costUsd": "1.5"}, "costUsd"),
        ({"costUsd": True}, "costUsd"),
        ({"costUsd": [1]}, "costUsd"),
        ({"costUsd": 1001}, "costUsd"),
        ({"model": "m" * 101}, "model"),
        ({"model": 7}, "model"),
    ],
)
def test_a_bad_cost_or_model_in_a_heartbeat_is_refused_and_nothing_changes(
    client: Client, settings: Any, extra: dict[str, Any], field: str
) -> None:
    settings.MAX_COST_PER_ATTEMPT_USD = 1000
    item, worker = running_attempt()
    before = full_snapshot(item, worker)

    resp = call(client, worker, "heartbeat", {"iteration": 1, "tokensIn": 5, **extra})

    assert_error(resp, 400, "VALIDATION_ERROR", details=[field])
    assert full_snapshot(item, worker) == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"metrics": {"costUsd": -1}}, "metrics"),
        ({"metrics": {"costUsd": "3"}}, "metrics"),
        ({"metrics": {"costUsd": 5000}}, "metrics"),
        ({"metrics": {"testStatus": "green"}}, "metrics"),
        ({"metrics": {"testStatus": 1}}, "metrics"),
        ({"metrics": {"iterations": -1}}, "metrics"),
        ({"metrics": {"iterations": "2"}}, "metrics"),
        ({"model": "m" * 101}, "model"),
        ({"warning": "w" * 2001}, "warning"),
        ({"warning": ["no"]}, "warning"),
    ],
)
def test_a_bad_completion_is_refused_and_nothing_changes(
    client: Client, body: dict[str, Any], field: str
) -> None:
    item, worker = running_attempt()
    before = full_snapshot(item, worker)

    resp = call(client, worker, "complete", {"commitSha": SHA, **body})

    assert_error(resp, 400, "VALIDATION_ERROR", details=[field])
    assert full_snapshot(item, worker) == before


@pytest.mark.django_db
def test_a_complete_callback_with_cost_model_and_warning_is_recorded(client: Client) -> None:
    item, worker = running_attempt()

    resp = call(
        client,
        worker,
        "complete",
        {
            "commitSha": SHA,
            "model": "claude-opus-4",
            "warning": "pull request could not be opened: rate limited",
            "metrics": {"tokensIn": 40, "tokensOut": 4, "costUsd": 0.5, "iterations": 2},
        },
    )

    assert resp.status_code == 200, resp.content
    assert ledger(item) == (40, 4, Decimal("0.5"))
    assert usage_rows()[0][1] == "claude-opus-4"
    assert WorkItemEvent.objects.filter(work_item=item, kind=EventKind.WARNING).count() == 1


@pytest.mark.django_db
def test_an_agent_reporting_no_cost_is_charged_its_tokens_at_the_prices(settings: Any) -> None:
    settings.TOKEN_PRICE_IN_PER_MILLION, settings.TOKEN_PRICE_OUT_PER_MILLION = 3.0, 15.0
    item, worker = running_attempt()
    beat(worker, 1_000_000, 100_000, "0")  # codex: tokens only
    assert ledger(item)[2] == Decimal("4.5")  # 3 + 1.5

    beat(worker, 2_000_000, 100_000, "0")
    assert ledger(item)[2] == Decimal("7.5")  # the estimate's delta only
    assert usage_rows()[0][4] == Decimal("7.5")
