"""Client routes of API.md. Views parse, call one service or selector, and shape JSON."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from orchestration.api.base import api_view
from orchestration.api.queries import queue_page
from orchestration.api.responses import error_response
from orchestration.api.serializers import work_item_detail_json, work_item_json, worker_json
from orchestration.errors import InvalidType, NotFound, ValidationFailed
from orchestration.forms.clients import (
    ContinueForm,
    KillForm,
    RequeueForm,
    WorkItemSubmitForm,
)
from orchestration.models import Worker, WorkItem, WorkItemType
from orchestration.nudge import broker_reachable
from orchestration.registry import runtime
from orchestration.rows import row_get
from orchestration.selectors import metrics_summary, status_summary
from orchestration.services import work_items, workers
from reviews.findings import findings_object
from reviews.models import PRReview


@api_view("POST")
def work_submit(request: HttpRequest, *, body: dict[str, Any], actor: str) -> HttpResponse:
    form = WorkItemSubmitForm.from_json(body)
    form.validated()
    item, created = work_items.work_item_submit(**form.submission(), actor=actor)
    if created:
        return JsonResponse({"id": str(item.pk), "status": item.status}, status=201)
    return JsonResponse(work_item_json(item), status=200)


@api_view("GET")
def work_detail(request: HttpRequest, *, body: dict[str, Any], actor: str, pk: str) -> Any:
    return work_item_detail_json(row_get(WorkItem, pk, "Work item"))


@api_view("POST")
def work_cancel(request: HttpRequest, *, body: dict[str, Any], actor: str, pk: str) -> Any:
    reason = body.get("reason")
    work_items.work_item_cancel(
        work_item_id=row_get(WorkItem, pk, "Work item").pk,
        actor=actor,
        reason=reason if isinstance(reason, str) else "",
    )
    return {"success": True}


@api_view("POST")
def work_requeue(request: HttpRequest, *, body: dict[str, Any], actor: str, pk: str) -> Any:
    data = RequeueForm.from_json(body).validated()
    item = row_get(WorkItem, pk, "Work item")
    work_items.work_item_requeue(
        work_item_id=item.pk, reset_retries=bool(data.get("resetRetries")), actor=actor
    )
    item.refresh_from_db()
    return work_item_json(item)


@api_view("POST")
def work_continue(request: HttpRequest, *, body: dict[str, Any], actor: str, pk: str) -> Any:
    """A paused item goes back to the queue with the raised cost cap ``maxCostUsd``."""
    data = ContinueForm.from_json(body).validated()
    item = row_get(WorkItem, pk, "Work item")
    work_items.work_item_continue(
        work_item_id=item.pk, max_cost_usd=data["maxCostUsd"], actor=actor
    )
    item.refresh_from_db()
    return work_item_detail_json(item)


@api_view("GET")
def work_verification(request: HttpRequest, *, body: dict[str, Any], actor: str, pk: str) -> Any:
    parent = row_get(WorkItem, pk, "Work item")
    if parent.type != WorkItemType.EXECUTION:
        raise InvalidType("Only execution items have linked verification items")
    child = (
        WorkItem.objects.filter(parent_work_item=parent, type=WorkItemType.VERIFICATION)
        .order_by("-created_at")
        .first()
    )
    if child is None:
        raise NotFound("This work item has no verification item")
    return work_item_json(child)


@api_view("GET")
def queue(request: HttpRequest, *, body: dict[str, Any], actor: str) -> Any:
    return queue_page(request.GET)


@api_view("GET")
def status(request: HttpRequest, *, body: dict[str, Any], actor: str) -> Any:
    return status_summary(broker_ok=broker_reachable())


@api_view("GET")
def workers_list(request: HttpRequest, *, body: dict[str, Any], actor: str) -> Any:
    rows = Worker.objects.order_by("-created_at")[:200]
    return [worker_json(w) for w in rows]


@api_view("POST")
def worker_kill(request: HttpRequest, *, body: dict[str, Any], actor: str, pk: str) -> Any:
    kill = KillForm.from_json(body).kill_options()
    workers.worker_kill(worker_id=row_get(Worker, pk, "Worker").pk, actor=actor, **kill)
    return {"success": True}


@api_view("GET")
def worker_logs(request: HttpRequest, *, body: dict[str, Any], actor: str, pk: str) -> Any:
    raw = request.GET.get("lines", "1000")
    if not (raw.isascii() and raw.isdecimal()) or not 1 <= int(raw) <= 10_000:
        raise ValidationFailed(
            "Invalid query parameters", details={"lines": "must be a whole number from 1 to 10000"}
        )
    worker = row_get(Worker, pk, "Worker")
    logs, _source = runtime().worker_logs(worker, lines=int(raw))
    return {"workerId": str(worker.pk), "logs": logs}


@api_view("GET")
def metrics(request: HttpRequest, *, body: dict[str, Any], actor: str) -> Any:
    return metrics_summary()


def _review_json(r: PRReview) -> dict[str, Any]:
    """The original Whim's PRReview: ``id`` a string, ``findings`` a ReviewFindings object.
    A review is never edited, so ``reviewTimestamp`` and ``updatedAt`` are its creation."""
    when = r.created_at.isoformat()
    return {
        "id": str(r.pk),
        "workItemId": str(r.work_item_id) if r.work_item_id else None,
        "repo": r.repo,
        "prNumber": r.pr_number,
        "reviewTimestamp": when,
        "modelUsed": r.model_used,
        "findings": findings_object(r.findings),
        "createdAt": when,
        "updatedAt": when,
    }


@api_view("GET")
def reviews_list(request: HttpRequest, *, body: dict[str, Any], actor: str) -> Any:
    return [_review_json(r) for r in PRReview.objects.order_by("-created_at")[:200]]


@api_view("GET")
def reviews_for_item(request: HttpRequest, *, body: dict[str, Any], actor: str, pk: str) -> Any:
    item = row_get(WorkItem, pk, "Work item")
    return [_review_json(r) for r in item.reviews.order_by("-created_at")[:200]]


@api_view("GET")
def reviews_for_pr(request: HttpRequest, *, body: dict[str, Any], actor: str, number: int) -> Any:
    """The PR's latest review (404 without one), as the original answers; ``?all=1``: the
    list of its reviews, newest first."""
    every = request.GET.get("all", "")
    if every not in ("", "0", "1", "true", "false"):
        raise ValidationFailed(
            "Invalid query parameters", details={"all": "must be 1 or true (or 0 or false)"}
        )
    rows = PRReview.objects.filter(pr_number=number).order_by("-created_at", "-pk")
    if every in ("1", "true"):
        return [_review_json(r) for r in rows[:200]]
    latest = rows.first()
    if latest is None:
        raise NotFound("Review not found")
    return _review_json(latest)


def health(request: HttpRequest) -> HttpResponse:
    """Liveness: the process answers. No key needed."""
    return JsonResponse({"status": "ok"})


def health_ready(request: HttpRequest) -> HttpResponse:
    """Readiness: the database and the broker answer."""
    checks = {"database": True, "broker": broker_reachable()}
    try:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        checks["database"] = False
    ok = all(checks.values())
    return JsonResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503
    )


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return error_response(404, "NOT_FOUND", f"No route for {request.method} {request.path}")
