"""What a worker may claim in its callbacks is bounded (issue 9): token counts per report
(MAX_TOKENS_PER_HEARTBEAT) and per attempt (MAX_TOKENS_PER_ATTEMPT), and the other counts in
``complete``'s metrics. Beyond a bound: 400 VALIDATION_ERROR naming the field, nothing written.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from orchestration.models import Worker, WorkerStatus, WorkItemStatus
from tests.callbacks_support import SHA, call, hold, snapshot
from tests.factories import running_attempt
from tests.helpers import assert_error

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("retry_policy")]


@pytest.fixture
def bounds(settings: Any) -> Any:
    settings.MAX_TOKENS_PER_HEARTBEAT = 1_000
    settings.MAX_TOKENS_PER_ATTEMPT = 5_000
    settings.MAX_ATTEMPT_DURATION_MS = 60_000
    settings.MAX_METRIC_COUNT = 100
    return settings


def test_a_heartbeat_within_the_bounds_is_recorded(client: Client, bounds: Any) -> None:
    _item, worker = running_attempt()
    Worker.objects.filter(pk=worker.pk).update(tokens_in=4_000, tokens_out=4_000)

    resp = call(
        client, worker, "heartbeat", {"iteration": 1, "tokensIn": 5_000, "tokensOut": 5_000}
    )

    assert resp.status_code == 200, resp.content
    worker.refresh_from_db()
    assert (worker.tokens_in, worker.tokens_out) == (5_000, 5_000)


@pytest.mark.parametrize("field", ["tokensIn", "tokensOut"])
def test_a_heartbeat_claiming_more_than_the_attempt_may_spend_is_refused(
    client: Client, bounds: Any, field: str
) -> None:
    item, worker = running_attempt()
    Worker.objects.filter(pk=worker.pk).update(tokens_in=4_500, tokens_out=4_500)
    hold(worker, "a.py", seconds=5)
    before = snapshot(item, worker)

    body = assert_error(
        call(client, worker, "heartbeat", {"iteration": 1, field: 5_001}), 400, "VALIDATION_ERROR"
    )

    assert "MAX_TOKENS_PER_ATTEMPT" in body["details"][field]
    assert snapshot(item, worker) == before


@pytest.mark.parametrize("field", ["tokensIn", "tokensOut"])
def test_a_heartbeat_whose_tokens_rise_too_fast_is_refused(
    client: Client, bounds: Any, field: str
) -> None:
    item, worker = running_attempt()
    Worker.objects.filter(pk=worker.pk).update(tokens_in=100, tokens_out=100)
    hold(worker, "a.py", seconds=5)
    before = snapshot(item, worker)

    body = assert_error(
        call(client, worker, "heartbeat", {"iteration": 3, field: 1_101}), 400, "VALIDATION_ERROR"
    )

    assert "MAX_TOKENS_PER_HEARTBEAT" in body["details"][field]
    assert "rose by 1001" in body["details"][field]
    assert snapshot(item, worker) == before  # not even the liveness or the iteration


def test_the_agent_of_issue_9_cannot_report_two_to_the_62_tokens(client: Client) -> None:
    # The default bounds, and the forged report the issue describes.
    item, worker = running_attempt()
    before = snapshot(item, worker)

    body = assert_error(
        call(client, worker, "heartbeat", {"iteration": 1, "tokensOut": 2**62}),
        400,
        "VALIDATION_ERROR",
    )

    assert "tokensOut" in body["details"]
    assert snapshot(item, worker) == before


def completion(**metrics: Any) -> dict[str, Any]:
    return {"commitSha": SHA, "metrics": metrics}


def test_a_completion_within_the_bounds_is_accepted(client: Client, bounds: Any) -> None:
    item, worker = running_attempt()
    Worker.objects.filter(pk=worker.pk).update(tokens_in=4_000)

    resp = call(
        client,
        worker,
        "complete",
        completion(tokensIn=5_000, tokensOut=900, duration=60_000, filesModified=100, testsRun=100),
    )

    assert resp.status_code == 200, resp.content
    item.refresh_from_db()
    assert item.status == WorkItemStatus.COMPLETED


@pytest.mark.parametrize(
    ("metrics", "setting"),
    [
        pytest.param({"tokensIn": 5_001}, "MAX_TOKENS_PER_ATTEMPT", id="tokens_in_total"),
        pytest.param({"tokensOut": 5_001}, "MAX_TOKENS_PER_ATTEMPT", id="tokens_out_total"),
        pytest.param({"tokensOut": 1_001}, "MAX_TOKENS_PER_HEARTBEAT", id="tokens_rise"),
        pytest.param({"duration": 60_001}, "MAX_ATTEMPT_DURATION_MS", id="duration"),
        pytest.param({"filesModified": 101}, "MAX_METRIC_COUNT", id="files_modified"),
        pytest.param({"testsRun": 101}, "MAX_METRIC_COUNT", id="tests_run"),
        pytest.param({"testsPassed": 101}, "MAX_METRIC_COUNT", id="tests_passed"),
        pytest.param({"testsFailed": 101.0}, "MAX_METRIC_COUNT", id="tests_failed_float"),
    ],
)
def test_a_completion_claiming_too_much_is_refused_and_writes_nothing(
    client: Client, bounds: Any, metrics: dict[str, Any], setting: str
) -> None:
    item, worker = running_attempt()
    hold(worker, "a.py", seconds=5)
    before = snapshot(item, worker)

    body = assert_error(
        call(client, worker, "complete", completion(**metrics)), 400, "VALIDATION_ERROR"
    )

    [key] = metrics
    assert key in body["details"]["metrics"] and setting in body["details"]["metrics"]
    assert snapshot(item, worker) == before
    worker.refresh_from_db()
    assert worker.status == WorkerStatus.RUNNING
