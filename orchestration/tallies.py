"""Counts the pages read at any size, kept by the database: the tallies.

Each tally table holds signed deltas. Triggers installed by migration 0011 append one row per
change, in the transaction that makes it: a statement's inserted or deleted items (COPY and
the retention purge included) as one row per key, an UPDATE that moves an item's key (its
status, priority, type, repo or verdict) as a -1 and a +1. Appending never waits on another
writer and never deadlocks: no counter row is shared. A count is the SUM of its key's rows;
the ``tallies`` sweep (``services.tallies``) folds them into one row per key every minute,
so a read sums a few thousand rows whatever the history's size.

Why triggers, not the services: every path that moves a row — the state machine's
conditional UPDATEs, bulk actions, the admin, a cascade, a migration, a DBA at psql — keeps
the tallies right without knowing about them. Re-exported by ``orchestration.models``.
"""

from __future__ import annotations

from decimal import Decimal

from django.db import models


class ItemTally(models.Model):
    """Work items per (repo, type, status, priority, verdict): ``n`` is a signed delta. Each
    change is tallied twice: under its repository and under repo "" (every repository), so
    an unfiltered count sums a few hundred rows however many repositories there are."""

    repo = models.CharField(max_length=200)
    type = models.CharField(max_length=20)
    status = models.CharField(max_length=20)
    priority = models.CharField(max_length=10)
    # A verification item's verdict (``verification_passed``); None for the others.
    verdict = models.BooleanField(null=True)
    n = models.BigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["repo"], name="itemtally_repo")]

    def __str__(self) -> str:
        return f"{self.repo} {self.type} {self.status} {self.priority}: {self.n:+d}"


class WorkerTally(models.Model):
    """Attempts per status: ``n`` is a signed delta."""

    status = models.CharField(max_length=20)
    n = models.BigIntegerField()

    def __str__(self) -> str:
        return f"{self.status}: {self.n:+d}"


class MetricsTally(models.Model):
    """Sums over every kept ``WorkerMetrics`` row, as signed deltas: tokens, the cost the
    agents reported, and the tokens of the attempts that reported no cost (priced on read)."""

    n = models.BigIntegerField()
    tokens_in = models.BigIntegerField()
    tokens_out = models.BigIntegerField()
    reported_usd = models.DecimalField(max_digits=20, decimal_places=6, default=Decimal(0))
    unpriced_in = models.BigIntegerField()
    unpriced_out = models.BigIntegerField()

    class Meta:
        verbose_name_plural = "metrics tallies"

    def __str__(self) -> str:
        return f"{self.n:+d} metrics rows"


class FinishedTally(models.Model):
    """Items that finished (``completed_at`` set) per quarter hour of ``completed_at``, type
    and status, with their durations (``completed_at - created_at``) summed in microseconds:
    today's figures and the throughput chart without reading the day's rows. A quarter hour,
    because every time zone's midnight falls on one."""

    bucket = models.DateTimeField()
    type = models.CharField(max_length=20)
    status = models.CharField(max_length=20)
    n = models.BigIntegerField()
    took_us = models.BigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["bucket"], name="finishedtally_bucket")]

    def __str__(self) -> str:
        return f"{self.bucket} {self.type} {self.status}: {self.n:+d}"


class QueueFlowTally(models.Model):
    """Events that moved an item into the waiting states (``entered``) or out of them
    (``exited``), per quarter hour of the event: the queue-depth chart's steps."""

    bucket = models.DateTimeField()
    entered = models.BigIntegerField()
    exited = models.BigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["bucket"], name="queueflowtally_bucket")]

    def __str__(self) -> str:
        return f"{self.bucket}: +{self.entered} -{self.exited}"
