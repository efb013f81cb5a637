"""The claim's statements: the gate, the nodes and the first page of the queue (locked) in
one round trip; the walk of the queue that places the items a batch takes on nodes; the
writes that move them.

Called by ``dispatch_claim`` (services/dispatch.py), in its transaction. The claim is on the
pickup's path (an item committed → its attempt started), so its statements are written once
— the queue's page compiled from ``WorkItem.claimable`` once per process and setting, the
rest in SQL — and travel together (``rows.statements_run``), not query sets built anew for
every claim.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
from typing import Any, cast
from uuid import UUID

from django.conf import settings
from django.db import connection
from django.db.models import Count, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce, Now
from django.utils import timezone

from orchestration import clock as clock_module
from orchestration.clock import budget_date
from orchestration.fleet import Node, NodeState
from orchestration.ledger import DailyUsage
from orchestration.models import DispatchState, Worker, WorkItem, WorkItemStatus, WorkItemType
from orchestration.rows import Statement, statements_run
from orchestration.services.placement import NodeSlots, node_pick, wanted_labels
from orchestration.services.specs import spec_generator

# How many queued items one claim looks at past the ones no free node can take.
CLAIM_SCAN = 500

Row = tuple[UUID, str, Any, str, str, int]  # id, status, metadata, type, repo, prior attempts


@dataclasses.dataclass(frozen=True)
class Opening:
    """What a claim reads before it walks: the clock, the gate's figures (with the gate row
    locked), the active nodes and the first page of the queue in claim order."""

    now: dt.datetime
    last_spawn_at: dt.datetime | None
    active: int
    spawns: int
    nodes: list[NodeSlots]
    rows: list[Row]
    # How many rows the first page could hold: fewer came only if the queue has no more.
    first_page: int


@dataclasses.dataclass(frozen=True)
class Picked:
    """An item a claim took (locked), with what the claim reads of it and its node."""

    item_id: UUID
    status: str
    metadata: Any
    prior_attempts: int
    node: str


def claim_page(limit: int) -> int:
    """How many rows a claim of ``limit`` reads (and locks) first; a bigger page follows each
    one the walk exhausts."""
    return min(max(limit, 20), CLAIM_SCAN)


def claim_open(*, gate: bool, page: int) -> Opening | None:
    """Steps 1 to 3 of the claim in one round trip: with ``gate``, lock the gate row; read the
    database clock, the active attempts and the attempts charged on the clock's budget day;
    the active nodes with their running attempts; the first ``page`` rows of the queue, locked
    (``_page``; through the gate no more than its room). None: the gate row does not exist
    yet (the caller makes it)."""
    quote = connection.ops.quote_name
    # The gate row locked first; what it guards read after, by statements of their own (a
    # statement's snapshot predates the lock it waited for, so it would miss what the claimer
    # before it committed).
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    gate_row: Statement = (
        f"SELECT last_spawn_at FROM {quote(DispatchState._meta.db_table)} WHERE id = 1{lock}"  # noqa: S608
        if gate
        else "SELECT NULL",
        [],
    )
    # The clock, the active attempts and the attempts charged on the clock's budget day.
    usage = quote(DailyUsage._meta.db_table)
    postgres = connection.vendor == "postgresql"
    host_now = timezone.now()  # SQLite's clock (embedded: the one process that writes)
    if postgres:
        clock, day = clock_module.CLOCK_SQL, "(t.now AT TIME ZONE %s)::date"
        clock_params: list[Any] = [settings.WHIM_TIMEZONE]
    else:
        clock, day = "NULL", "%s"
        clock_params = [connection.ops.adapt_datefield_value(budget_date(host_now))]
    active, active_params = _active_count()
    figures: Statement = (
        f"SELECT t.now, {active}, (SELECT spawns FROM {usage} WHERE date = {day}) "  # noqa: S608
        f"FROM (SELECT {clock} AS now) t",
        [*active_params, *clock_params],
    )
    running_on, running_params = _active_count(" AND w.node_id = n.name")
    nodes: Statement = (
        f"SELECT n.name, n.state, n.labels, n.capacity, {running_on} "  # noqa: S608
        f"FROM {quote(Node._meta.db_table)} n WHERE n.state = %s",
        [*running_params, NodeState.ACTIVE],
    )
    if gate and settings.COOLDOWN_SECONDS > 0:
        page = 1  # a cooldown lets one claim through at a time (``gate_room``)
    capped = gate and postgres
    gates, [(now, running, spawns)], node_rows, rows = statements_run(
        [gate_row, figures, nodes, _page(0, page, capped=capped)]
    )
    if not gates:
        return None
    [(last_spawn_at,)] = gates
    return Opening(
        # As ``_page`` capped it (the count it read came after this one: never less room).
        first_page=min(page, max(settings.MAX_WORKERS - int(running), 0)) if capped else page,
        now=now if postgres else host_now,
        last_spawn_at=last_spawn_at if postgres or last_spawn_at is None else _aware(last_spawn_at),
        active=int(running),
        spawns=int(spawns or 0),
        nodes=[
            NodeSlots(
                name,
                state,
                frozenset(str(lb) for lb in (_json(raw) or [])),
                int(capacity),
                int(count),
            )
            for name, state, raw, capacity, count in node_rows
        ],
        rows=[_row(row) for row in rows],
    )


def claim_items(opening: Opening, limit: int, *, use_capacity: bool) -> list[Picked]:
    """Step 4 of the claim: up to ``limit`` claimable items free nodes can take, each with its
    node's name, in claim order.

    The queue is read in pages that lock their rows as they read them (SKIP LOCKED: rows
    another transaction holds are passed over; the first page came with ``opening``). Each
    item takes a node offering its labels with a free slot, the slots counting down as the
    batch fills; an item no free node can take is passed over and does not hold up the
    items after it (its row stays locked until the claim commits). A review of a
    repository this batch already took a review of ends the batch when
    REVIEW_CONCURRENCY_PER_REPO is on (the next claim decides it against the running
    reviews, as a single claim would)."""
    taken: dict[str, int] = {}  # node name -> slots this batch took
    review_repos: set[str] = set()
    reviews_limited = settings.REVIEW_CONCURRENCY_PER_REPO > 0
    claimed: list[Picked] = []
    seen: set[UUID] = set()  # a page may repeat a row when the queue moved between pages
    offset, page, rows = 0, claim_page(limit), opening.rows
    while True:
        for pk, status, metadata, kind, repo, prior in rows:
            if pk in seen:
                continue
            seen.add(pk)
            if reviews_limited and kind == WorkItemType.REVIEW and repo in review_repos:
                return claimed
            node = node_pick(
                _less(opening.nodes, taken), wanted_labels(metadata), use_capacity=use_capacity
            )
            if node is None:
                continue
            taken[node.name] = taken.get(node.name, 0) + 1
            if reviews_limited and kind == WorkItemType.REVIEW:
                review_repos.add(repo)
            claimed.append(Picked(pk, status, metadata, prior, node.name))
            if len(claimed) >= limit:
                return claimed
        full = opening.first_page if offset == 0 else page
        offset += len(rows)
        if not rows or len(rows) < full or offset >= CLAIM_SCAN:
            return claimed
        page = min(page * 5, CLAIM_SCAN)
        [raw] = statements_run([_page(offset, page, capped=False)])
        rows = [_row(row) for row in raw]


def claim_assign(picked: list[Picked], workers: list[Worker], now: dt.datetime) -> Statement:
    """Step 5: move the picked items to ``assigned``, each to its new attempt (whose INSERT
    runs before it); returns the ids it moved."""
    quote = connection.ops.quote_name
    items, table = quote(WorkItem._meta.db_table), quote(Worker._meta.db_table)
    item_marks = ", ".join(["%s"] * len(picked))
    worker_marks = ", ".join(["%s"] * len(workers))
    sql = (
        f"UPDATE {items} SET status = %s, worker_id = (SELECT w.id FROM {table} w "  # noqa: S608
        f"WHERE w.work_item_id = {items}.id AND w.id IN ({worker_marks})), updated_at = %s, "
        f"error = '', error_category = '' WHERE id IN ({item_marks}) AND status IN (%s, %s) "
        "RETURNING id"
    )
    updated_at = WorkItem._meta.get_field("updated_at").get_db_prep_value(now, connection)
    params = [
        WorkItemStatus.ASSIGNED,
        *(_prep_pk(w.pk) for w in workers),
        updated_at,
        *(_prep_pk(item.item_id) for item in picked),
        WorkItemStatus.QUEUED,
        WorkItemStatus.GENERATING,
    ]
    return sql, params


def claim_spawned(now: dt.datetime) -> Statement:
    """Step 5: the gate row's last spawn time (the cooldown's start)."""
    table = connection.ops.quote_name(DispatchState._meta.db_table)
    field = DispatchState._meta.get_field("last_spawn_at")
    return (
        f"UPDATE {table} SET last_spawn_at = %s WHERE id = 1",  # noqa: S608
        [field.get_db_prep_value(now, connection)],
    )


def _page(offset: int, page: int, *, capped: bool) -> Statement:
    """A page of the queue in claim order, its rows locked (``WorkItem.claimable`` on the
    database's clock; rows another transaction holds are skipped). ``capped`` (the first
    page, read before the gate decides; PostgreSQL): no longer than the room MAX_WORKERS
    leaves, so a claim at capacity locks no row."""
    sql, params = _page_sql(
        spec_generator() == "agent", settings.REVIEW_CONCURRENCY_PER_REPO, offset
    )
    limit, limit_params = f"LIMIT {int(page)}", []
    if capped:
        active, active_params = _active_count()
        limit = f"LIMIT LEAST(%s, GREATEST(%s - {active}, 0))"
        limit_params = [int(page), settings.MAX_WORKERS, *active_params]
    # The LIMIT is the statement's last parameter (only its lock clause follows it).
    return sql.replace(_UNBOUNDED, limit), [*params, *limit_params]


# The LIMIT the page is compiled with, replaced by the page's own.
_SENTINEL = 987_654_321
_UNBOUNDED = f"LIMIT {_SENTINEL}"


@functools.lru_cache(maxsize=64)
def _page_sql(generating: bool, reviews: int, offset: int) -> tuple[str, tuple[Any, ...]]:
    """The page's statement, compiled once per process and setting (``reviews``:
    REVIEW_CONCURRENCY_PER_REPO, which ``claimable`` reads). In a transaction (the lock)."""
    prior = (
        Worker.objects.filter(work_item=OuterRef("pk"))
        .order_by()
        .values("work_item")
        .annotate(n=Count("pk"))
        .values("n")
    )
    due = (
        WorkItem.objects.claimable(cast(dt.datetime, Now()), generating=generating)
        .select_for_update(skip_locked=True)
        .annotate(prior_attempts=Coalesce(Subquery(prior), Value(0)))
        .values_list("pk", "status", "metadata", "type", "repo", "prior_attempts")
    )
    sql, params = due[offset : offset + _SENTINEL].query.sql_with_params()
    if sql.count(_UNBOUNDED) != 1:  # the ORM wrote the page otherwise: refuse, never guess
        raise RuntimeError("the claim's page statement has no single LIMIT to set")
    return sql, params


def _active_count(also: str = "") -> tuple[str, list[Any]]:
    """A subquery counting the active attempts (``w``), with ``also`` as a further condition."""
    workers = connection.ops.quote_name(Worker._meta.db_table)
    marks = ", ".join(["%s"] * len(Worker.ACTIVE))
    sql = f"(SELECT COUNT(*) FROM {workers} w WHERE w.status IN ({marks}){also})"  # noqa: S608
    return sql, list(Worker.ACTIVE)


def _row(row: tuple[Any, ...]) -> Row:
    pk, status, metadata, kind, repo, prior = row
    return WorkItem._meta.pk.to_python(pk), status, _json(metadata), kind, repo, int(prior)


def _json(value: Any) -> Any:
    """A JSON column as the ORM reads it (the backends hand it over as text)."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def _prep_pk(pk: UUID) -> Any:
    return WorkItem._meta.pk.get_db_prep_value(pk, connection)


def _aware(value: Any) -> dt.datetime:
    """A datetime SQLite returned as text, as the aware UTC datetime the ORM would give."""
    parsed = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=dt.UTC)


def _less(nodes: list[NodeSlots], taken: dict[str, int]) -> list[NodeSlots]:
    """The nodes with the slots this batch took counted as running."""
    if not taken:
        return nodes
    return [dataclasses.replace(n, running=n.running + taken.get(n.name, 0)) for n in nodes]
