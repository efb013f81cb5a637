"""Whim's rows. PostgreSQL is the only source of truth: every state lives here."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any, ClassVar

from django.conf import settings
from django.db import models
from django.db.models import Count, Q, QuerySet

# The counts the pages read at any size (trigger-kept deltas): imported to register them.
from orchestration import tallies as tallies

# Who may call (API keys, the login throttle): their own module, re-exported here too.
from orchestration.access import ApiKey as ApiKey
from orchestration.access import LoginThrottle as LoginThrottle

# The fleet (one row per Docker host): its own module, re-exported here.
from orchestration.fleet import Node as Node
from orchestration.fleet import NodeState as NodeState

# The ledgers live in their own module; imported here so the app's models are all in one place.
from orchestration.ledger import CostUsage as CostUsage
from orchestration.ledger import DailyUsage as DailyUsage

# What attempts leave behind (metrics, learnings): their own module too.
from orchestration.outcomes import Learning as Learning
from orchestration.outcomes import WorkerMetrics as WorkerMetrics


class Priority(models.TextChoices):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


# Claim order: a higher rank is claimed first.
PRIORITY_RANK = {Priority.CRITICAL: 3, Priority.HIGH: 2, Priority.MEDIUM: 1, Priority.LOW: 0}


class WorkItemType(models.TextChoices):
    EXECUTION = "execution"
    REVIEW = "review"  # the review bot's job: review one pull request at one head sha
    VERIFICATION = "verification"


class AttemptKind(models.TextChoices):
    WORK = "work"  # does the item's job (implement, review or verify)
    SPEC = "spec"  # writes the spec of a ``generating`` item (SPEC_GENERATOR=agent)


class WorkItemStatus(models.TextChoices):
    GENERATING = "generating"
    QUEUED = "queued"
    ASSIGNED = "assigned"
    IN_PROGRESS = "in_progress"
    # Stopped at its cost cap with the work pushed; waits for an operator to continue it.
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class WorkerStatus(models.TextChoices):
    STARTING = "starting"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    STUCK = "stuck"
    KILLED = "killed"
    LOST = "lost"


# The claim order, defined once: by type (execution, then review, then verification: their
# names sort so), then priority (critical first), then oldest. The queue scan index follows it.
CLAIM_ORDER: tuple[str, ...] = ("type", "-priority_rank", "created_at")


class WorkItemQuerySet(models.QuerySet["WorkItem"]):
    def claimable(self, now: dt.datetime, *, generating: bool = False) -> WorkItemQuerySet:
        """Queued items due at ``now`` (no retry pending), in claim order. ``generating``
        (SPEC_GENERATOR=agent): items waiting for their spec too, which an attempt of kind
        ``spec`` writes. A review waits while its repository has REVIEW_CONCURRENCY_PER_REPO
        review attempts running (0: no limit)."""
        statuses = [WorkItemStatus.QUEUED, *([WorkItemStatus.GENERATING] if generating else [])]
        due = self.filter(
            Q(status__in=statuses),
            Q(next_retry_at__isnull=True) | Q(next_retry_at__lte=now),
        )
        if settings.REVIEW_CONCURRENCY_PER_REPO > 0:
            due = due.exclude(type=WorkItemType.REVIEW, repo__in=self.reviews_busy_repos())
        return due.order_by(*CLAIM_ORDER)

    def reviews_busy_repos(self) -> QuerySet[Any, Any]:
        """Repositories whose running review attempts reach REVIEW_CONCURRENCY_PER_REPO."""
        return (
            self.model._default_manager.filter(
                type=WorkItemType.REVIEW,
                status__in=(WorkItemStatus.ASSIGNED, WorkItemStatus.IN_PROGRESS),
            )
            .values("repo")
            .annotate(running=Count("pk"))
            .filter(running__gte=settings.REVIEW_CONCURRENCY_PER_REPO)
            .values("repo")
        )

    def claimed_before(self, item: WorkItem) -> WorkItemQuerySet:
        """The rows the claim order puts before ``item`` (a keyset comparison on CLAIM_ORDER)."""
        before, same = Q(pk__in=[]), Q()
        for term in CLAIM_ORDER:
            field = term.lstrip("-")
            lookup = "gt" if term.startswith("-") else "lt"
            value = getattr(item, field)
            before |= same & Q(**{f"{field}__{lookup}": value})
            same &= Q(**{field: value})
        return self.filter(before)


# WorkItem.UNFINISHED, at module level for the index that reads it (the tuples are equal).
ITEM_UNFINISHED: tuple[str, ...] = (
    WorkItemStatus.GENERATING,
    WorkItemStatus.QUEUED,
    WorkItemStatus.ASSIGNED,
    WorkItemStatus.IN_PROGRESS,
    WorkItemStatus.PAUSED,
)
# A worker holding its item (the constraint and index below read it too, hence module level).
WORKER_ACTIVE: tuple[str, ...] = (WorkerStatus.STARTING, WorkerStatus.RUNNING)
HOLDING = Q(status__in=list(WORKER_ACTIVE))


class WorkItem(models.Model):
    """One task: implement ``spec`` in ``repo`` on ``branch``. The row is the job."""

    # Waiting for an attempt: the queue, and the queue bounds.
    PENDING: ClassVar[tuple[str, ...]] = (WorkItemStatus.GENERATING, WorkItemStatus.QUEUED)
    # An attempt holds it.
    ACTIVE: ClassVar[tuple[str, ...]] = (WorkItemStatus.ASSIGNED, WorkItemStatus.IN_PROGRESS)
    # Held for an operator (the cost cap): not dispatched, retried, swept or purged.
    HELD: ClassVar[tuple[str, ...]] = (WorkItemStatus.PAUSED,)
    # Not finished yet: what can be cancelled, and what the queue shows by default.
    UNFINISHED: ClassVar[tuple[str, ...]] = (*PENDING, *ACTIVE, *HELD)  # == ITEM_UNFINISHED
    TERMINAL: ClassVar[tuple[str, ...]] = (
        WorkItemStatus.COMPLETED,
        WorkItemStatus.FAILED,
        WorkItemStatus.CANCELLED,
    )
    # Ended by an attempt's outcome, not withdrawn by a cancel: what throughput counts.
    FINISHED: ClassVar[tuple[str, ...]] = (WorkItemStatus.COMPLETED, WorkItemStatus.FAILED)
    # Any finished item can run again: a failed or cancelled one, or a completed one to redo.
    REQUEUEABLE: ClassVar[tuple[str, ...]] = TERMINAL

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    repo = models.CharField(max_length=200, db_index=True)
    branch = models.CharField(max_length=250)
    spec = models.TextField(blank=True, default="")
    description = models.TextField(blank=True, default="")
    type = models.CharField(
        max_length=20, choices=WorkItemType.choices, default=WorkItemType.EXECUTION
    )
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.MEDIUM)
    # Denormalised from priority so the queue scan is one index walk.
    priority_rank = models.SmallIntegerField(default=1, editable=False)
    status = models.CharField(
        max_length=20, choices=WorkItemStatus.choices, default=WorkItemStatus.QUEUED
    )
    worker = models.ForeignKey(
        "Worker", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    iteration = models.PositiveIntegerField(default=0)
    max_iterations = models.PositiveIntegerField(default=50)
    retry_count = models.PositiveIntegerField(default=0)
    next_retry_at = models.DateTimeField(null=True, blank=True)
    pr_url = models.URLField(max_length=500, blank=True, default="")
    pr_number = models.PositiveIntegerField(null=True, blank=True)
    commit_sha = models.CharField(max_length=64, blank=True, default="")
    parent_work_item = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    verification_passed = models.BooleanField(null=True, blank=True)
    source = models.CharField(max_length=50, blank=True, default="")
    source_ref = models.CharField(max_length=200, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    error = models.TextField(blank=True, default="")
    error_category = models.CharField(max_length=40, blank=True, default="")
    # What every attempt of the item has spent (the cost ledger: services.costs).
    tokens_in = models.BigIntegerField(default=0)
    tokens_out = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal(0))
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    objects = WorkItemQuerySet.as_manager()

    class Meta:
        indexes: ClassVar[list[models.Index]] = [
            # The queue scan: queued rows, execution first, by priority then age.
            models.Index(
                "type",
                models.F("priority_rank").desc(),
                "created_at",
                name="workitem_queue_scan",
                condition=Q(status=WorkItemStatus.QUEUED),
            ),
            models.Index(fields=["status", "created_at"], name="workitem_status_created"),
            # The queue's default view (waiting, running, paused), newest first: a small index
            # however long the history (unfinished items are bounded by the queue limits).
            models.Index(
                fields=["created_at", "id"],
                name="workitem_unfinished",
                condition=Q(status__in=list(ITEM_UNFINISHED)),
            ),
            # What finished when (today's figures, the throughput chart), read index-only.
            models.Index(
                fields=["completed_at"],
                include=["status", "type", "created_at"],
                name="workitem_completed",
                condition=Q(completed_at__isnull=False),
            ),
            # The GitHub webhook finds the item a pull request belongs to.
            models.Index(
                fields=["pr_number"],
                name="workitem_pr_number",
                condition=Q(pr_number__isnull=False),
            ),
        ]
        # The console's roles (orchestration.roles): who may act on work, not just read it.
        permissions = (
            ("submit_work_items", "Can submit work items"),
            (
                "operate_work_items",
                "Can cancel, requeue, continue, reprioritise and kill; release locks",
            ),
        )

    def __str__(self) -> str:
        return f"{self.repo}@{self.branch} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def needs_spec(self) -> bool:
        """A change without its spec yet: it waits in ``generating``, never ``queued`` (review
        and verification items work from their description and the pull request)."""
        return self.type == WorkItemType.EXECUTION and not self.spec

    @property
    def waiting_status(self) -> str:
        """Where the item waits for its next attempt: ``generating`` while it needs a spec."""
        return WorkItemStatus.GENERATING if self.needs_spec else WorkItemStatus.QUEUED


# The status filters of every queue view (API, console, CLI): a name → the statuses it shows.
# No filter shows what is waiting or running; "all" shows everything.
QUEUE_STATUS_FILTERS: dict[str, tuple[str, ...]] = {
    "active": WorkItem.ACTIVE,
    "queued": (WorkItemStatus.QUEUED,),
    "failed": (WorkItemStatus.FAILED,),
    "completed": (WorkItemStatus.COMPLETED,),
    "generating": (WorkItemStatus.GENERATING,),
    "cancelled": (WorkItemStatus.CANCELLED,),
    "paused": (WorkItemStatus.PAUSED,),
}
QUEUE_STATUS_NAMES: tuple[str, ...] = (*QUEUE_STATUS_FILTERS, "all")


class Worker(models.Model):
    """One attempt at a work item, with its own secret token (fencing: DESIGN.md §3)."""

    ACTIVE: ClassVar[tuple[str, ...]] = WORKER_ACTIVE
    TERMINAL: ClassVar[tuple[str, ...]] = (
        WorkerStatus.COMPLETED,
        WorkerStatus.FAILED,
        WorkerStatus.STUCK,
        WorkerStatus.KILLED,
        WorkerStatus.LOST,
    )

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    work_item = models.ForeignKey(WorkItem, on_delete=models.CASCADE, related_name="workers")
    status = models.CharField(
        max_length=20, choices=WorkerStatus.choices, default=WorkerStatus.STARTING
    )
    attempt = models.PositiveIntegerField(default=1)
    kind = models.CharField(max_length=10, choices=AttemptKind.choices, default=AttemptKind.WORK)
    iteration = models.PositiveIntegerField(default=0)
    # The attempt's cumulative reports, which are also what the ledger has charged for it.
    tokens_in = models.BigIntegerField(default=0)
    tokens_out = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal(0))
    model = models.CharField(max_length=100, blank=True, default="")
    token_hash = models.CharField(
        max_length=64, blank=True, default="", editable=False, db_index=True
    )
    container_id = models.CharField(max_length=100, blank=True, default="")
    # Where its container runs (null: an attempt from before nodes, on the implicit node).
    node = models.ForeignKey(
        Node, null=True, blank=True, on_delete=models.PROTECT, related_name="workers"
    )
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    registered_at = models.DateTimeField(null=True, blank=True)
    last_progress_at = models.DateTimeField(null=True, blank=True)
    # When the dispatch tick last re-sent this worker's start (at most once a period).
    start_nudged_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    error_category = models.CharField(max_length=40, blank=True, default="")
    log_tail = models.TextField(blank=True, default="")

    class Meta:
        indexes: ClassVar[list[models.Index]] = [
            # The stale scan: active workers by last heartbeat.
            models.Index(
                fields=["last_heartbeat"],
                name="worker_stale_scan",
                condition=HOLDING,
            ),
            # Each node's running attempts (the claim, /nodes/, /metrics).
            models.Index(fields=["node"], name="worker_active_node", condition=HOLDING),
        ]
        constraints: ClassVar[list[models.BaseConstraint]] = [
            # Never two live attempts for one item.
            models.UniqueConstraint(
                fields=["work_item"],
                condition=HOLDING,
                name="worker_one_active_per_item",
            ),
        ]

    def __str__(self) -> str:
        return f"worker {self.id} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE


class FileLock(models.Model):
    """A lease on one repo path, held by one worker until it expires or is released."""

    repo = models.CharField(max_length=200)
    path = models.CharField(max_length=1024)
    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="locks")
    acquired_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["repo", "path"], name="filelock_repo_path"),
        ]

    def __str__(self) -> str:
        return f"{self.repo}:{self.path}"


class DispatchState(models.Model):
    """The single gate row. Every claim locks it, so limits are decided one claim at a time."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    last_spawn_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"dispatch state (last spawn {self.last_spawn_at})"


class WorkItemEvent(models.Model):
    """Append-only history of a work item: who moved it, from what, to what, and why."""

    work_item = models.ForeignKey(WorkItem, on_delete=models.CASCADE, related_name="events")
    worker = models.ForeignKey(
        Worker, null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    kind = models.CharField(max_length=40)
    from_status = models.CharField(max_length=20, blank=True, default="")
    to_status = models.CharField(max_length=20, blank=True, default="")
    actor = models.CharField(max_length=100, blank=True, default="system")
    message = models.TextField(blank=True, default="")
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ("created_at", "id")

    def __str__(self) -> str:
        return f"{self.kind} {self.from_status}->{self.to_status}"
