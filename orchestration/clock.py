"""One clock: the database's. Leases, cooldowns and budget dates all read it."""

from __future__ import annotations

import contextlib
import datetime as dt
import zlib
from collections.abc import Iterator
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection
from django.utils import timezone

# The database's clock in SQL (PostgreSQL), for statements that read it among other things;
# a test may stand a fixed time in for it.
CLOCK_SQL = "clock_timestamp()"


def db_now() -> dt.datetime:
    """The database server's current time (``CLOCK_SQL`` on PostgreSQL).

    SQLite (embedded mode) runs in this process, so its clock is this host's.
    """
    if connection.vendor != "postgresql":
        return timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {CLOCK_SQL}")
        value: dt.datetime = cursor.fetchone()[0]
    return value


def budget_date(now: dt.datetime) -> dt.date:
    """The calendar date in WHIM_TIMEZONE that ``now`` is charged to."""
    return now.astimezone(ZoneInfo(settings.WHIM_TIMEZONE)).date()


def next_budget_day_start(now: dt.datetime) -> dt.datetime:
    """When the next budget day begins (local midnight in WHIM_TIMEZONE)."""
    zone = ZoneInfo(settings.WHIM_TIMEZONE)
    tomorrow = budget_date(now) + dt.timedelta(days=1)
    return dt.datetime.combine(tomorrow, dt.time.min, tzinfo=zone)


def advisory_xact_lock(name: str) -> None:
    """Serialise a critical section for the rest of the transaction.

    PostgreSQL: ``pg_advisory_xact_lock``. SQLite needs nothing: its IMMEDIATE transactions
    (settings) already admit one writer at a time.
    """
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_lock_key(name)])


@contextlib.contextmanager
def advisory_try_lock(name: str) -> Iterator[bool]:
    """Whether this process may run ``name`` now: False while another session holds it.

    A session lock held across transactions, released on exit — or by PostgreSQL when the
    holder's connection dies, so a killed process never leaves it taken. SQLite (one
    machine, one beat): always True.
    """
    if connection.vendor != "postgresql":
        yield True
        return
    key = _lock_key(name)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        held = bool(cursor.fetchone()[0])
    try:
        yield held
    finally:
        if held:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
            except Exception:
                # The session is broken (an interrupted query): ending it is what frees the
                # lock for certain, rather than leaving it to the connection's max age.
                connection.close()


def _lock_key(name: str) -> int:
    return zlib.crc32(name.encode()) - 2**31
