"""Coalesced heartbeats (orchestration/services/workers/beat_buffer.py) on the real Redis and
PostgreSQL: a running attempt's beats are answered from Redis with no database statement and
written by the "beats" sweep as the slow path would have written them; every ending writes
them first and closes the fast path under the row locks, so the heartbeat-vs-ending race is
still decided there; Redis away, every beat takes the slow path."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.core.checks import run_checks
from django.db import connection
from django.test import Client

from orchestration.clock import db_now
from orchestration.models import CostUsage, FileLock, Worker, WorkerStatus, WorkItem, WorkItemStatus
from orchestration.nudge import redis_client
from orchestration.services.dispatch import token_digest, worker_token
from orchestration.services.sweeps import sweep_beats, sweep_heartbeats, sweep_stuck
from orchestration.services.work_items import work_item_cancel
from orchestration.services.workers import worker_fail, worker_kill
from orchestration.services.workers.beat_buffer import beat_ack, beat_take
from tests.callbacks_support import SHA, call, hold
from tests.factories import running_attempt
from tests.helpers import assert_error
from tests.test_sweeps import age, together

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("retry_policy")]


def opened(client: Client, **tokens: int) -> tuple[WorkItem, Worker]:
    """A running attempt whose first beat (the slow path) opened the fast path."""
    item, worker = running_attempt(use_gate=False)
    assert call(client, worker, "heartbeat", {"iteration": 1, **tokens}).status_code == 200
    return item, worker


def statements(fn: Callable[[], Any]) -> tuple[Any, list[str]]:
    seen: list[str] = []

    def record(execute: Callable[..., Any], sql: str, *args: Any) -> Any:
        seen.append(sql)
        return execute(sql, *args)

    with connection.execute_wrapper(record):
        result = fn()
    return result, seen


def charged(item: WorkItem) -> tuple[int, int]:
    rows = CostUsage.objects.filter(repo=item.repo)
    return sum(r.tokens_in for r in rows), sum(r.tokens_out for r in rows)


def test_a_running_attempts_beat_is_answered_without_a_database_statement(
    client: Client,
) -> None:
    _item, worker = opened(client, tokensIn=10, tokensOut=5)
    before = Worker.objects.get(pk=worker.pk)

    resp, sql = statements(
        lambda: call(client, worker, "heartbeat", {"iteration": 3, "tokensIn": 40, "tokensOut": 9})
    )

    assert resp.status_code == 200 and resp.json() == {"success": True}
    assert sql == []
    after = Worker.objects.get(pk=worker.pk)
    assert (after.iteration, after.tokens_in, after.last_heartbeat) == (
        1,
        10,
        before.last_heartbeat,
    )


def test_the_sweep_writes_the_beats_as_they_came_and_charges_once(client: Client) -> None:
    item, worker = opened(client, tokensIn=10, tokensOut=5)
    Worker.objects.filter(pk=worker.pk).update(
        last_heartbeat=db_now() - dt.timedelta(seconds=50),
        last_progress_at=db_now() - dt.timedelta(seconds=50),
    )
    for n, body in enumerate(
        [
            {"iteration": 2, "tokensIn": 20, "tokensOut": 6, "model": "m-1"},
            {"iteration": 4, "tokensIn": 70, "tokensOut": 8, "costUsd": 0.25},
            {"iteration": 3, "tokensIn": 60},  # lower totals: the most any report said stands
        ]
    ):
        assert call(client, worker, "heartbeat", body).status_code == 200, n
    beat_at = db_now()

    assert sweep_beats() == {"written": 1}
    assert sweep_beats() == {"written": 0}  # nothing new: nothing written, nothing charged

    worker.refresh_from_db()
    item.refresh_from_db()
    assert (worker.iteration, worker.tokens_in, worker.tokens_out) == (4, 70, 8)
    assert (worker.cost_usd, worker.model) == (Decimal("0.25"), "m-1")
    assert (item.iteration, item.tokens_in, item.tokens_out) == (4, 70, 8)
    assert charged(item) == (70, 8)
    for moment in (worker.last_heartbeat, worker.last_progress_at):
        assert moment is not None and abs(moment - beat_at) < dt.timedelta(seconds=2)


def test_a_beat_after_a_kill_gets_409_and_the_beats_before_it_are_charged(
    client: Client,
) -> None:
    item, worker = opened(client, tokensIn=10)
    assert call(client, worker, "heartbeat", {"iteration": 2, "tokensIn": 90}).status_code == 200

    assert worker_kill(worker_id=worker.pk, reason="enough")

    assert_error(
        call(client, worker, "heartbeat", {"iteration": 3, "tokensIn": 200}), 409, "INVALID_STATE"
    )
    worker.refresh_from_db()
    item.refresh_from_db()
    assert worker.status == WorkerStatus.KILLED
    assert (worker.iteration, worker.tokens_in) == (2, 90)
    assert charged(item) == (90, 0)
    assert sweep_beats() == {"written": 0}
    assert beat_take(token_digest(worker_token(worker.pk)), close=False) is None


@pytest.mark.parametrize("ending", ["fail", "cancel"])
def test_every_ending_writes_the_buffered_beats_first(client: Client, ending: str) -> None:
    item, worker = opened(client, tokensIn=10)
    assert call(client, worker, "heartbeat", {"iteration": 5, "tokensIn": 55}).status_code == 200

    if ending == "fail":
        assert worker_fail(worker_id=worker.pk, error="broke", category="PERMANENT")
    else:
        assert work_item_cancel(work_item_id=item.pk, reason="no longer wanted")

    worker.refresh_from_db()
    assert worker.status != WorkerStatus.RUNNING
    assert (worker.iteration, worker.tokens_in) == (5, 55)
    assert charged(item) == (55, 0)
    assert call(client, worker, "heartbeat", {"iteration": 6}).status_code == 409


def test_a_token_rise_past_the_bound_is_refused_on_the_fast_path_too(
    client: Client, settings: Any
) -> None:
    settings.MAX_TOKENS_PER_HEARTBEAT = 1000
    _item, worker = opened(client, tokensIn=500)

    resp = call(client, worker, "heartbeat", {"iteration": 2, "tokensIn": 1501})

    body = assert_error(resp, 400, "VALIDATION_ERROR", details=["tokensIn"])
    assert "rose by 1001" in body["details"]["tokensIn"]
    assert call(client, worker, "heartbeat", {"iteration": 2, "tokensIn": 1500}).status_code == 200
    sweep_beats()
    worker.refresh_from_db()
    assert worker.tokens_in == 1500


def test_another_workers_token_and_a_bad_body_get_the_slow_paths_answers(
    client: Client,
) -> None:
    _, worker = opened(client)
    _, other = opened(client)

    wrong = call(client, other, "heartbeat", {"iteration": 2}, token=worker_token(worker.pk))
    bad = call(client, worker, "heartbeat", {"iteration": -1})
    anonymous = call(client, worker, "heartbeat", {"iteration": 2}, token="nope")

    assert_error(wrong, 403, "FORBIDDEN")
    assert_error(bad, 400, "VALIDATION_ERROR", details=["iteration"])
    assert_error(anonymous, 401, "UNAUTHORIZED")


def test_a_write_acknowledged_after_a_reopening_leaves_the_new_beats_pending(
    client: Client,
) -> None:
    """The sweep takes beats 1-3, a slow (resumed) beat reopens the fast path, a new beat is
    buffered, then the sweep's acknowledgement arrives: it must not count the new beat as
    written (the new opening counts from 0 again)."""
    _, worker = opened(client)
    digest = token_digest(worker_token(worker.pk))
    for n in (2, 3, 4):
        assert call(client, worker, "heartbeat", {"iteration": n}).status_code == 200
    taken = beat_take(digest, close=False)
    assert taken is not None and taken.seq == 3
    resumed = {"iteration": 5, "resumedFrom": SHA}
    assert call(client, worker, "heartbeat", resumed).status_code == 200  # the slow path
    assert call(client, worker, "heartbeat", {"iteration": 6}).status_code == 200  # buffered

    beat_ack(digest, taken)

    assert sweep_beats() == {"written": 1}
    worker.refresh_from_db()
    assert worker.iteration == 6


def test_a_stale_looking_worker_with_a_buffered_beat_is_not_lost(
    client: Client, settings: Any
) -> None:
    settings.STALE_THRESHOLD, settings.HEARTBEAT_GRACE = 60, 0
    _item, worker = opened(client)
    assert call(client, worker, "heartbeat", {"iteration": 1}).status_code == 200  # buffered
    age(worker, last_heartbeat=dt.timedelta(seconds=61))  # as the database saw it

    assert sweep_heartbeats() == {"lost": 0}

    worker.refresh_from_db()
    assert worker.status == WorkerStatus.RUNNING
    assert worker.last_heartbeat is not None
    assert db_now() - worker.last_heartbeat < dt.timedelta(seconds=5)


def test_progress_buffered_keeps_a_worker_from_the_stuck_sweep(
    client: Client, settings: Any
) -> None:
    settings.PROGRESS_TIMEOUT = 120
    _, worker = opened(client)
    assert call(client, worker, "heartbeat", {"iteration": 2}).status_code == 200  # progress
    age(worker, last_progress_at=dt.timedelta(seconds=121))

    assert sweep_stuck()["no_progress"] == 0
    worker.refresh_from_db()
    assert worker.status == WorkerStatus.RUNNING and worker.iteration == 2


def test_buffered_beats_racing_the_stale_sweep_never_end_half_way(
    client: Client, settings: Any
) -> None:
    """The fast-path twin of test_sweeps' race: either the beat is buffered before the sweep
    settles the worker (its beat is written, the worker stays, 200) or after (the fast path
    is closed: the slow path waits for the lock and gets 409, the worker is lost) — never a
    200 for a lost worker, never a mix."""
    settings.STALE_THRESHOLD, settings.HEARTBEAT_GRACE = 1, 0
    outcomes = {"heartbeat": 0, "sweep": 0}
    for trial in range(40):
        item, worker = opened(client)
        hold(worker, f"f{trial}.py", seconds=300)
        age(worker, last_heartbeat=dt.timedelta(seconds=1, milliseconds=50))
        answers: list[int] = []

        def beat(worker: Worker = worker, answers: list[int] = answers, n: int = trial) -> None:
            time.sleep((n % 8) * 0.006)  # land before, during and after the sweep's settle
            answers.append(call(Client(), worker, "heartbeat", {"iteration": 1}).status_code)

        together(beat, sweep_heartbeats)
        worker.refresh_from_db()
        item.refresh_from_db()
        locked = FileLock.objects.filter(worker=worker).exists()
        if answers == [200]:
            assert worker.status == WorkerStatus.RUNNING, f"trial {trial}: lost after a 200"
            assert item.status == WorkItemStatus.IN_PROGRESS and locked
            outcomes["heartbeat"] += 1
            worker_fail(worker_id=worker.pk, error="trial over", category="PERMANENT")
        else:
            assert answers == [409], answers
            assert worker.status == WorkerStatus.LOST, f"trial {trial}: refused but alive"
            assert item.status == WorkItemStatus.QUEUED and not locked
            outcomes["sweep"] += 1
        WorkItem.objects.filter(pk=item.pk).update(status=WorkItemStatus.CANCELLED)
    assert sum(outcomes.values()) == 40
    assert min(outcomes.values()) > 0, f"only one side ever won: {outcomes}"


def test_with_redis_away_every_beat_is_written_at_once(client: Client, settings: Any) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on loopback port 1
    item, worker = running_attempt(use_gate=False)

    for n in (1, 2, 3):
        resp = call(client, worker, "heartbeat", {"iteration": n, "tokensIn": 10 * n})
        assert resp.status_code == 200
        worker.refresh_from_db()
        assert (worker.iteration, worker.tokens_in) == (n, 10 * n)
    assert charged(item) == (30, 0)
    assert sweep_beats() == {"written": 0}  # the sweep waits for Redis too


def test_beats_an_ending_missed_while_redis_was_away_are_charged_once_it_answers(
    client: Client, settings: Any
) -> None:
    item, worker = opened(client, tokensIn=10)
    assert call(client, worker, "heartbeat", {"iteration": 2, "tokensIn": 90}).status_code == 200
    digest = token_digest(worker_token(worker.pk))
    redis_url = settings.REDIS_URL

    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # away (nothing listens) while it ends
    assert worker_kill(worker_id=worker.pk, reason="enough")
    worker.refresh_from_db()
    assert (worker.status, worker.tokens_in) == (WorkerStatus.KILLED, 10)  # not taken
    assert charged(item) == (10, 0)

    settings.REDIS_URL = redis_url  # back: the sweep charges what the buffered beats said
    assert sweep_beats() == {"written": 1}
    worker.refresh_from_db()
    assert (worker.status, worker.tokens_in) == (WorkerStatus.KILLED, 90)
    assert charged(item) == (90, 0)
    assert sweep_beats() == {"written": 0}  # once: the buffer is closed
    assert beat_take(digest, close=False) is None


def test_rows_gone_before_the_sweep_close_the_buffer(client: Client) -> None:
    item, worker = opened(client)
    assert call(client, worker, "heartbeat", {"iteration": 2}).status_code == 200
    digest = token_digest(worker_token(worker.pk))
    WorkItem.objects.filter(pk=item.pk).delete()

    assert sweep_beats() == {"written": 0}
    assert beat_take(digest, close=False) is None
    assert not any(
        digest.encode() in member
        for member in redis_client().smembers(
            f"whim:beats-dirty:{connection.settings_dict['NAME']}"
        )
    )


def ids() -> set[str]:
    return {m.id for m in run_checks() if m.id and m.id.startswith("orchestration.E09")}


def test_the_staleness_rule_is_a_system_check(settings: Any) -> None:
    assert ids() == set()
    settings.SWEEP_PERIODS = {**settings.SWEEP_PERIODS, "beats": 290.0}
    assert ids() == {"orchestration.E090"}
    settings.LOCK_TTL = 300
    assert ids() == {"orchestration.E090", "orchestration.E091"}
    settings.HEARTBEAT_COALESCE = False
    assert ids() == set()


def test_the_wire_answer_is_the_same_on_both_paths(client: Client) -> None:
    _, worker = running_attempt(use_gate=False)
    first = call(client, worker, "heartbeat", {"iteration": 1})
    second = call(client, worker, "heartbeat", {"iteration": 2})
    assert json.loads(first.content) == json.loads(second.content) == {"success": True}
    assert first["Content-Type"] == second["Content-Type"]
