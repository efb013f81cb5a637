"""Celery tasks that touch containers: start one, stop one, and the fake runtime's run.

Each takes ids, re-reads rows, and is idempotent. Services enqueue them by name
(``orchestration.nudge.TaskName``); they call the services, never the reverse.
"""

from __future__ import annotations

import contextlib
import logging
import time

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import Value
from django.db.models.functions import Concat, Right

from orchestration import nudge
from orchestration.choices import ErrorCategory
from orchestration.clock import advisory_try_lock
from orchestration.errors import Fenced, NotFound
from orchestration.fleet import node_queue
from orchestration.forms.fields import bounded_seconds
from orchestration.models import AttemptKind, Worker, WorkerStatus
from orchestration.nudge import TaskName
from orchestration.retry import RETRY_ON_DB_ERRORS
from orchestration.services.dispatch import worker_token
from orchestration.services.specs import spec_from_template
from orchestration.services.workers import (
    Completion,
    worker_complete,
    worker_fail,
    worker_heartbeat,
    worker_mark_started,
    worker_stuck,
    workers_mark_started,
)
from workers.github_app import GitHubAppError
from workers.repo_mounts import RepositoryRefused
from workers.runtime import ContainerRuntime, get_runtime
from workers.services import container_keep_logs, containers_observe

logger = logging.getLogger(__name__)


@shared_task(name=TaskName.START_WORKER, time_limit=300, soft_time_limit=280, **RETRY_ON_DB_ERRORS)
def start_worker(*worker_ids: str) -> None:
    """Start the containers of ``starting`` workers: one, or a claim's batch for this node.
    Redelivered or late: a quiet no-op for each worker no longer ``starting``.

    A runtime that starts in batches (``ContainerRuntime.starts_in_batches``) starts them all
    and marks them started in one transaction; any other starts the first here and sends
    each of the rest as its own message to this node's queue, so the node's worker processes
    start them side by side. A start that raises rolls the attempt back through
    ``worker_fail`` (category START_ERROR, retried with backoff), keeping the error on the
    worker row.
    """
    runtime = get_runtime()
    ids = list(worker_ids)
    if len(ids) > 1 and not runtime.starts_in_batches:
        for worker_id in ids[1:]:
            try:
                nudge.send(TaskName.START_WORKER, worker_id, queue=node_queue(settings.WHIM_NODE))
            except Exception as exc:  # the broker is down: the start re-nudge sends it later
                logger.warning(
                    "could not send on the start of %s (%s)", worker_id, type(exc).__name__
                )
        ids = ids[:1]
    workers = list(
        Worker.objects.select_related("work_item").filter(pk__in=ids, status=WorkerStatus.STARTING)
    )
    if not workers:
        return
    if settings.WHIM_AGENT == "mock":
        # The mock's slow start (metadata.mockStartSeconds, at most a minute) lets fault tests
        # act between the claim and the container start.
        time.sleep(
            max(
                bounded_seconds(w.work_item.metadata.get("mockStartSeconds"), cap=60.0)
                for w in workers
            )
        )
    if len(workers) > 1:
        try:
            _start_batch(runtime, workers)
            return
        except (OperationalError, InterfaceError):
            raise  # the database failed: retried (the starts are idempotent)
        except Exception as exc:
            logger.warning("batch start failed (%s); starting one by one", type(exc).__name__)
    for worker in workers:
        _start_one(runtime, worker)


def _start_batch(runtime: ContainerRuntime, workers: list[Worker]) -> None:
    with transaction.atomic():
        containers = {
            str(w.pk): runtime.start(worker=w, work_item=w.work_item, token=worker_token(w.pk))
            for w in workers
        }
        started = set(workers_mark_started(containers))
    for worker in workers:
        if worker.pk not in started:
            _stop_unless_active(runtime, str(worker.pk), containers[str(worker.pk)])


def _start_one(runtime: ContainerRuntime, worker: Worker) -> None:
    worker_id = str(worker.pk)
    try:
        with transaction.atomic():
            container_id = runtime.start(
                worker=worker, work_item=worker.work_item, token=worker_token(worker.pk)
            )
            started = worker_mark_started(worker_id=worker_id, container_id=container_id)
    except (OperationalError, InterfaceError):
        raise  # the database, not the start, failed: retried (the container is adopted)
    except Exception as exc:
        logger.warning(
            "starting worker %s failed: %s: %s", worker_id, type(exc).__name__, str(exc)[:300]
        )
        # A repository whose layout reaches outside it, or that the GitHub App may not
        # reach, will not change by retrying: permanent. Anything else may be passing (the
        # daemon, the network): retried.
        permanent = isinstance(exc, RepositoryRefused) or (
            isinstance(exc, GitHubAppError) and exc.permanent  # the App is not installed there
        )
        category = ErrorCategory.CONFIG_ERROR if permanent else ErrorCategory.START_ERROR
        # Killed or cancelled meanwhile (Fenced): nothing is left to roll back.
        with contextlib.suppress(Fenced):
            worker_fail(
                worker_id=worker_id,
                error=f"container start failed: {exc}",
                category=category,
                actor="system",
            )
        return
    if not started:
        _stop_unless_active(runtime, worker_id, container_id)


