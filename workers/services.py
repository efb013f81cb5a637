"""Turning what containers do into state: exits, timeouts, leftovers (level-triggered)."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging

from django.conf import settings
from django.db.models import Q

from orchestration import nudge
from orchestration.choices import ErrorCategory, EventKind
from orchestration.clock import db_now
from orchestration.errors import Fenced
from orchestration.fleet import node_queue
from orchestration.models import Node, NodeState, Worker, WorkerStatus, WorkItemEvent
from orchestration.nudge import TaskName
from orchestration.services.events import event_record
from orchestration.services.workers import worker_fail
from workers.runtime import LABEL_NODE, ContainerRuntime, ContainerState, get_runtime

logger = logging.getLogger(__name__)


# What an observation pass copies of a running container's output onto its row, for the web
# of another node to show (the whole LOG_TAIL_BYTES is kept when the container ends).
LIVE_TAIL_BYTES = 64 * 1024


def container_keep_logs(
    *, runtime: ContainerRuntime, worker: Worker, max_bytes: int | None = None
) -> None:
    """Copy the container's last lines (bounded) onto the worker row, so they outlive it."""
    lines = runtime.logs(container_id=worker.container_id, lines=settings.LOG_TAIL_LINES)
    if lines:
        limit = min(max_bytes or settings.LOG_TAIL_BYTES, settings.LOG_TAIL_BYTES)
        text = "\n".join(lines)[-limit:]
        Worker.objects.filter(pk=worker.pk).update(log_tail=text)


def classify_exit(
    *, state: ContainerState, worker: Worker, now: dt.datetime
) -> tuple[ErrorCategory, str]:
    """Why an active worker's container ended, as ``(category, message)``.

    OOM → RESOURCE_ERROR (retried). A non-zero exit (not by a signal) before the harness ever
    registered, soon after start → CONTAINER_ERROR (a broken image or entrypoint: failed at
    once, no retry storm). Any other exit while the worker is still active → CRASHED or
    NO_RESULT (retried).
    """
    code = state.exit_code
    if state.oom_killed:
        return (
            ErrorCategory.RESOURCE_ERROR,
            f"container killed for running out of memory (exit {code})",
        )
    # How long it ran, by the daemon's record when there is one: a pass that looks late (a
    # slow sweep, a restarted Celery worker) must not turn a broken image into a "crash".
    ran = state.ran_seconds
    if ran is None:
        ran = (now - (worker.started_at or worker.created_at)).total_seconds()
    fast = ran < settings.FAST_EXIT_SECONDS
    # Exit codes above 128 mean a signal killed it (dockerd stopping, `docker kill`): not a
    # broken image, so those are retried below like any crash.
    if code is not None and 0 < code < 128 and worker.registered_at is None and fast:
        return (
            ErrorCategory.CONTAINER_ERROR,
            f"container exited with {code} before the harness started",
        )
    if code == 0:
        return ErrorCategory.NO_RESULT, "container exited 0 without reporting complete"
    how = f"exited with {code}" if code is not None else f"is {state.status}"
    return ErrorCategory.CRASHED, f"container {how} while the attempt was active"


def containers_observe(
    *, runtime: ContainerRuntime | None = None, node: str | None = None
) -> dict[str, int]:
    """One pass over one node's containers (``node``, default this process's WHIM_NODE: the
    engine ``runtime`` talks to); safe to run twice at once and from several processes.

    Only the node's own attempts and containers are looked at: another node's attempt has
    no container on this engine (it is not "gone"), and a container labelled for another
    node is not this node's to remove. Attempts from before nodes (no node) and containers
    without the label count as the node's only when it is the only node.

    1. Every active worker of the node with a container: gone → CONTAINER_LOST; finished → its last
       lines kept, the exit classified and the attempt failed (retry or fail), the container
       removed; running past WORKER_TIMEOUT → killed and failed with TIMEOUT; running with
       a full /workspace (the runtime's ``workspace_usage``) → killed, RESOURCE_ERROR.
    2. Every container labelled for this instance and node whose worker is no longer active
       (or unknown): last lines kept, stopped (10 s grace) and removed. This is also what a
       node coming back does with what its lost attempts left behind.
    Transitions are conditional, so a callback that lands first simply wins (Fenced here).
    """
    runtime = runtime or get_runtime()
    counts = {
        "exited": 0,
        "timed_out": 0,
        "disk_full": 0,
        "lost": 0,
        "removed": 0,
        "cleanup_failed": 0,
    }
    if not runtime.observable:  # nothing to inspect (fake: ``containers_fan_out`` revives)
        return counts
    now = db_now()
    node = node or settings.WHIM_NODE
    alone = not Node.objects.exclude(name=node).exists()
    mine = Q(node_id=node) | Q(node__isnull=True) if alone else Q(node_id=node)
    active = Worker.objects.filter(mine, status__in=Worker.ACTIVE).exclude(container_id="")
    for worker in active.order_by("created_at")[:500]:
        try:
            _observe_one(runtime=runtime, worker=worker, now=now, counts=counts, fleet=not alone)
        except Exception as exc:  # one bad container must not stall the others
            counts["cleanup_failed"] += 1
            _record_cleanup_failure(worker, worker.container_id, exc)
    for state in runtime.list_labelled():
        if state.labels.get(LABEL_NODE, node if alone else "") != node:
            continue  # another node's (two engines on one host may both list it)
        worker_id = state.labels.get("whim.worker", "")
        owner = Worker.objects.filter(pk=worker_id).first() if _is_uuid(worker_id) else None
        if owner is not None and owner.is_active:
            continue
        try:
            if owner is not None and not owner.log_tail and owner.container_id:
                container_keep_logs(runtime=runtime, worker=owner)
            if not state.finished:
                runtime.stop(container_id=state.id, grace_seconds=10)
            runtime.remove(container_id=state.id)
            counts["removed"] += 1
        except Exception as exc:  # the daemon refused: visible now, retried next period
            counts["cleanup_failed"] += 1
            _record_cleanup_failure(owner, state.id, exc)
    return counts


