"""The "why is this not running?" explainer: a work item's wait, in plain language.

``why_not_running`` reads the item's status, its retry schedule, the dispatch gate, its place in
the claim order and its attempt's latest lock event; ``gate_sentence`` says why the gate is closed
(the dashboard shows it too). Reads only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import cast

from django.conf import settings
from django.db.models import QuerySet
from django.db.models.functions import Now
from django.utils import timezone

from orchestration.choices import EventKind
from orchestration.models import (
    Node,
    NodeState,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
    WorkItemType,
)
from orchestration.readings import scalars_read
from orchestration.services.costs import item_cost_cap, usd, usd_text
from orchestration.services.dispatch import GateDecision, gate_decide
from orchestration.services.placement import NodeSlots, wanted_labels


def _when(value: dt.datetime) -> str:
    return f"{timezone.localtime(value):%Y-%m-%d %H:%M:%S %Z}"


def gate_sentence(gate: GateDecision, *, now: dt.datetime) -> str:
    """The gate's state in plain language ("" when it is open)."""
    if gate.open:
        return ""
    if gate.reason == "capacity":
        return (
            f"Waiting for capacity: {gate.active_workers} of {settings.MAX_WORKERS} workers "
            "are busy."
        )
    if gate.reason == "cooldown" and gate.until is not None:
        return f"Cooling down: the next attempt may start at {_when(gate.until)}."
    if gate.reason == "budget":
        until = f" until {_when(gate.until)}" if gate.until else ""
        return (
            f"Daily budget exhausted ({gate.spawns_today} of {settings.DAILY_BUDGET} "
            f"attempts today){until}."
        )
    if gate.reason == "cost_budget":
        until = f" until {_when(gate.until)}" if gate.until else ""
        return (
            f"Daily cost budget spent (${usd_text(gate.cost_today)} of "
            f"${usd_text(usd(settings.DAILY_COST_BUDGET))} today){until}."
        )
    return f"The dispatch gate is closed ({gate.reason})."


def _lock_block(
    item: WorkItem, recent: Sequence[WorkItemEvent] = (), *, all_of_them: bool = False
) -> WorkItemEvent | None:
    """The current attempt's latest lock event, when it is a refusal (it still waits).

    ``recent``: the item's latest events (any order) the caller already read; when they hold
    a lock event of the attempt, or are ``all_of_them``, no query is needed."""
    if item.worker_id is None:
        return None
    kinds = (EventKind.LOCK_BLOCKED, EventKind.LOCKS_ACQUIRED)
    mine = [e for e in recent if e.worker_id == item.worker_id and e.kind in kinds]
    if mine or all_of_them:
        latest = max(mine, key=lambda e: (e.created_at, e.id)) if mine else None
    else:
        latest = (
            WorkItemEvent.objects.filter(work_item=item, worker_id=item.worker_id, kind__in=kinds)
            .order_by("-created_at", "-id")
            .first()
        )
    return latest if latest is not None and latest.kind == EventKind.LOCK_BLOCKED else None


def _ahead(item: WorkItem) -> QuerySet[WorkItem]:
    """Claimable items the claim would take before this one (its claim order), due by the
    database's clock."""
    return WorkItem.objects.claimable(cast(dt.datetime, Now())).claimed_before(item)


def _reviews_busy(item: WorkItem) -> str:
    """Why a review waits for its repository's other reviews ("" when it does not)."""
    limit = settings.REVIEW_CONCURRENCY_PER_REPO
    if item.type != WorkItemType.REVIEW or limit <= 0:
        return ""
    if not WorkItem.objects.reviews_busy_repos().filter(repo=item.repo).exists():
        return ""
    return (
        f"{limit} review{'s' if limit != 1 else ''} of {item.repo} already running: at most "
        f"{limit} at a time per repository (REVIEW_CONCURRENCY_PER_REPO)."
    )


