"""``rows.statements_run``: several statements in one round trip on PostgreSQL, in order, in
the caller's transaction, each one's rows handed back (the claim and the start rely on it)."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from orchestration.models import DispatchState
from orchestration.rows import statements_run

pytestmark = pytest.mark.django_db


def test_statements_go_in_one_round_trip_and_each_gives_its_rows() -> None:
    DispatchState.objects.create(pk=1)
    table = connection.ops.quote_name(DispatchState._meta.db_table)
    with transaction.atomic(), CaptureQueriesContext(connection) as sent:
        rows = statements_run(
            [
                ("SELECT %s::int + 1", [1]),
                (f"UPDATE {table} SET last_spawn_at = clock_timestamp() WHERE id = %s", [1]),  # noqa: S608
                (f"SELECT id, last_spawn_at IS NOT NULL FROM {table} WHERE id = %s", [1]),  # noqa: S608
                ("SELECT 'a %%' UNION ALL SELECT %s", ["b"]),
            ]
        )
    assert len(sent.captured_queries) == 1
    assert rows == [[(2,)], [], [(1, True)], [("a %",), ("b",)]]


def test_a_failing_statement_raises_and_the_transaction_keeps_nothing() -> None:
    DispatchState.objects.create(pk=1)
    table = connection.ops.quote_name(DispatchState._meta.db_table)
    with pytest.raises(Exception), transaction.atomic():  # noqa: B017 (the driver's own)
        statements_run(
            [
                (f"UPDATE {table} SET last_spawn_at = clock_timestamp() WHERE id = 1", []),  # noqa: S608
                ("SELECT 1 / 0", []),
            ]
        )
    assert DispatchState.objects.get(pk=1).last_spawn_at is None


def test_one_statement_alone_is_run_as_it_is() -> None:
    assert statements_run([("SELECT %s::text", ["x"])]) == [[("x",)]]
