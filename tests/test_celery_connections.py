"""A Celery worker reuses its PostgreSQL connection from task to task (CONN_MAX_AGE), and drops
one that died meanwhile instead of reusing it (CONN_HEALTH_CHECKS): the task signals run what
Celery's Django fixup and ``whim.celery.reuse_connections`` do around a real task."""

from __future__ import annotations

from types import SimpleNamespace

from celery.fixups.django import DjangoWorkerFixup
from django.db import connection, connections

from whim.celery import app, reuse_connections


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def around_a_task() -> None:
    """What the worker runs between two tasks: postrun of one, prerun of the next."""
    fixup = DjangoWorkerFixup(app)  # reads the app's configuration, as the worker's does
    sender = SimpleNamespace(request=SimpleNamespace(is_eager=False))
    fixup.on_task_postrun(sender)
    reuse_connections()
    fixup.on_task_prerun(sender)
    reuse_connections()


def test_a_worker_keeps_its_connection_from_one_task_to_the_next(transactional_db: None) -> None:
    first = backend_pid()
    around_a_task()
    assert backend_pid() == first


def test_a_connection_that_died_between_tasks_is_replaced_not_reused(
    transactional_db: None,
) -> None:
    dead = backend_pid()
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [dead])
    finally:
        other.close()
    around_a_task()
    assert backend_pid() != dead  # a new session, and no error on the task's first query
