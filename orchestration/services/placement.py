"""Where an attempt runs: the node the claim picks, under the gate's lock.

Read by the claim (services/dispatch.py) and the "why is this not running?" explainer. A node
can take an item when it is active, runs fewer attempts than its capacity, and offers every
label the item asks for (metadata.nodeLabels). Among those, the one with the most free slots
wins (then the name), so work spreads over the fleet.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings

from orchestration.fleet import NODE_LABEL_RE, node_name_valid, node_running
from orchestration.models import Node, NodeState


@dataclasses.dataclass(frozen=True)
class NodeSlots:
    """A node as the claim sees it: its labels and how many more attempts it may start."""

    name: str
    state: str
    labels: frozenset[str]
    capacity: int
    running: int

    @property
    def free(self) -> int:
        return max(self.capacity - self.running, 0)

    def offers(self, wanted: frozenset[str]) -> bool:
        return wanted <= self.labels


def node_capacity() -> int:
    """NODE_MAX_WORKERS, or MAX_WORKERS when it is not set (one setting on a single host)."""
    configured = settings.NODE_MAX_WORKERS
    return int(configured) if configured is not None else int(settings.MAX_WORKERS)


def node_labels_setting() -> list[str]:
    """NODE_LABELS, the valid ones (check E082 names the others), sorted, once each."""
    return sorted({str(lb) for lb in settings.NODE_LABELS if NODE_LABEL_RE.fullmatch(str(lb))})


def node_implicit_ensure(now: dt.datetime) -> None:
    """Zero configuration: with no node registered at all, this host's (WHIM_NODE with
    NODE_MAX_WORKERS and NODE_LABELS) is made, in the caller's transaction. Its Celery
    worker registers it again at start, with the same values."""
    if Node.objects.exists() or not node_name_valid(settings.WHIM_NODE):
        return
    Node.objects.bulk_create(
        [
            Node(
                name=settings.WHIM_NODE,
                capacity=node_capacity(),
                labels=node_labels_setting(),
                state=NodeState.ACTIVE,
                last_heartbeat=now,
                registered_at=now,
                state_changed_at=now,
            )
        ],
        ignore_conflicts=True,
    )


def nodes_slots(*, states: Iterable[str] = (NodeState.ACTIVE,)) -> list[NodeSlots]:
    """The nodes in ``states`` with their running attempts (active workers on them)."""
    rows = (
        Node.objects.filter(state__in=list(states))
        .annotate(running=node_running())
        .values_list("name", "state", "labels", "capacity", "running")
    )
    return [
        NodeSlots(name, state, frozenset(str(lb) for lb in (labels or [])), capacity, running)
        for name, state, labels, capacity, running in rows
    ]


def wanted_labels(metadata: Mapping[str, Any] | None) -> frozenset[str]:
    """The labels an item asks for (metadata.nodeLabels). The work-item form validates them
    at every edge; a row stored otherwise asks for what it lists as strings."""
    raw = (metadata or {}).get("nodeLabels") if isinstance(metadata, Mapping) else None
    if not isinstance(raw, list):
        return frozenset()
    return frozenset(str(label) for label in raw)


def node_pick(
    nodes: Iterable[NodeSlots], wanted: frozenset[str], *, use_capacity: bool = True
) -> NodeSlots | None:
    """The node for an item asking for ``wanted``: active, with a free slot (unless
    ``use_capacity`` is off), offering every label; the most free slots first, then by name."""
    fits = [
        n
        for n in nodes
        if n.state == NodeState.ACTIVE and n.offers(wanted) and (n.free > 0 or not use_capacity)
    ]
    if not fits:
        return None
    return min(fits, key=lambda n: (-n.free, n.name))
