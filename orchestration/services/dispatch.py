"""The claim: pick the next queued item and start an attempt, if the limits allow.

Capacity, cooldown and the budgets (attempts per day; money per day, DAILY_COST_BUDGET) are
decided in the same transaction that creates the Worker row, under one row lock (the
DispatchState row), and re-evaluated for every claim. A claim
either creates the worker *and* moves the item to ``assigned``, or changes nothing: an item
can never sit ``assigned`` because the gate closed after it was taken.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import logging
from decimal import Decimal
from typing import cast
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.db.models.functions import Now

from orchestration import nudge
from orchestration.choices import EventKind
from orchestration.clock import budget_date, db_now, next_budget_day_start
from orchestration.fleet import node_queue
from orchestration.models import (
    AttemptKind,
    DailyUsage,
    DispatchState,
    Worker,
    WorkerStatus,
    WorkItem,
    WorkItemStatus,
)
from orchestration.nudge import TaskName, send_on_commit
from orchestration.services.costs import cost_spent_today, daily_cost_budget
from orchestration.services.events import event_record
from orchestration.services.placement import (
    NodeSlots,
    node_implicit_ensure,
    node_pick,
    nodes_slots,
    wanted_labels,
)
from orchestration.services.specs import spec_attempts_due, spec_generator

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class GateDecision:
    """Whether a new attempt may start now, and if not, why and until when."""

    open: bool
    reason: str = ""
    until: dt.datetime | None = None
    active_workers: int = 0
    spawns_today: int = 0
    # What the cost ledger charged today (read only when DAILY_COST_BUDGET is on).
    cost_today: Decimal = Decimal(0)


def worker_token(worker_id: UUID | str) -> str:
    """The secret a worker presents on its callbacks: derived, so a retried start reuses it."""
    return hmac.new(
        settings.SECRET_KEY.encode(), f"whim-worker:{worker_id}".encode(), hashlib.sha256
    ).hexdigest()


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def usage_add(*, now: dt.datetime, spawns: int = 0, iterations: int = 0) -> None:
    """Charge the day ``now`` falls on (in WHIM_TIMEZONE); its row is made on first use."""
    day = budget_date(now)
    DailyUsage.objects.bulk_create([DailyUsage(date=day)], ignore_conflicts=True)
    DailyUsage.objects.filter(date=day).update(
        spawns=F("spawns") + spawns, iterations=F("iterations") + iterations
    )


def gate_evaluate(*, now: dt.datetime, last_spawn_at: dt.datetime | None) -> GateDecision:
    """Capacity, then cooldown, then the day's budget of attempts, then of money (when
    DAILY_COST_BUDGET is on). Read-only; the caller holds the lock."""
    active = Worker.objects.filter(status__in=Worker.ACTIVE).count()
    usage = DailyUsage.objects.filter(date=budget_date(now)).first()
    spawns = usage.spawns if usage else 0
    return gate_decide(now=now, last_spawn_at=last_spawn_at, active=active, spawns=spawns)


def gate_decide(
    *,
    now: dt.datetime,
    last_spawn_at: dt.datetime | None,
    active: int,
    spawns: int,
    spent: Decimal | None = None,
) -> GateDecision:
    """The gate's decision from figures already read (``spent``: today's cost, read from the
    ledger when None and DAILY_COST_BUDGET is on). Status pages read them in one query."""
    if active >= settings.MAX_WORKERS:
        return GateDecision(False, "capacity", None, active, spawns)
    if last_spawn_at is not None and settings.COOLDOWN_SECONDS > 0:
        ready_at = last_spawn_at + dt.timedelta(seconds=settings.COOLDOWN_SECONDS)
        if now < ready_at:
            return GateDecision(False, "cooldown", ready_at, active, spawns)
    if spawns >= settings.DAILY_BUDGET:
        return GateDecision(False, "budget", next_budget_day_start(now), active, spawns)
    budget = daily_cost_budget()
    if budget is not None:
        spent = cost_spent_today(now) if spent is None else spent
        if spent >= budget:
            until = next_budget_day_start(now)
            return GateDecision(False, "cost_budget", until, active, spawns, spent)
        return GateDecision(True, "", None, active, spawns, spent)
    return GateDecision(True, "", None, active, spawns)


def gate_status() -> GateDecision:
    """The gate as it stands now, for status pages (no lock taken)."""
    state = DispatchState.objects.filter(pk=1).first()
    return gate_evaluate(now=db_now(), last_spawn_at=state.last_spawn_at if state else None)


def queue_next_claimable(now: dt.datetime) -> QuerySet[WorkItem]:
    """Queued items due now, in claim order: execution before verification, then priority
    (critical first), then oldest. Rows locked by another claimer are skipped. With the agent
    spec generator, ``generating`` items due now are claimable too (a ``spec`` attempt)."""
    generating = spec_generator() == "agent"
    return WorkItem.objects.claimable(now, generating=generating).select_for_update(
        skip_locked=True
    )


# How many queued items one claim looks at past the ones no free node can take.
CLAIM_SCAN = 500


def dispatch_claim_one(*, use_gate: bool = True) -> UUID | None:
    """Claim one item, pick its node and create its attempt; returns the new worker id, or None.

    1. Lock the gate row (one claim at a time decides the limits).
    2. Read the database clock and evaluate capacity, cooldown and budget.
    3. Read the nodes with a free slot (with none registered at all: register this host's,
       the implicit node). None free: nothing to claim.
    4. Walk the claimable items in claim order; the first one some free node offers every
       label of (metadata.nodeLabels) is locked (rows another transaction holds are
       skipped) and gets the node with the most free slots. An item no free node can take
       is passed over: it does not hold up the items after it.
    5. Create the Worker (``starting``, on that node), move the item to ``assigned``, charge
       the budget, record the spawn time and an event — all in this transaction.
    6. After commit, enqueue "start worker <id>" on the node's own queue.
    ``use_gate=False`` skips steps 1 and 2 and the nodes' capacity (used to test the queue
    claim on its own).
    """
    with transaction.atomic():
        now = db_now()
        if use_gate:
            DispatchState.objects.bulk_create([DispatchState(pk=1)], ignore_conflicts=True)
            state = DispatchState.objects.select_for_update().get(pk=1)
            now = db_now()
            decision = gate_evaluate(now=now, last_spawn_at=state.last_spawn_at)
            if not decision.open:
                return None
        node_implicit_ensure(now)
        nodes = nodes_slots()
        if not any(n.free > 0 or not use_gate for n in nodes):
            return None
        picked = _claim_item(now, nodes, use_capacity=use_gate)
        if picked is None:
            return None
        item, node = picked
        # A ``generating`` item's attempt writes its spec; any other does the item's job.
        kind = AttemptKind.SPEC if item.status == WorkItemStatus.GENERATING else AttemptKind.WORK
        worker = Worker(
            work_item=item,
            status=WorkerStatus.STARTING,
            attempt=item.workers.count() + 1,
            kind=kind,
            last_heartbeat=now,
            node_id=node,
        )
        worker.token_hash = token_digest(worker_token(worker.id))
        worker.save()
        moved = WorkItem.objects.filter(pk=item.pk, status=item.status).update(
            status=WorkItemStatus.ASSIGNED,
            worker=worker,
            updated_at=now,
            error="",
            error_category="",
        )
        if moved != 1:  # cannot happen while we hold the row lock; refuse loudly if it does
            raise RuntimeError(f"claimed item {item.pk} changed under its row lock")
        if use_gate:
            usage_add(now=now, spawns=1)
            DispatchState.objects.filter(pk=1).update(last_spawn_at=now)
        event_record(
            work_item=item,
            worker=worker,
            kind=EventKind.CLAIMED,
            from_status=item.status,
            to_status=WorkItemStatus.ASSIGNED,
            data={"attempt": worker.attempt, "kind": kind, "node": node},
        )
        send_on_commit(TaskName.START_WORKER, str(worker.pk), queue=node_queue(node))
    logger.info("claimed work item %s as worker %s on node %s", item.pk, worker.pk, node)
    return worker.pk


def _claim_item(
    now: dt.datetime, nodes: list[NodeSlots], *, use_capacity: bool
) -> tuple[WorkItem, str] | None:
    """Step 4 of the claim: the first claimable item a free node can take, locked, with the
    node's name. The scan reads ids and wanted labels only, without locks; the item found is
    then locked with SKIP LOCKED and its claimability re-checked under the lock."""
    claimable = queue_next_claimable(now)
    scan = WorkItem.objects.claimable(now, generating=spec_generator() == "agent")
    offset, page = 0, 20
    while offset < CLAIM_SCAN:
        rows = list(scan.values_list("pk", "metadata__nodeLabels")[offset : offset + page])
        for pk, labels in rows:
            wanted = wanted_labels({"nodeLabels": labels})
            node = node_pick(nodes, wanted, use_capacity=use_capacity)
            if node is None:
                continue
            item = claimable.filter(pk=pk).first()
            if item is not None:
                return item, node.name
        if len(rows) < page:
            return None
        offset += page
        page = min(page * 5, CLAIM_SCAN)
    return None


DISPATCH_BATCH = 50  # claims per dispatch run


def dispatch_run(*, max_claims: int = DISPATCH_BATCH) -> int:
    """Claim while the gate allows (bounded per call); returns how many were claimed. A run
    that finds nothing claimable stops at one unlocked EXISTS (no gate lock, no clock read)."""
    generating = spec_generator() == "agent"
    db_clock = cast(dt.datetime, Now())  # the database's clock, in the query (one clock)
    if not WorkItem.objects.claimable(db_clock, generating=generating).exists():
        return 0
    claimed = 0
    while claimed < max_claims and dispatch_claim_one() is not None:
        claimed += 1
    return claimed


def dispatch_renudge_starts() -> int:
    """Level-triggered recovery of lost "start worker" messages.

    A worker still ``starting`` after START_RENUDGE_SECONDS gets its start enqueued again,
    and again at most once per START_RENUDGE_SECONDS after that, so a start that is merely
    slow is not buried under duplicates. The task is idempotent, so a duplicate costs little;
    the nudge is marked with a conditional UPDATE, so two dispatchers send it once. Returns
    how many were nudged.
    """
    now = db_now()
    cutoff = now - dt.timedelta(seconds=settings.START_RENUDGE_SECONDS)
    due = Worker.objects.filter(status=WorkerStatus.STARTING, last_heartbeat__lt=cutoff).filter(
        Q(start_nudged_at__isnull=True) | Q(start_nudged_at__lt=cutoff)
    )
    nudged = 0
    for worker_id, node in list(due.values_list("pk", "node_id")[:100]):
        if due.filter(pk=worker_id).update(start_nudged_at=now):
            try:
                queue = node_queue(node) if node else None
                nudge.send(TaskName.START_WORKER, str(worker_id), queue=queue)
            except Exception as exc:  # broker down: sent again a period later (the mark stays)
                logger.warning("could not re-send start of %s (%s)", worker_id, type(exc).__name__)
                continue
            nudged += 1
    return nudged


def dispatch_renudge_generation() -> int:
    """Level-triggered recovery of lost spec generation nudges: ``generating`` items whose
    backoff (or a command run's lease) has passed, or that no try touched for a minute, get
    their generation enqueued again. None with the agent generator: the claim takes them."""
    if spec_generator() == "agent":
        return 0
    ids = list(spec_attempts_due(db_now()).values_list("pk", flat=True)[:100])
    for item_id in ids:
        nudge.send(TaskName.GENERATE_SPEC, str(item_id))
    return len(ids)
