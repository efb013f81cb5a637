"""The heartbeat is the hottest callback (every running attempt, every few seconds). A running
attempt's beats are answered from Redis with no statement (tests/test_beats.py) and written by
the "beats" sweep, one transaction per attempt. The slow path (every beat with
HEARTBEAT_COALESCE=false; an attempt's first and resumed beats otherwise) through the route
is one transaction of four statements — the token lookup, the item's row lock,
the worker's row lock (with the database clock and "holds a lease?"), one UPDATE — and it
never reads the item's spec or the worker's log tail. Semantics: tests/test_transitions_heartbeat.py
and tests/test_worker_callbacks_register_heartbeat.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from orchestration.models import FileLock
from orchestration.services.sweeps import sweep_beats
from tests.callbacks_support import call, hold
from tests.factories import running_attempt

pytestmark = [pytest.mark.usefixtures("retry_policy", "slow_path")]


@pytest.fixture
def slow_path(settings: Any) -> None:
    settings.HEARTBEAT_COALESCE = False


class Statements:
    """Every statement the connection runs, with the outermost atomic block it ran in."""

    def __init__(self) -> None:
        self.sql: list[str] = []
        self.blocks: list[int | None] = []

    def __call__(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        self.sql.append(sql)
        blocks = connection.atomic_blocks
        self.blocks.append(id(blocks[0]) if blocks else None)
        return execute(sql, params, many, context)


def beat(client: Client, worker: Any, body: dict[str, Any]) -> Statements:
    seen = Statements()
    with connection.execute_wrapper(seen):
        resp = call(client, worker, "heartbeat", body)
    assert resp.status_code == 200, resp.content
    return seen


def test_a_liveness_heartbeat_is_one_transaction_of_four_statements(
    client: Client, transactional_db: None
) -> None:
    _item, worker = running_attempt()
    call(client, worker, "heartbeat", {"iteration": 1})  # progress once; this one is liveness

    seen = beat(client, worker, {"iteration": 1})

    assert len(seen.sql) == 4, "\n".join(seen.sql)
    assert None not in seen.blocks and len(set(seen.blocks)) == 1, "not one transaction"
    assert [s.split()[0] for s in seen.sql] == ["SELECT", "SELECT", "SELECT", "UPDATE"]
    assert all("FOR UPDATE" in s for s in seen.sql[1:3])
    for sql in seen.sql:
        assert '"spec"' not in sql and '"log_tail"' not in sql, sql


def test_a_heartbeat_that_holds_leases_renews_them_in_one_more_statement(
    client: Client, transactional_db: None
) -> None:
    _item, worker = running_attempt(repo="acme/shared")
    hold(worker, "a.py", seconds=5)
    call(client, worker, "heartbeat", {"iteration": 1})
    before = FileLock.objects.get(path="a.py").expires_at

    seen = beat(client, worker, {"iteration": 1})

    assert len(seen.sql) == 5, "\n".join(seen.sql)
    assert len(set(seen.blocks)) == 1
    assert FileLock.objects.get(path="a.py").expires_at > before


def test_a_progress_heartbeat_writes_each_row_once(client: Client, transactional_db: None) -> None:
    """The worst case (the iteration and the tokens rise): the worker's progress and charge
    in one UPDATE, the item's in one, then the day's cost row and usage row, one upsert
    each — seven statements in one transaction."""
    item, worker = running_attempt()
    call(client, worker, "heartbeat", {"iteration": 1, "tokensIn": 10, "tokensOut": 5})

    seen = beat(client, worker, {"iteration": 2, "tokensIn": 30, "tokensOut": 9})

    assert len(seen.sql) == 7, "\n".join(seen.sql)
    assert len(set(seen.blocks)) == 1 and None not in seen.blocks, "not one transaction"
    writes = [s.split()[0:3] for s in seen.sql[3:]]
    assert [w[0] for w in writes] == ["UPDATE", "UPDATE", "INSERT", "INSERT"], writes
    worker.refresh_from_db()
    item.refresh_from_db()
    assert (worker.iteration, worker.tokens_in, worker.tokens_out) == (2, 30, 9)
    assert (item.iteration, item.tokens_in, item.tokens_out) == (2, 30, 9)


def test_the_sweep_writes_a_coalesced_progress_beat_in_six_statements(
    client: Client, transactional_db: None, settings: Any
) -> None:
    """The two row locks, then each row once (worker, item, the day's cost and usage rows),
    in one transaction per attempt, however many beats it coalesced."""
    settings.HEARTBEAT_COALESCE = True
    item, worker = running_attempt()
    call(client, worker, "heartbeat", {"iteration": 1, "tokensIn": 10, "tokensOut": 5})
    sweep_beats()  # what earlier tests of this database left buffered (their rows are gone)
    for n in range(2, 12):
        call(client, worker, "heartbeat", {"iteration": n, "tokensIn": 10 * n, "tokensOut": 9})

    seen = Statements()
    with connection.execute_wrapper(seen):
        assert sweep_beats() == {"written": 1}

    assert len(seen.sql) == 6, "\n".join(seen.sql)
    assert None not in seen.blocks and len(set(seen.blocks)) == 1, "not one transaction"
    assert [s.split()[0] for s in seen.sql] == [
        "SELECT",
        "SELECT",
        "UPDATE",
        "UPDATE",
        "INSERT",
        "INSERT",
    ]
    item.refresh_from_db()
    assert (item.iteration, item.tokens_in, item.tokens_out) == (11, 110, 9)
