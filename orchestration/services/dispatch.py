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
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Q

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
    WorkItemEvent,
    WorkItemStatus,
)
from orchestration.nudge import TaskName, send_on_commit
from orchestration.rows import Statement, counters_statement, insert_statement, statements_run
from orchestration.services.claim_walk import (
    claim_assign,
    claim_items,
    claim_open,
    claim_page,
    claim_spawned,
)
from orchestration.services.costs import cost_spent_today, daily_cost_budget
from orchestration.services.events import events_insert, events_inserted
from orchestration.services.placement import node_implicit_ensure, nodes_slots
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
    statements_run([usage_statement(now=now, spawns=spawns, iterations=iterations)])


def usage_statement(*, now: dt.datetime, spawns: int = 0, iterations: int = 0) -> Statement:
    """``usage_add``'s statement, to run with others."""
    return counters_statement(
        DailyUsage, {"date": budget_date(now)}, {"spawns": spawns, "iterations": iterations}
    )


def gate_room(decision: GateDecision) -> int:
    """How many claims in a row an open gate lets through, as that many single claims under
    the lock would decide: capacity and the day's attempts are counted down by each; any
    cooldown closes the gate after the first; today's cost does not move with a claim."""
    if not decision.open:
        return 0
    if settings.COOLDOWN_SECONDS > 0:
        return 1
    return max(
        min(
            settings.MAX_WORKERS - decision.active_workers,
            settings.DAILY_BUDGET - decision.spawns_today,
        ),
        0,
    )


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


def dispatch_claim_one(*, use_gate: bool = True) -> UUID | None:
    """Claim one item (``dispatch_claim`` of one); returns the new worker id, or None."""
    claimed = dispatch_claim(1, use_gate=use_gate)
    return claimed[0] if claimed else None


def dispatch_claim(limit: int, *, use_gate: bool = True) -> list[UUID]:
    """Claim up to ``limit`` items in one transaction, each on a node, each with an attempt;
    returns the new worker ids in claim order.

    1. Lock the gate row (one claimer at a time decides the limits).
    2. Read the database clock and evaluate capacity, cooldown and budget: the batch is what
       that many single claims would let through (``gate_room``; 1 with a cooldown).
    3. Read the nodes with a free slot (with none registered at all: register this host's,
       the implicit node). None free: nothing to claim.
    4. Walk the claimable items in claim order, read in pages that lock their rows (rows
       another transaction holds are skipped); each one some free node offers every label
       of (metadata.nodeLabels) takes the node with the most free slots left. An item no
       free node can take is passed over: it does not hold up the items after it.
    5. Create the Workers (``starting``, on their nodes), move the items to ``assigned``,
       charge the budget once for all, record the spawn time and an event per item — all in
       this transaction, in a fixed number of statements whatever the batch's size.
    6. After commit, enqueue one "start workers <ids>" per node on the node's own queue (its
       worker starts them together or sends each on as its own message: ``start_worker``).
    Steps 1 to 3 and the walk's first page are one round trip to the database, step 5
    another (``claim_walk``).
    ``use_gate=False`` skips steps 1 and 2 and the nodes' capacity (used to test the queue
    claim on its own).
    """
    if limit < 1:
        return []
    with transaction.atomic():
        opening = claim_open(gate=use_gate, page=claim_page(limit))
        if opening is None:  # the gate row's first use
            DispatchState.objects.bulk_create([DispatchState(pk=1)], ignore_conflicts=True)
            opening = claim_open(gate=use_gate, page=claim_page(limit))
            assert opening is not None
        now = opening.now
        if use_gate:
            gate = gate_decide(
                now=now,
                last_spawn_at=opening.last_spawn_at,
                active=opening.active,
                spawns=opening.spawns,
            )
            limit = min(limit, gate_room(gate))
            if limit < 1:
                return []
        if not opening.nodes:
            node_implicit_ensure(now)
            opening = dataclasses.replace(opening, nodes=nodes_slots())
        if use_gate and not any(n.free > 0 for n in opening.nodes):
            return []
        picked = claim_items(opening, limit, use_capacity=use_gate)
        if not picked:
            return []
        workers = [
            Worker(
                work_item_id=item.item_id,
                status=WorkerStatus.STARTING,
                attempt=item.prior_attempts + 1,
                # A ``generating`` item's attempt writes its spec; any other does its job.
                kind=AttemptKind.SPEC
                if item.status == WorkItemStatus.GENERATING
                else AttemptKind.WORK,
                last_heartbeat=now,
                node_id=item.node,
            )
            for item in picked
        ]
        for worker in workers:
            worker.token_hash = token_digest(worker_token(worker.id))
        events = [
            WorkItemEvent(
                work_item_id=item.item_id,
                worker_id=worker.pk,
                kind=EventKind.CLAIMED,
                from_status=item.status,
                to_status=WorkItemStatus.ASSIGNED,
                data={"attempt": worker.attempt, "kind": worker.kind, "node": item.node},
            )
            for item, worker in zip(picked, workers, strict=True)
        ]
        # Step 5's writes, one round trip: the attempts, the items moved to them, the day's
        # charge and the spawn time (through the gate), the events.
        writes = [insert_statement(workers), claim_assign(picked, workers, now)]
        if use_gate:
            writes += [usage_statement(now=now, spawns=len(workers)), claim_spawned(now)]
        results = statements_run([*writes, events_insert(events)])
        if len(results[1]) != len(picked):  # cannot happen while we hold the row locks
            ids = [str(item.item_id) for item in picked]
            raise RuntimeError(f"claimed items {ids} changed under their row locks")
        events_inserted(events, results[-1])
        starts: dict[str, list[str]] = {}
        for item, worker in zip(picked, workers, strict=True):
            starts.setdefault(item.node, []).append(str(worker.pk))
        for node, worker_ids in starts.items():  # one message per node (the task may fan out)
            send_on_commit(TaskName.START_WORKER, *worker_ids, queue=node_queue(node))
    for item, worker in zip(picked, workers, strict=True):
        logger.info(
            "claimed work item %s as worker %s on node %s", item.item_id, worker.pk, item.node
        )
    return [worker.pk for worker in workers]


DISPATCH_BATCH = 100  # claims per dispatch run


def dispatch_run(*, max_claims: int = DISPATCH_BATCH) -> int:
    """Claim while the gate allows (bounded per call); returns how many were claimed. A run
    that finds nothing claimable stops at its first claim's first round trip."""
    claimed = 0
    while claimed < max_claims:
        want = max_claims - claimed
        got = len(dispatch_claim(want))
        claimed += got
        if got < want:  # the gate, the nodes or the queue gave out: a next batch finds nothing
            break
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
