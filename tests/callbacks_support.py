"""What the worker callback tests (``test_worker_callbacks_*.py``) share: posting a callback
as a worker, the retry numbers they assert against, and a snapshot of everything a callback could
change."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.test import Client

from orchestration.clock import db_now
from orchestration.models import FileLock, Worker, WorkerMetrics, WorkItem, WorkItemEvent
from orchestration.services.dispatch import worker_token
from orchestration.services.workers import worker_kill
from reviews.models import PRReview
from tests.helpers import RETRY_DELAYS

DELAYS = RETRY_DELAYS  # under the ``retry_policy`` fixture
TOLERANCE = dt.timedelta(seconds=5)
SHA = "0123456789abcdef0123456789abcdef01234567"


def token_of(worker: Worker) -> str:
    return worker_token(worker.pk)


def call(
    client: Client,
    worker: Worker,
    route: str,
    body: Any = None,
    *,
    token: str | None = None,
    raw: str | bytes | None = None,
) -> Any:
    """POST a callback as ``worker`` (its own token unless another is given)."""
    path = "/api/worker/register" if route == "register" else f"/api/worker/{worker.pk}/{route}"
    data = raw if raw is not None else json.dumps(body if body is not None else {})
    return client.post(
        path,
        data,
        content_type="application/json",
        headers={"Authorization": f"Bearer {token if token is not None else token_of(worker)}"},
    )


def snapshot(item: WorkItem, worker: Worker) -> tuple[Any, ...]:
    """Everything a callback could change about an attempt, to prove it did not."""
    item.refresh_from_db()
    worker.refresh_from_db()
    return (
        item.status,
        item.updated_at,
        item.retry_count,
        item.next_retry_at,
        item.error,
        item.iteration,
        item.pr_url,
        item.verification_passed,
        worker.status,
        worker.last_heartbeat,
        worker.iteration,
        worker.tokens_in,
        worker.tokens_out,
        worker.error,
        WorkItemEvent.objects.filter(work_item=item).count(),
        WorkItem.objects.count(),
        WorkerMetrics.objects.count(),
        PRReview.objects.count(),
        sorted(FileLock.objects.values_list("repo", "path", "worker_id", "expires_at")),
    )


def hold(worker: Worker, *paths: str, seconds: int = 30) -> None:
    for path in paths:
        FileLock.objects.create(
            repo=worker.work_item.repo,
            path=path,
            worker=worker,
            expires_at=db_now() + dt.timedelta(seconds=seconds),
        )


def kill(worker: Worker) -> None:
    """An operator kills the attempt (the container stop is sent on commit, never here)."""
    assert worker_kill(worker_id=worker.pk, reason="operator")
