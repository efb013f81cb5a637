"""Rows to API.md's JSON shapes (camelCase, ISO 8601 timestamps with offset, UUID strings)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from orchestration.models import Worker, WorkerMetrics, WorkItem


def iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def work_item_json(item: WorkItem) -> dict[str, Any]:
    return {
        "id": str(item.pk),
        "repo": item.repo,
        "branch": item.branch,
        "spec": item.spec or None,
        "description": item.description or None,
        "type": item.type,
        "priority": item.priority,
        "status": item.status,
        "workerId": str(item.worker_id) if item.worker_id else None,
        "iteration": item.iteration,
        "maxIterations": item.max_iterations,
        "retryCount": item.retry_count,
        "nextRetryAt": iso(item.next_retry_at),
        "prUrl": item.pr_url or None,
        "prNumber": item.pr_number,
        "commitSha": item.commit_sha or None,
        "parentWorkItemId": str(item.parent_work_item_id) if item.parent_work_item_id else None,
        "verificationPassed": item.verification_passed,
        "source": item.source or None,
        "sourceRef": item.source_ref or None,
        "createdAt": iso(item.created_at),
        "updatedAt": iso(item.updated_at),
        "completedAt": iso(item.completed_at),
        "error": item.error or None,
        "errorCategory": item.error_category or None,
        "metadata": item.metadata,
        "costUsd": float(item.cost_usd),
    }


def work_item_detail_json(item: WorkItem) -> dict[str, Any]:
    """GET /api/work/<id>: the WorkItem object plus ``metrics``, its latest attempt's
    reported metrics (null before any attempt completed)."""
    latest = WorkerMetrics.objects.filter(work_item=item).order_by("-created_at", "-pk").first()
    return {**work_item_json(item), "metrics": metrics_json(latest) if latest else None}


def metrics_json(m: WorkerMetrics) -> dict[str, Any]:
    return {
        "tokensIn": m.tokens_in,
        "tokensOut": m.tokens_out,
        "costUsd": float(m.cost_usd),
        "duration": m.duration_ms,
        "filesModified": m.files_modified,
        "testsRun": m.tests_run,
        "testsPassed": m.tests_passed,
        "testsFailed": m.tests_failed,
        "testStatus": m.test_status or None,
        "iterations": m.iterations,
    }


def worker_json(worker: Worker) -> dict[str, Any]:
    return {
        "id": str(worker.pk),
        "workItemId": str(worker.work_item_id),
        "status": worker.status,
        "iteration": worker.iteration,
        "lastHeartbeat": iso(worker.last_heartbeat),
        "startedAt": iso(worker.started_at),
        "completedAt": iso(worker.completed_at),
        "containerId": worker.container_id or None,
        "error": worker.error or None,
    }
