"""Keeping the tallies short: the ``tallies`` sweep folds their delta rows.

The triggers (``orchestration.tally_sql``) append a delta row per change; folding them into
one row per key keeps every read a sum over a few thousand rows. Counts do not change when
folded, so the sweep can run at any time, late or twice.
"""

from __future__ import annotations

from django.db import connection, transaction


def tallies_compact() -> dict[str, int]:
    """Fold each tally's rows into one per key; returns how many rows went away."""
    if connection.vendor != "postgresql":  # SQLite counts its tables directly: no tallies
        return {"folded": 0}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT whim_tallies_compact()")
        row = cursor.fetchone()
    return {"folded": int(row[0]) if row else 0}


def tallies_rebuild() -> None:
    """Recount every tally from the rows (writers wait meanwhile): a repair, never needed
    while the triggers are installed."""
    if connection.vendor != "postgresql":
        return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT whim_tallies_rebuild()")
