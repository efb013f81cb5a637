"""Rows to API.md's JSON shapes (camelCase, ISO 8601 timestamps with offset, UUID strings).

Each shape's JSON Schema sits beside the function that produces it (the OpenAPI document's
response schemas; the live fuzz test checks every answer against them).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from orchestration.models import (
    Priority,
    Worker,
    WorkerMetrics,
    WorkerStatus,
    WorkItem,
    WorkItemStatus,
    WorkItemType,
)


def nullable(kind: str, **more: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **more}


STRING: dict[str, Any] = {"type": "string"}
INTEGER: dict[str, Any] = {"type": "integer"}
NUMBER: dict[str, Any] = {"type": "number"}
UUID_STRING: dict[str, Any] = {"type": "string", "format": "uuid"}
DATE_TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
NULLABLE_DATE_TIME = nullable("string", format="date-time")


def object_schema(properties: dict[str, Any], **more: Any) -> dict[str, Any]:
    """An object whose every listed property is always present."""
    return {"type": "object", "required": list(properties), "properties": properties, **more}


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


WORK_ITEM_SCHEMA = object_schema(
    {
        "id": UUID_STRING,
        "repo": STRING,
        "branch": STRING,
        "spec": nullable("string"),
        "description": nullable("string"),
        "type": {"enum": list(WorkItemType.values)},
        "priority": {"enum": list(Priority.values)},
        "status": {"enum": list(WorkItemStatus.values)},
        "workerId": nullable("string", format="uuid"),
        "iteration": INTEGER,
        "maxIterations": INTEGER,
        "retryCount": INTEGER,
        "nextRetryAt": NULLABLE_DATE_TIME,
        "prUrl": nullable("string"),
        "prNumber": nullable("integer"),
        "commitSha": nullable("string"),
        "parentWorkItemId": nullable("string", format="uuid"),
        "verificationPassed": nullable("boolean"),
        "source": nullable("string"),
        "sourceRef": nullable("string"),
        "createdAt": DATE_TIME,
        "updatedAt": DATE_TIME,
        "completedAt": NULLABLE_DATE_TIME,
        "error": nullable("string"),
        "errorCategory": nullable("string"),
        "metadata": {"type": "object"},
        "costUsd": NUMBER,
    },
    description="API.md's WorkItem object",
)


def work_item_detail_json(item: WorkItem) -> dict[str, Any]:
    """GET /api/work/<id>: the WorkItem object plus ``metrics``, its latest attempt's
    reported metrics (null before any attempt completed)."""
    latest = WorkerMetrics.objects.filter(work_item=item).order_by("-created_at", "-pk").first()
    return {**work_item_json(item), "metrics": metrics_json(latest) if latest else None}


def _metrics_schema() -> dict[str, Any]:
    counts = ("tokensIn", "tokensOut", "duration", "filesModified", "testsRun")
    more = ("testsPassed", "testsFailed", "iterations")
    return object_schema(
        {
            **{k: nullable("integer") for k in (*counts, *more)},
            "costUsd": NUMBER,
            "testStatus": nullable("string"),
        }
    )


METRICS_SCHEMA = _metrics_schema()


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


WORKER_SCHEMA = object_schema(
    {
        "id": UUID_STRING,
        "workItemId": UUID_STRING,
        "status": {"enum": list(WorkerStatus.values)},
        "iteration": INTEGER,
        "lastHeartbeat": NULLABLE_DATE_TIME,
        "startedAt": NULLABLE_DATE_TIME,
        "completedAt": NULLABLE_DATE_TIME,
        "containerId": nullable("string"),
        "error": nullable("string"),
        "node": nullable("string"),
    },
    description="API.md's Worker object, plus node: the node its container runs on (null for "
    "an attempt from before nodes)",
)


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
        "node": worker.node_id,
    }


WORK_ITEM_DETAIL_SCHEMA = {
    **WORK_ITEM_SCHEMA,
    "required": [*WORK_ITEM_SCHEMA["required"], "metrics"],
    "properties": {
        **WORK_ITEM_SCHEMA["properties"],
        "metrics": {"oneOf": [{"type": "null"}, METRICS_SCHEMA]},
    },
    "description": "The WorkItem object plus its latest attempt's metrics",
}
