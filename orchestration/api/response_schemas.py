"""The JSON Schemas of the API's answers that are not one row's object (those sit beside
their serializers in ``orchestration.api.serializers``): the error shape, the summaries of
/api/status, /api/metrics and /api/queue, reviews, learnings and the callbacks' answers.
The live fuzz test (tests/test_openapi_fuzz.py) checks every answer against them.
"""

from __future__ import annotations

from typing import Any

from orchestration.api.serializers import (
    DATE_TIME,
    INTEGER,
    NULLABLE_DATE_TIME,
    NUMBER,
    STRING,
    WORK_ITEM_SCHEMA,
    nullable,
    object_schema,
)
from orchestration.models import Priority, WorkItemStatus

# A review's findings as answered: always the ReviewFindings object (reviews.findings).
FINDINGS_OUT_SCHEMA = {
    "type": "object",
    "required": ["specAlignment", "codeQuality"],
    "properties": {
        "specAlignment": {"type": "object", "properties": {"score": STRING, "summary": STRING}},
        "codeQuality": {"type": "object", "properties": {"score": STRING, "summary": STRING}},
        "overallSummary": STRING,
    },
}

# API.md "Errors": every code an answer may carry.
ERROR_CODES = (
    "VALIDATION_ERROR",
    "UNAUTHORIZED",
    "FORBIDDEN",
    "NOT_FOUND",
    "METHOD_NOT_ALLOWED",
    "INVALID_STATE",
    "INVALID_TYPE",
    "PAYLOAD_TOO_LARGE",
    "QUEUE_FULL",
    "INTERNAL_ERROR",
    "SERVICE_UNAVAILABLE",
)

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "code"],
    "properties": {
        "error": {"type": "string", "description": "a human sentence"},
        "code": {"enum": list(ERROR_CODES)},
        "details": {
            "type": "object",
            "description": "each bad field and why (API.md), or the limit that was passed",
        },
    },
}

SUCCESS_SCHEMA = object_schema({"success": {"const": True}})

SUBMITTED_SCHEMA = object_schema(
    {"id": {"type": "string", "format": "uuid"}, "status": {"enum": list(WorkItemStatus.values)}}
)


def _counts(keys: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": {k: INTEGER for k in keys}}


QUEUE_SCHEMA = object_schema(
    {
        "items": {"type": "array", "items": WORK_ITEM_SCHEMA},
        "nextCursor": nullable("string"),
        "stats": object_schema(
            {
                "total": INTEGER,
                "byStatus": _counts(list(WorkItemStatus.values)),
                "byPriority": _counts(list(Priority.values)),
            }
        ),
    }
)

_FOUR = {k: INTEGER for k in ("activeWorkers", "queuedItems", "completedToday", "failedToday")}

STATUS_SCHEMA = object_schema(
    {
        "status": {"enum": ["healthy", "degraded", "error"]},
        "runtime": {"type": "object"},
        "workers": object_schema({"active": INTEGER, "maxWorkers": INTEGER}),
        "queue": object_schema({"size": INTEGER, "oldest": NULLABLE_DATE_TIME}),
        "metrics": object_schema(_FOUR),
        "reviews": object_schema(
            {k: INTEGER for k in ("queued", "running", "completedToday", "failedToday")}
        ),
        "rateLimits": object_schema(
            {
                "iterationsToday": INTEGER,
                "dailyBudget": INTEGER,
                "lastSpawn": NULLABLE_DATE_TIME,
                "cooldownSeconds": INTEGER,
            }
        ),
    }
)

METRICS_SUMMARY_SCHEMA = object_schema(
    {
        **_FOUR,
        "iterationsToday": INTEGER,
        "dailyBudget": INTEGER,
        "avgCompletionTime": {**INTEGER, "description": "milliseconds"},
        "successRate": NUMBER,
        "verification": object_schema(
            {k: INTEGER for k in ("total", "passed", "failed", "pending")} | {"passRate": NUMBER}
        ),
        "tokenUsage": object_schema(
            {"tokensIn": INTEGER, "tokensOut": INTEGER, "estimatedCostUsd": NUMBER}
        ),
    }
)

LOGS_SCHEMA = object_schema(
    {"workerId": {"type": "string", "format": "uuid"}, "logs": {"type": "array", "items": STRING}}
)

REVIEW_SCHEMA = object_schema(
    {
        "id": STRING,
        "workItemId": nullable("string", format="uuid"),
        "repo": STRING,
        "prNumber": nullable("integer"),
        "reviewTimestamp": DATE_TIME,
        "modelUsed": STRING,
        "findings": FINDINGS_OUT_SCHEMA,
        "createdAt": DATE_TIME,
        "updatedAt": DATE_TIME,
    },
    description="The original Whim's PRReview",
)

LEARNING_SCHEMA = object_schema(
    {
        "id": STRING,  # a string, as the original's Learning.id
        "repo": STRING,
        "spec": STRING,
        "content": STRING,
        "embedding": {"type": "null"},
        "createdAt": DATE_TIME,
        "workItemId": nullable("string", format="uuid"),
    }
)

REGISTERED_SCHEMA = object_schema(
    {"workerId": {"type": "string", "format": "uuid"}, "workItem": WORK_ITEM_SCHEMA}
)

LOCK_SCHEMA = {
    "type": "object",
    "required": ["acquired"],
    "properties": {
        "acquired": {"type": "boolean"},
        "conflictingWorker": STRING,
        "blockedFiles": {"type": "array", "items": STRING},
        "acquiredFiles": {"type": "array", "items": STRING},  # asked with partial: true
    },
}

DELIVERY_SCHEMA = {
    "type": "object",
    "required": ["success", "delivery", "outcome"],
    "properties": {
        "success": {"const": True},
        "delivery": STRING,
        "outcome": STRING,
        "note": STRING,
    },
}

HEALTH_SCHEMA = object_schema({"status": {"const": "ok"}})

READY_SCHEMA = object_schema(
    {
        "status": {"enum": ["ok", "unavailable"]},
        "checks": object_schema({"database": {"type": "boolean"}, "broker": {"type": "boolean"}}),
    }
)
