"""The fleet: one ``Node`` row per Docker host whose Celery worker runs attempts.

Re-exported by ``orchestration.models``. A node is named by its worker's ``WHIM_NODE``; its
worker registers it at start and heartbeats it (workers/apps.py), the claim picks one for
each attempt (services/dispatch.py), and the "nodes" sweep marks a silent one lost
(services/nodes.py). Only a node's own worker observes, stops or reconciles its containers.
"""

from __future__ import annotations

import re
from uuid import UUID

from django.db import models
from django.db.models.functions import Coalesce

# A node's name: what WHIM_NODE, the API's path and the Celery queue ``whim.node.<name>`` carry.
NODE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
# What an item may ask for in metadata.nodeLabels: the same spelling, at most this many.
NODE_LABEL_RE = NODE_NAME_RE
MAX_NODE_LABELS = 10


def node_name_valid(name: str) -> bool:
    return bool(NODE_NAME_RE.fullmatch(name))


class NodeState(models.TextChoices):
    ACTIVE = "active"  # takes new attempts
    DRAINING = "draining"  # an operator stopped new attempts; running ones finish
    LOST = "lost"  # silent for NODE_TIMEOUT: its attempts were failed and retried elsewhere


class Node(models.Model):
    """A Docker host with its own Celery worker, queue (``whim.node.<name>``) and capacity."""

    name = models.CharField(max_length=63, primary_key=True)
    runtime = models.CharField(max_length=20, blank=True, default="")
    capacity = models.PositiveIntegerField()
    labels = models.JSONField(default=list, blank=True)
    state = models.CharField(max_length=20, choices=NodeState.choices, default=NodeState.ACTIVE)
    last_heartbeat = models.DateTimeField(null=True, blank=True)  # the database clock
    registered_at = models.DateTimeField(null=True, blank=True)
    state_changed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return f"node {self.name} ({self.state})"

    @property
    def queue(self) -> str:
        return node_queue(self.name)


def node_queue(name: str) -> str:
    """The Celery queue only ``name``'s workers consume."""
    return f"whim.node.{name}"


def node_queue_of(worker_id: UUID | str) -> str | None:
    """The queue of the node an attempt runs on (None for an attempt from before nodes: the
    default queue, which a single host's worker consumes)."""
    name = Node.objects.filter(workers__pk=worker_id).values_list("name", flat=True).first()
    return node_queue(name) if name else None


def node_running() -> Coalesce:
    """An annotation: the node's active attempts, counted by a correlated subquery that the
    partial index ``worker_active_node`` answers (never every attempt ever run).
    ``Node.objects.annotate(running=node_running())``."""
    from orchestration.models import Worker  # defined after this module is imported

    active = (
        Worker.objects.filter(node=models.OuterRef("pk"), status__in=Worker.ACTIVE)
        .order_by()
        .values("node")
        .annotate(n=models.Count("pk"))
        .values("n")
    )
    return Coalesce(models.Subquery(active), 0)
