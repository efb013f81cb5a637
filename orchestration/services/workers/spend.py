"""What an attempt reports it spent: the bounded rise of its token counts, and the charge and
metrics of a finishing attempt (its completion, a ``spec`` attempt's too)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings

from orchestration.errors import ValidationFailed
from orchestration.models import Worker, WorkerMetrics, WorkItem
from orchestration.services.costs import cost_charge


def tokens_rise_check(
    *, worker: Worker, tokens: dict[str, int | None], field: str | None = None
) -> None:
    """Refuse (ValidationFailed, nothing written) a token count that rose by more than
    MAX_TOKENS_PER_HEARTBEAT since the worker's last report: an agent cannot claim in one
    report what a real run spends over many. ``field`` names the request field in the
    details (``metrics`` for complete); by default each count's own name."""
    cap = settings.MAX_TOKENS_PER_HEARTBEAT
    known = {"tokensIn": worker.tokens_in, "tokensOut": worker.tokens_out}
    for key, value in tokens.items():
        rise = (value or 0) - known[key]
        if rise > cap:
            raise ValidationFailed(
                "Invalid request",
                details={
                    field or key: f"{key} rose by {rise} since the last report; at most "
                    f"{cap} per report (MAX_TOKENS_PER_HEARTBEAT)"
                },
            )


def attempt_charge(
    *, item: WorkItem, worker: Worker, metrics: dict[str, Any], model: str, now: dt.datetime
) -> None:
    """What a finishing attempt reports it spent (``metrics``): checked (tokens only rise, and
    by a bounded step) and charged to the ledger. Call with the item and worker rows locked."""
    tokens_rise_check(
        worker=worker,
        tokens={k: metrics.get(k) for k in ("tokensIn", "tokensOut")},
        field="metrics",
    )
    cost_charge(
        item=item,
        worker=worker,
        now=now,
        tokens_in=metrics.get("tokensIn"),
        tokens_out=metrics.get("tokensOut"),
        cost_usd=metrics.get("costUsd"),
        model=model,
    )


def attempt_metrics_record(*, item: WorkItem, worker: Worker, metrics: dict[str, Any]) -> None:
    """Keep a finished attempt's reported metrics (missing ones as 0); its tokens and cost as
    charged: the most any report said."""
    m = metrics
    WorkerMetrics.objects.update_or_create(
        worker=worker,
        defaults={
            "work_item": item,
            "tokens_in": worker.tokens_in,
            "tokens_out": worker.tokens_out,
            "cost_usd": worker.cost_usd,
            "iterations": int(m.get("iterations") or worker.iteration),
            "duration_ms": int(m.get("duration") or 0),
            "files_modified": int(m.get("filesModified") or 0),
            "tests_run": int(m.get("testsRun") or 0),
            "tests_passed": int(m.get("testsPassed") or 0),
            "tests_failed": int(m.get("testsFailed") or 0),
            "test_status": str(m.get("testStatus") or "")[:40],
        },
    )
