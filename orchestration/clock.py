"""One clock: the database's. Leases, cooldowns and budget dates all read it."""

from __future__ import annotations

import datetime as dt
import zlib
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection
from django.utils import timezone


def db_now() -> dt.datetime:
    """The database server's current time (``clock_timestamp()`` on PostgreSQL).

    SQLite (embedded mode) runs in this process, so its clock is this host's.
    """
    if connection.vendor != "postgresql":
        return timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
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
    key = zlib.crc32(name.encode()) - 2**31
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