def _node_reasons(item: WorkItem, nodes: Sequence[NodeSlots]) -> list[str]:
    """Why no node can take the item now ([] when one can, or none is registered yet: the
    claim registers this host's). Label X, or "labels X, Y", are what it asks for."""
    if not nodes:
        return []
    wanted = wanted_labels(item.metadata)
    what = ", ".join(sorted(wanted))
    named = f"label{'s' if len(wanted) > 1 else ''} {what}"
    offering = [n for n in nodes if n.offers(wanted)]
    if not offering:
        return [f"No node has {named} (NODE_LABELS on the node's worker)."]
    active = [n for n in offering if n.state == NodeState.ACTIVE]
    if not active:
        which = f"The nodes with {named}" if wanted else "All nodes"
        states = ", ".join(f"{n.name} is {n.state}" for n in offering)
        return [f"{which} are draining or lost ({states}); none takes new work."]
    if all(n.free == 0 for n in active):
        running = sum(n.running for n in active)
        capacity = sum(n.capacity for n in active)
        scope = f" with {named}" if wanted else ""
        return [
            f"All nodes are full: the active nodes{scope} run {running} of {capacity} "
            "attempts they take at once (NODE_MAX_WORKERS)."
        ]
    return []


def why_not_running(
    item: WorkItem, recent: Sequence[WorkItemEvent] = (), *, all_events: bool = False
) -> list[str]:
    """Plain-language reasons the item is not (or not yet) making progress; [] if it is.
    ``recent`` / ``all_events``: the item's latest events, already read (see _lock_block)."""
    if item.status == WorkItemStatus.GENERATING:
        return ["Its spec is being generated from the description; then it joins the queue."]
    if item.status == WorkItemStatus.QUEUED:
        # The clock, the gate's figures and the items ahead in one query (scalars_read);
        # "now" in the count is the database's, as the claim reads it.
        scalars = scalars_read(count=_ahead(item))
        now = scalars.now
        if item.next_retry_at and item.next_retry_at > now:
            return [
                f"Retry {item.retry_count} of {settings.MAX_RETRIES} is scheduled at "
                f"{_when(item.next_retry_at)}; until then it waits."
            ]
        reasons = []
        busy = _reviews_busy(item)
        if busy:
            reasons.append(busy)
        gate = gate_decide(
            now=now,
            last_spawn_at=scalars.last_spawn_at,
            active=scalars.active_workers,
            spawns=scalars.spawns_today,
            spent=scalars.cost_today,
        )
        sentence = gate_sentence(gate, now=now)
        if sentence:
            reasons.append(sentence)
        if not sentence:  # the gate is open: can a node take it?
            reasons.extend(_node_reasons(item, scalars.nodes))
        ahead = scalars.counted or 0
        if ahead:
            reasons.append(
                f"{ahead} item{'s' if ahead != 1 else ''} ahead of it in the queue "
                "(by type, priority, then age)."
            )
        if not reasons:
            reasons.append(
                "It is next in line; the dispatcher should start it within "
                f"{settings.LOOP_INTERVAL:g} seconds. If it does not, check that Celery "
                "worker and beat are running (Flower, /health/ready)."
            )
        return reasons
    if item.status == WorkItemStatus.PAUSED:
        cap = item_cost_cap(item)
        capped = f"its cost cap of ${usd_text(cap)}" if cap is not None else "its cost cap"
        return [
            f"Paused: it has spent ${usd_text(item.cost_usd)}, reaching {capped}; its work so "
            "far is pushed. An operator continues it with a raised cap."
        ]
    if item.status == WorkItemStatus.ASSIGNED:
        node = Node.objects.filter(workers=item.worker_id).first() if item.worker_id else None
        where = f" on node {node.name}" if node is not None else ""
        starting = [f"Worker {item.worker_id} was assigned{where}; its container is starting."]
        if node is not None and node.state != NodeState.ACTIVE:
            starting.append(f"Node {node.name} is {node.state}.")
        return starting
    if item.status == WorkItemStatus.IN_PROGRESS:
        blocked = _lock_block(item, recent, all_of_them=all_events)
        if blocked is not None:
            holder = (blocked.data or {}).get("holder") or "another worker"
            files = blocked.message or ", ".join((blocked.data or {}).get("files") or [])
            return [
                f"Blocked by a lock held by worker {holder} on {files} "
                f"(since {_when(blocked.created_at)}); it waits for the lock to be released."
            ]
    return []
