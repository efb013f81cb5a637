"""The tallies (orchestration/tallies.py, kept by the triggers of migration 0011) always equal
a full count of the rows: after any sequence of submits, claims, completions, failures,
cancels, requeues, priority changes, metrics and retention purges, folded or not — and the
pages that read them say what a count of the rows says."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection

from bench.seed import seed
from orchestration.clock import db_now, next_budget_day_start
from orchestration.models import (
    Priority,
    Worker,
    WorkerMetrics,
    WorkItem,
    WorkItemStatus,
    WorkItemType,
)
from orchestration.readings import (
    _recent_counted,
    chart_start,
    finished_recent,
    tallies_counted,
    tallies_read,
)
from orchestration.services import work_items
from orchestration.services.commits import CommitVerdict
from orchestration.services.dispatch import dispatch_claim_one
from orchestration.services.sweeps import sweep_retention
from orchestration.services.tallies import tallies_compact, tallies_rebuild
from orchestration.services.workers import (
    Completion,
    completion,
    worker_complete,
    worker_fail,
    worker_mark_started,
)
from orchestration.tallies import ItemTally
from tests.callbacks_support import SHA
from tests.factories import running_attempt

pytestmark = pytest.mark.django_db

REPOS = ("acme/one", "acme/two", "acme/three")


def assert_tallies_match() -> None:
    """Every reading from the tallies equals the same reading counted from the rows."""
    for repo in ("", *REPOS):
        assert tallies_read(repo=repo) == tallies_counted(repo=repo), repo
    now = db_now()
    day_start = next_budget_day_start(now) - dt.timedelta(days=1)
    since = min(day_start, chart_start(now))
    assert finished_recent(now) == _recent_counted(since=since, day_start=day_start)


def _submit(rng: random.Random) -> None:
    kind = rng.choice((WorkItemType.EXECUTION, WorkItemType.REVIEW))
    work_items.work_item_submit(
        repo=rng.choice(REPOS),
        spec=f"# Item {rng.random()}",
        priority=rng.choice(Priority.values),
        type=kind,
        pr_number=rng.randrange(1, 1000) if kind == WorkItemType.REVIEW else None,
    )


def _claim_and_end(rng: random.Random) -> None:
    worker_id = dispatch_claim_one(use_gate=False)  # the next item in claim order
    if worker_id is None:
        return
    worker_mark_started(worker_id=worker_id, container_id=f"c-{worker_id}")
    worker = Worker.objects.get(pk=worker_id)
    ending = rng.choice(("complete", "fail", "leave"))
    if ending == "complete":
        worker_complete(
            worker_id=worker.pk,
            result=Completion(
                commit_sha="" if worker.work_item.type == WorkItemType.REVIEW else SHA,
                metrics={"tokensIn": rng.randrange(1, 10**6), "costUsd": Decimal(rng.choice("01"))},
            ),
        )
    elif ending == "fail":
        worker_fail(worker_id=worker.pk, error="boom", category="TEST")


def _operate(rng: random.Random) -> None:
    item = WorkItem.objects.order_by("?").first()
    if item is None:
        return
    action = rng.choice(("cancel", "requeue", "priority"))
    try:
        if action == "cancel":
            work_items.work_item_cancel(work_item_id=item.pk, reason="test")
        elif action == "requeue":
            work_items.work_item_requeue(work_item_id=item.pk, reset_retries=rng.random() < 0.5)
        else:
            work_items.work_item_set_priority(
                work_item_id=item.pk, priority=rng.choice(Priority.values), actor="test"
            )
    except Exception:  # refused (e.g. requeueing a queued item): a normal outcome
        pass


def _purge(rng: random.Random, settings: Any) -> None:
    """Retention: some finished items age past RETENTION_DAYS and the sweep deletes them."""
    finished = list(
        WorkItem.objects.filter(status__in=WorkItem.TERMINAL).values_list("pk", flat=True)
    )
    old = rng.sample(finished, k=len(finished) // 2)
    WorkItem.objects.filter(pk__in=old).update(updated_at=db_now() - dt.timedelta(days=40))
    settings.RETENTION_DAYS = 30
    sweep_retention()


@pytest.mark.parametrize("seed_value", [1, 2, 3])
def test_the_tallies_equal_a_full_count_after_a_random_sequence_of_transitions(
    seed_value: int, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Completions are checked against the repository; these repositories are made up.
    monkeypatch.setattr(
        completion, "commit_verify", lambda **kw: CommitVerdict(ok=True, checked_by="test")
    )
    settings.MAX_QUEUED = settings.MAX_QUEUED_PER_REPO = 10**6
    settings.MAX_RETRIES = 1
    rng = random.Random(seed_value)
    steps = (_submit, _submit, _claim_and_end, _claim_and_end, _operate)
    for i in range(60):
        rng.choice(steps)(rng)
        if i % 20 == 19:
            _purge(rng, settings)
        if i % 15 == 14:
            tallies_compact()
        if i % 10 == 9:
            assert_tallies_match()
    assert WorkItem.objects.exists() and Worker.objects.exists()
    assert_tallies_match()
    tallies_compact()
    assert_tallies_match()


def test_folding_keeps_the_counts_and_leaves_one_row_per_key() -> None:
    seed(items=400)
    for item in WorkItem.objects.filter(status=WorkItemStatus.QUEUED)[:30]:
        work_items.work_item_cancel(work_item_id=item.pk, reason="test")
    before = tallies_read()
    rows_before = ItemTally.objects.count()

    assert tallies_compact()["folded"] > 0

    assert tallies_read() == before == tallies_counted()
    keys = ItemTally.objects.values_list("repo", "type", "status", "priority", "verdict")
    assert len(keys) == len(set(keys)) < rows_before
    assert tallies_compact()["folded"] == 0  # a second fold finds nothing to do


def test_bulk_writes_and_deletes_are_tallied_per_statement() -> None:
    seed(items=600)  # COPY-free generation with the triggers off, then a rebuild
    assert_tallies_match()
    WorkItem.objects.filter(status=WorkItemStatus.COMPLETED, repo__endswith="1").update(
        status=WorkItemStatus.FAILED
    )
    WorkerMetrics.objects.filter(pk__in=WorkerMetrics.objects.values("pk")[:50]).update(cost_usd=0)
    WorkItem.objects.filter(status=WorkItemStatus.CANCELLED).delete()
    assert_tallies_match()


def test_a_rebuild_repairs_tallies_that_were_tampered_with() -> None:
    running_attempt(use_gate=False)
    ItemTally.objects.create(repo="", type="execution", status="queued", priority="low", n=5)
    assert tallies_read() != tallies_counted()

    tallies_rebuild()

    assert tallies_read() == tallies_counted()


def test_truncating_the_items_empties_their_tallies() -> None:
    seed(items=100)
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE orchestration_workitem, orchestration_worker, "
            "orchestration_workermetrics, orchestration_workitemevent, "
            "orchestration_learning, reviews_prreview, intake_githubaction, "
            "orchestration_filelock"
        )
    assert tallies_read() == tallies_counted()
    assert not ItemTally.objects.exists()
