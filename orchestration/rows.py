"""Row helpers every service shares: fetch one row or NotFound, and the one lock order.

Bottom of the dependency graph: models and errors only, so any service can use them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar
from uuid import UUID

from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import connection
from django.db.models import Model, QuerySet
from django.db.models.sql import InsertQuery

from orchestration.errors import NotFound
from orchestration.models import Worker, WorkItem

M = TypeVar("M", bound=Model)


def row_get(model: type[M] | QuerySet[M], pk: object, what: str) -> M:
    """The row with primary key ``pk`` (of the model, or of a query set of it), or NotFound
    (also for a malformed id)."""
    rows = model if isinstance(model, QuerySet) else model._default_manager.all()
    try:
        return rows.get(pk=pk)
    except (ObjectDoesNotExist, ValueError, TypeError, DjangoValidationError):
        raise NotFound(f"{what} not found") from None


def locked_item_and_worker(worker_id: UUID | str) -> tuple[WorkItem, Worker]:
    """Lock the worker's item, then the worker (the one lock order). Inside a transaction."""
    item_id = row_get(Worker, worker_id, "Worker").work_item_id
    item = WorkItem.objects.select_for_update().get(pk=item_id)
    worker = Worker.objects.select_for_update().get(pk=worker_id)
    return item, worker


def counters_add(model: type[Model], keys: Mapping[str, Any], amounts: Mapping[str, Any]) -> None:
    """Add ``amounts`` to the counter row of ``model`` with ``keys`` (its unique columns), made
    on first use: one ``INSERT … ON CONFLICT DO UPDATE`` statement (PostgreSQL and SQLite),
    so concurrent adders to one row add up and no one reads it first."""
    statements_run([counters_statement(model, keys, amounts)])


def counters_statement(
    model: type[Model], keys: Mapping[str, Any], amounts: Mapping[str, Any]
) -> Statement:
    """``counters_add``'s statement, to run with others (``statements_run``)."""
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    fields = {f.name: f for f in model._meta.concrete_fields}
    values = {**keys, **amounts}
    columns = [quote(str(fields[name].column)) for name in values]
    params = [fields[name].get_db_prep_save(value, connection) for name, value in values.items()]
    key_columns, amount_columns = columns[: len(keys)], columns[len(keys) :]
    marks = ", ".join(["%s"] * len(columns))
    sums = ", ".join(f"{c} = {table}.{c} + EXCLUDED.{c}" for c in amount_columns)
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "  # noqa: S608 (model names)
        f"ON CONFLICT ({', '.join(key_columns)}) DO UPDATE SET {sums}"
    )
    return sql, params


Statement = tuple[str, Sequence[Any]]


def insert_statement(objs: Sequence[Model], *, returning_pk: bool = False) -> Statement:
    """One INSERT of ``objs`` (one model; written as ``bulk_create`` writes them: defaults,
    ``auto_now_add``), to run with others (``statements_run``). ``returning_pk``: the
    statement returns the new primary keys, in order, for a model whose database makes them."""
    model = type(objs[0])
    opts = model._meta
    fields = [f for f in opts.concrete_fields if not (returning_pk and f.primary_key)]
    query = InsertQuery(model)
    query.insert_values(fields, list(objs))
    compiler = query.get_compiler(connection=connection)
    if returning_pk:
        compiler.returning_fields = [opts.pk]
    [(sql, params)] = compiler.as_sql()
    return sql, params


def statements_run(statements: Sequence[Statement]) -> list[list[tuple[Any, ...]]]:
    """Run ``statements`` (SQL, params) in order in the caller's transaction; each one's rows
    (none for one that returns no rows). On PostgreSQL they go as one query, one round trip
    (Django binds parameters on the client, so ``;``-joined statements travel whole); on
    SQLite one by one. A literal ``%`` in the SQL is written ``%%``."""
    results: list[list[tuple[Any, ...]]] = []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and len(statements) > 1:
            joined = [p for _, ps in statements for p in ps]
            cursor.execute("; ".join(sql for sql, _ in statements), joined)
            while True:
                results.append(cursor.fetchall() if cursor.description else [])
                if not cursor.nextset():
                    break
        else:
            for sql, params in statements:
                cursor.execute(sql, params)
                results.append(cursor.fetchall() if cursor.description else [])
    return results
