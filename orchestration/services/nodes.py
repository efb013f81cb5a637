"""The fleet's services: a node registers, heartbeats, is drained or resumed, and is marked
lost when it falls silent (the "nodes" sweep), failing its attempts so they run elsewhere.

A node's state is the operator's word (active, draining) or the sweep's (lost). Its
heartbeat is the database clock's time of its worker's last sign of life (DESIGN §5).
"""

from __future__ import annotations

import datetime as dt
import logging
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from orchestration.choices import ErrorCategory, EventKind
from orchestration.clock import db_now
from orchestration.errors import NotFound, ValidationFailed
from orchestration.fleet import NODE_LABEL_RE, node_name_valid
from orchestration.models import Node, NodeState, Worker, WorkerStatus
from orchestration.services.events import event_record
from orchestration.services.workers import worker_expire

logger = logging.getLogger(__name__)

# A node may offer more labels than an item may ask for (fleet.MAX_NODE_LABELS), not unbounded.
MAX_NODE_LABELS_OFFERED = 50


def _validated(name: str, capacity: int, labels: list[str]) -> list[str]:
    errors: dict[str, str] = {}
    if not node_name_valid(name):
        errors["name"] = "a node name is [a-z0-9][a-z0-9_.-]{0,62}"
    if capacity < 0:
        errors["capacity"] = "the capacity is a number of attempts, 0 or more"
    clean = sorted({str(label) for label in labels})
    if len(clean) > MAX_NODE_LABELS_OFFERED or any(not NODE_LABEL_RE.fullmatch(x) for x in clean):
        errors["labels"] = "each label is [a-z0-9][a-z0-9_.-]{0,62}"
    if errors:
        raise ValidationFailed("Invalid node", details=errors)
    return clean


def node_register(*, name: str, runtime: str, capacity: int, labels: list[str]) -> Node:
    """A node's worker starts (or comes back): its row is made or updated with what the
    worker is now. A lost node comes back active (its lost attempts stay failed: fencing);
    a draining one stays draining (an operator's word outlives a restart)."""
    clean = _validated(name, capacity, labels)
    with transaction.atomic():
        now = db_now()
        Node.objects.bulk_create(
            [Node(name=name, capacity=capacity, state_changed_at=now)], ignore_conflicts=True
        )
        node = Node.objects.select_for_update().get(name=name)
        came_back = node.state == NodeState.LOST
        node.runtime = runtime[:20]
        node.capacity = capacity
        node.labels = clean
        node.last_heartbeat = now
        node.registered_at = now
        if came_back:
            node.state, node.state_changed_at = NodeState.ACTIVE, now
        node.save()
    if came_back:
        logger.warning("node %s is back after being lost", name)
    logger.info("node %s registered (capacity %s, labels %s)", name, capacity, clean)
    return node


def node_heartbeat(*, name: str) -> None:
    """The node's worker is alive (its timer thread). NotFound when the row is gone (the
    worker registers again). A lost node heard from again is active again, as on register."""
    now = db_now()
    if not Node.objects.filter(name=name).update(last_heartbeat=now):
        raise NotFound("Node not found")
    if Node.objects.filter(name=name, state=NodeState.LOST).update(
        state=NodeState.ACTIVE, state_changed_at=now
    ):
        logger.warning("node %s is back after being lost", name)


def _set_state(*, name: str, to: str, allowed: tuple[str, ...], actor: str) -> Node:
    with transaction.atomic():
        node = Node.objects.select_for_update().filter(name=name).first()
        if node is None:
            raise NotFound("Node not found")
        if node.state in allowed:
            node.state, node.state_changed_at = to, db_now()
            node.save(update_fields=["state", "state_changed_at"])
            logger.info("node %s is %s (by %s)", name, to, actor)
    return node


def node_drain(*, name: str, actor: str) -> Node:
    """No new attempt lands on the node; the running ones finish. Idempotent."""
    return _set_state(
        name=name, to=NodeState.DRAINING, allowed=(NodeState.ACTIVE, NodeState.LOST), actor=actor
    )


def node_resume(*, name: str, actor: str) -> Node:
    """A draining (or lost) node takes new attempts again. Idempotent. A lost node that is
    still silent is marked lost again by the next sweep."""
    return _set_state(
        name=name, to=NodeState.ACTIVE, allowed=(NodeState.DRAINING, NodeState.LOST), actor=actor
    )


def _silent(cutoff: dt.datetime) -> Q:
    return Q(last_heartbeat__lt=cutoff) | Q(last_heartbeat__isnull=True)


def nodes_mark_lost() -> int:
    """The "nodes" sweep; returns how many attempts it failed.

    1. Active nodes silent for NODE_TIMEOUT (by the database clock) are marked lost, the
       silence checked again in the conditional UPDATE (a heartbeat landing now wins).
    2. Every active attempt on a lost node, or on a draining one that is as silent (an
       operator's drain does not keep a dead host's attempts alive), is ended as ``lost``
       with NODE_LOST: retried elsewhere with backoff, counted for quarantine, and fenced,
       so the node cannot complete it if it comes back. Its item's timeline says
       ``node_lost``. Level-triggered: a pass that stops half-way is finished by the next.
    """
    timeout = settings.NODE_TIMEOUT
    cutoff = db_now() - dt.timedelta(seconds=timeout)
    for name in Node.objects.filter(_silent(cutoff), state=NodeState.ACTIVE).values_list(
        "name", flat=True
    ):
        if Node.objects.filter(_silent(cutoff), name=name, state=NodeState.ACTIVE).update(
            state=NodeState.LOST, state_changed_at=db_now()
        ):
            logger.warning("node %s lost: no heartbeat for %ss", name, timeout)
    gone = Node.objects.filter(
        Q(state=NodeState.LOST) | (Q(state=NodeState.DRAINING) & _silent(cutoff))
    )
    ended = 0
    attempts = Worker.objects.filter(status__in=Worker.ACTIVE, node__in=gone)
    for worker_id, node in list(attempts.values_list("pk", "node_id")[:500]):
        ended += _fail_lost_attempt(worker_id=worker_id, node=node, cutoff=cutoff)
    return ended


def _fail_lost_attempt(*, worker_id: UUID, node: str, cutoff: dt.datetime) -> bool:
    """Step 2 of ``nodes_mark_lost`` for one attempt; False when the node spoke meanwhile."""

    def back(_worker: Worker) -> bool:
        return (
            Node.objects.filter(name=node, last_heartbeat__gte=cutoff)
            .exclude(state=NodeState.LOST)
            .exists()
        )

    error = f"node {node} lost: no heartbeat for more than {settings.NODE_TIMEOUT:g}s"
    with transaction.atomic():
        ended = worker_expire(
            worker_id=str(worker_id),
            to=WorkerStatus.LOST,
            category=ErrorCategory.NODE_LOST,
            error=error,
            unless=back,
        )
        if ended:
            worker = Worker.objects.get(pk=worker_id)
            event_record(
                work_item=worker.work_item_id,
                worker=worker,
                kind=EventKind.NODE_LOST,
                actor="supervisor",
                message=error,
                data={"node": node},
            )
    return ended
