"""The claim's walk of the queue: which claimable items a batch takes, and on which nodes.

Called by ``dispatch_claim`` (services/dispatch.py) under the gate's lock, in its transaction.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from uuid import UUID

from django.conf import settings
from django.db.models import Count, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce

from orchestration.models import Worker, WorkItem, WorkItemType
from orchestration.services.placement import NodeSlots, node_pick, wanted_labels
from orchestration.services.specs import spec_generator

# How many queued items one claim looks at past the ones no free node can take.
CLAIM_SCAN = 500


def claim_items(
    now: dt.datetime, nodes: list[NodeSlots], limit: int, *, use_capacity: bool
) -> list[tuple[WorkItem, str]]:
    """Step 4 of the claim: up to ``limit`` claimable items free nodes can take, locked, each
    with its node's name, in claim order (``id``, ``status`` and ``metadata`` read, and
    ``prior_attempts`` annotated).

    The scan reads ids, wanted labels, type and repository only, without locks; the walk
    places each item on a node whose free slots count down as the batch fills, then locks
    the picked rows at once with SKIP LOCKED, re-checking their claimability under the lock.
    Rows skipped give their slots back and the walk goes on. A review of a repository this
    batch already took a review of ends the batch when REVIEW_CONCURRENCY_PER_REPO is on
    (the next claim decides it against the running reviews, as a single claim would)."""
    # Queued items due now in claim order (``generating`` ones too with the agent spec
    # generator: a ``spec`` attempt writes their spec).
    scan = WorkItem.objects.claimable(now, generating=spec_generator() == "agent")
    prior = (
        Worker.objects.filter(work_item=OuterRef("pk"))
        .order_by()
        .values("work_item")
        .annotate(n=Count("pk"))
        .values("n")
    )
    # What the claim reads of a picked row (its spec and the rest stay on disk).
    lockable = (
        scan.select_for_update(skip_locked=True)  # rows another claimer holds are skipped
        .only("id", "status", "metadata")
        .annotate(prior_attempts=Coalesce(Subquery(prior), Value(0)))
    )
    taken: dict[str, int] = {}  # node name -> slots this batch took
    review_repos: set[str] = set()
    reviews_limited = settings.REVIEW_CONCURRENCY_PER_REPO > 0
    claimed: list[tuple[WorkItem, str]] = []
    offset, page = 0, max(20, min(limit * 2, CLAIM_SCAN))
    while offset < CLAIM_SCAN and len(claimed) < limit:
        rows = list(
            scan.values_list("pk", "metadata__nodeLabels", "type", "repo")[offset : offset + page]
        )
        index = 0
        while index < len(rows) and len(claimed) < limit:
            tentative = dict(taken)
            wanted_node: dict[UUID, str] = {}
            stop = False
            while index < len(rows) and len(claimed) + len(wanted_node) < limit:
                pk, labels, kind, repo = rows[index]
                if reviews_limited and kind == WorkItemType.REVIEW and repo in review_repos:
                    stop = True
                    break
                index += 1
                node = node_pick(
                    _less(nodes, tentative),
                    wanted_labels({"nodeLabels": labels}),
                    use_capacity=use_capacity,
                )
                if node is None:
                    continue
                wanted_node[pk] = node.name
                tentative[node.name] = tentative.get(node.name, 0) + 1
                if reviews_limited and kind == WorkItemType.REVIEW:
                    review_repos.add(repo)
            if wanted_node:
                locked = {item.pk: item for item in lockable.filter(pk__in=list(wanted_node))}
                for pk in wanted_node:  # in claim order; fewer taken, so every one still fits
                    item = locked.get(pk)
                    if item is None:
                        continue
                    node = node_pick(
                        _less(nodes, taken),
                        wanted_labels(item.metadata),
                        use_capacity=use_capacity,
                    )
                    if node is None:  # cannot happen (a subset of a fitting walk); skip it
                        continue
                    taken[node.name] = taken.get(node.name, 0) + 1
                    claimed.append((item, node.name))
            if stop:
                return claimed
        if len(rows) < page:
            break
        offset += page
        page = min(page * 5, CLAIM_SCAN)
    return claimed


def _less(nodes: list[NodeSlots], taken: dict[str, int]) -> list[NodeSlots]:
    """The nodes with the slots this batch took counted as running."""
    if not taken:
        return nodes
    return [dataclasses.replace(n, running=n.running + taken.get(n.name, 0)) for n in nodes]