def _stop_unless_active(runtime: ContainerRuntime, worker_id: str, container_id: str) -> None:
    """A start that did not mark its worker started: another delivery of this message started
    it first (we adopted its container), leave it be; killed or cancelled meanwhile, don't
    leave it running."""
    if not Worker.objects.filter(pk=worker_id, status__in=Worker.ACTIVE).exists():
        runtime.stop(container_id=container_id)


@shared_task(
    name=TaskName.STOP_CONTAINER, time_limit=120, soft_time_limit=100, **RETRY_ON_DB_ERRORS
)
def stop_worker_container(worker_id: str) -> None:
    """Stop a finished attempt's container, keep its last lines, remove it. A no-op when it
    has none, it is gone, or the worker is (again) active."""
    worker = Worker.objects.filter(pk=worker_id).first()
    if worker is None or not worker.container_id or worker.is_active:
        return
    runtime = get_runtime()
    runtime.stop(container_id=worker.container_id, grace_seconds=10)
    container_keep_logs(runtime=runtime, worker=worker)
    runtime.remove(container_id=worker.container_id)


@shared_task(name=TaskName.OBSERVE_CONTAINERS, time_limit=600, soft_time_limit=570)
def observe_containers(node: str) -> dict[str, int]:
    """One node's container observation and reconciler (``containers_observe``), on that
    node's queue. A copy already running on the node: skipped (the next period catches up)."""
    if node != settings.WHIM_NODE:  # a queue bound by hand to the wrong worker: not its engine
        logger.warning("observation of node %s reached node %s: ignored", node, settings.WHIM_NODE)
        return {}
    with advisory_try_lock(f"whim.observe.{node}") as mine:
        if not mine:
            return {}
        counts = containers_observe(node=node)
    if any(counts.values()):
        logger.info("containers of node %s: %s", node, counts)
    return counts


def _log(worker_id: str, line: str) -> None:
    Worker.objects.filter(pk=worker_id).update(
        log_tail=Right(Concat("log_tail", Value(line + "\n")), settings.LOG_TAIL_BYTES)
    )


@shared_task(name=TaskName.FAKE_RUN, time_limit=900, soft_time_limit=880)
def fake_run(worker_id: str) -> None:
    """The fake runtime's "container": heartbeat for ``mockSeconds``, then end as ``mock`` says.

    Stops early, quietly, once the worker is no longer active (killed, cancelled, timed out).
    """
    worker = Worker.objects.select_related("work_item").filter(pk=worker_id).first()
    if worker is None or worker.status != WorkerStatus.RUNNING:
        return
    meta = worker.work_item.metadata
    mode = str(meta.get("mock") or "success")
    seconds = bounded_seconds(meta.get("mockSeconds", 2), default=2.0, cap=600.0)
    _log(worker_id, f"mock agent: mode={mode} seconds={seconds}")
    deadline = time.monotonic() + seconds
    iteration = 0
    while True:
        iteration += 1
        try:
            worker_heartbeat(
                worker_id=worker_id,
                iteration=iteration,
                tokens_in=100 * iteration,
                tokens_out=20 * iteration,
            )
        except (Fenced, NotFound):
            _log(worker_id, "mock agent: stopped from outside")
            return
        _log(worker_id, f"mock agent: iteration {iteration}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(0.5, remaining))
    try:
        if mode == "fail":
            worker_fail(
                worker_id=worker_id,
                error="mock agent failed on purpose",
                category=ErrorCategory.AGENT_ERROR,
            )
        elif mode == "stuck":
            worker_stuck(
                worker_id=worker_id, reason="mock agent is stuck on purpose", attempts=iteration
            )
        else:
            worker_complete(
                worker_id=worker_id,
                result=Completion(
                    metrics={
                        "tokensIn": 100 * iteration,
                        "tokensOut": 20 * iteration,
                        "duration": int(seconds * 1000),
                    },
                    # A spec attempt writes the spec: the template's, as a mock would.
                    spec=spec_from_template(worker.work_item.description)
                    if worker.kind == AttemptKind.SPEC
                    else None,
                ),
            )
    except Exception:  # a fenced or vanished worker: the run is over either way
        logger.info("mock run of worker %s ended after the worker moved on", worker_id)