def containers_fan_out() -> dict[str, int]:
    """The "containers" sweep (beat's, on any worker): one observation message per node that
    is not lost, on its own queue, so each node's worker observes its own engine. With no
    node registered yet, this host's. A runtime with no containers to observe (fake) has
    its lost runs sent again instead (``revive``).
    A node that stopped consuming keeps at most NODE_TIMEOUT's worth of them: then it is
    lost, and each of them is a quick no-op when it comes back."""
    runtime = get_runtime()
    if not runtime.observable:  # no containers: lost runs are sent again, each to its node
        return {"nodes": 0, "revived": runtime.revive()}
    names = list(Node.objects.exclude(state=NodeState.LOST).values_list("name", flat=True))
    if not Node.objects.exists():
        names = [settings.WHIM_NODE]
    sent = 0
    for name in names:
        try:
            nudge.send(TaskName.OBSERVE_CONTAINERS, name, queue=node_queue(name))
        except Exception as exc:  # broker down: the next period sends it again
            logger.warning("could not send observation to %s (%s)", name, type(exc).__name__)
            continue
        sent += 1
    return {"nodes": sent}


def _observe_one(
    *,
    runtime: ContainerRuntime,
    worker: Worker,
    now: dt.datetime,
    counts: dict[str, int],
    fleet: bool = False,
) -> None:
    """Step 1 of ``containers_observe`` for one active worker. In a fleet (``fleet``: more
    than one node), a running container's last lines are copied onto its row each pass: the
    web on another node cannot ask this engine, so that is what it shows."""
    state = runtime.inspect(container_id=worker.container_id)
    if state is None:
        if worker.status == WorkerStatus.RUNNING:
            _fail(worker, "container vanished", ErrorCategory.CONTAINER_LOST)
            counts["lost"] += 1
        return
    if state.finished:
        container_keep_logs(runtime=runtime, worker=worker)
        category, message = classify_exit(state=state, worker=worker, now=now)
        _fail(worker, _with_log_tail(worker, message), category)
        runtime.remove(container_id=worker.container_id)
        counts["exited"] += 1
    elif worker.started_at and (now - worker.started_at).total_seconds() > (
        settings.WORKER_TIMEOUT
    ):
        # Failed first, then killed: an overlapping pass that sees the dead container finds
        # the attempt already ended (not CRASHED), and a kill the daemon refuses leaves a
        # container of a finished worker, which step 2 removes next period.
        container_keep_logs(runtime=runtime, worker=worker)
        _fail(
            worker,
            f"attempt ran longer than WORKER_TIMEOUT ({settings.WORKER_TIMEOUT}s)",
            ErrorCategory.TIMEOUT,
        )
        runtime.kill(container_id=worker.container_id)
        counts["timed_out"] += 1
    elif state.status == "running":
        if fleet:
            container_keep_logs(runtime=runtime, worker=worker, max_bytes=LIVE_TAIL_BYTES)
        _observe_disk(runtime=runtime, worker=worker, counts=counts)


def _observe_disk(*, runtime: ContainerRuntime, worker: Worker, counts: dict[str, int]) -> None:
    """A running attempt whose /workspace is full is ended with RESOURCE_ERROR: failed first,
    then killed (as for a timeout), its last lines kept."""
    usage = runtime.workspace_usage(container_id=worker.container_id)
    if usage is None or not usage.full:
        return
    container_keep_logs(runtime=runtime, worker=worker)
    _fail(
        worker,
        f"the workspace is full: {usage.used_bytes} of {usage.size_bytes} bytes used "
        f"(WORKER_WORKSPACE_SIZE {settings.WORKER_WORKSPACE_SIZE})",
        ErrorCategory.RESOURCE_ERROR,
    )
    runtime.kill(container_id=worker.container_id)
    counts["disk_full"] += 1


CLEANUP_EVENT_EVERY = dt.timedelta(minutes=10)


def _record_cleanup_failure(owner: Worker | None, container_id: str, exc: Exception) -> None:
    """Logged every time; on the item's timeline at most once per CLEANUP_EVENT_EVERY, so a
    daemon that refuses for hours leaves a visible mark, not an event per period."""
    message = f"could not stop/remove container {container_id[:12]}: {type(exc).__name__}: {exc}"
    logger.warning(message[:500])
    if owner is None:
        return
    recent = WorkItemEvent.objects.filter(
        worker=owner,
        kind=EventKind.CONTAINER_CLEANUP_FAILED,
        created_at__gte=db_now() - CLEANUP_EVENT_EVERY,
    )
    if not recent.exists():
        event_record(
            work_item=owner.work_item_id,
            worker=owner,
            kind=EventKind.CONTAINER_CLEANUP_FAILED,
            actor="supervisor",
            message=message[:2000],
        )


def _with_log_tail(worker: Worker, message: str) -> str:
    """The error plus the container's last lines (its stderr says why it died)."""
    worker.refresh_from_db(fields=["log_tail"])
    tail = "\n".join(worker.log_tail.splitlines()[-50:])
    return f"{message}\n\n{tail}" if tail else message


def _fail(worker: Worker, message: str, category: str) -> None:
    with contextlib.suppress(Fenced):
        worker_fail(worker_id=worker.pk, error=message, category=category, actor="supervisor")
    logger.info("worker %s: %s (%s)", worker.pk, message.splitlines()[0], category)


def _is_uuid(value: str) -> bool:
    import uuid

    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
