"""Worker callback routes (API.md "Worker callbacks"), called from inside a container.

Auth: the per-worker secret, as ``Authorization: Bearer <token>`` or in the callback base URL
(``/w/<token>/api/worker/…``). A token opens only its own worker's routes. Every callback is
safe to repeat; a worker that is no longer the active attempt gets 409 for a state change.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import json
from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from orchestration.api.base import bearer_token, json_answer, method_refused, parse_json_body
from orchestration.api.responses import error_response, whim_error_response
from orchestration.api.serializers import work_item_json
from orchestration.choices import ErrorCategory
from orchestration.errors import WhimError
from orchestration.forms.callbacks import (
    CompleteForm,
    FailForm,
    HeartbeatForm,
    LockForm,
    RegisterForm,
    StuckForm,
)
from orchestration.models import Worker
from orchestration.services import locks, workers
from orchestration.services.dispatch import token_digest
from orchestration.services.workers.beat_buffer import beat_buffer, coalescing

WorkerView = Callable[[HttpRequest, Worker, dict[str, Any]], HttpResponse | dict[str, Any]]


def _presented_token(request: HttpRequest, path_token: str | None) -> str:
    return path_token or bearer_token(request)


def worker_authenticate(token: str) -> Worker | None:
    """The worker a token belongs to (constant-time check of its digest), or None. Only the
    columns the routes read first are fetched (the services lock and re-read the rest)."""
    if not token or len(token) > 200:
        return None
    digest = token_digest(token)
    worker = (
        Worker.objects.only("id", "token_hash", "work_item_id").filter(token_hash=digest).first()
    )
    if worker is None or not hmac.compare_digest(worker.token_hash, digest):
        return None
    return worker


def worker_view(view: WorkerView) -> Callable[..., HttpResponse]:
    """POST only; authenticate the worker by token; the route's id must be that worker."""
    return _worker_route(view, atomic=False)


def atomic_worker_view(view: WorkerView) -> Callable[..., HttpResponse]:
    """``worker_view`` whose authentication and route run in one transaction (the heartbeat,
    whose service opens none of its own then: one BEGIN … COMMIT a beat)."""
    return _worker_route(view, atomic=True)


def _worker_route(view: WorkerView, *, atomic: bool) -> Callable[..., HttpResponse]:
    @csrf_exempt
    @functools.wraps(view)
    def wrapped(
        request: HttpRequest, token: str | None = None, pk: str | None = None
    ) -> HttpResponse:
        if refused := method_refused(request, ("POST",)):
            return refused
        with transaction.atomic() if atomic else contextlib.nullcontext():
            worker = worker_authenticate(_presented_token(request, token))
            if worker is None:
                return error_response(401, "UNAUTHORIZED", "A valid worker token is required")
            if pk is not None and str(worker.pk) != pk:
                return error_response(403, "FORBIDDEN", "This token belongs to another worker")
            return json_answer(lambda: view(request, worker, parse_json_body(request)))

    return wrapped


@worker_view
def register(request: HttpRequest, worker: Worker, body: dict[str, Any]) -> HttpResponse:
    data = RegisterForm.from_json(body).validated()
    item = workers.worker_register(worker_id=worker.pk, work_item_id=data["workItemId"])
    return JsonResponse({"workerId": str(worker.pk), "workItem": work_item_json(item)}, status=201)


@csrf_exempt
def heartbeat(
    request: HttpRequest, token: str | None = None, pk: str | None = None
) -> HttpResponse:
    """A running attempt's beat is buffered in Redis (``beat_buffer``: no database statement);
    any other (its first, a resumed one, a refused one, an ended attempt's, Redis away) is
    written at once by the slow path, which authenticates it as every callback."""
    if request.method == "POST" and coalescing():
        answered = _heartbeat_buffered(request, _presented_token(request, token), pk)
        if answered is not None:
            return answered
    return _heartbeat_written(request, token=token, pk=pk)


def _heartbeat_buffered(request: HttpRequest, token: str, pk: str | None) -> HttpResponse | None:
    """The fast path's answer, or None for the slow path. The hash it finds was opened for this
    token's worker by an accepted slow beat, so it authenticates the token; nothing about the
    request is told before that (a bad body goes the slow path, which authenticates first)."""
    if not token or len(token) > 200:
        return None
    try:
        data = HeartbeatForm.from_json(parse_json_body(request)).validated()
    except WhimError:
        return None
    if data.get("resumedFrom") or pk is None:
        return None
    try:
        buffered = beat_buffer(
            digest=token_digest(token),
            worker_id=pk,
            iteration=data["iteration"],
            tokens_in=data.get("tokensIn"),
            tokens_out=data.get("tokensOut"),
            cost_usd=data.get("costUsd"),
            model=data.get("model") or None,
        )
    except WhimError as exc:  # a token count risen too far: refused, nothing buffered
        return whim_error_response(exc)
    return JsonResponse({"success": True}) if buffered else None


@atomic_worker_view
def _heartbeat_written(
    request: HttpRequest, worker: Worker, body: dict[str, Any]
) -> dict[str, Any]:
    data = HeartbeatForm.from_json(body).validated()
    workers.worker_heartbeat(
        worker_id=worker.pk,
        iteration=data["iteration"],
        tokens_in=data.get("tokensIn"),
        tokens_out=data.get("tokensOut"),
        resumed_from=data.get("resumedFrom") or "",
        cost_usd=data.get("costUsd"),
        model=data.get("model") or None,
        work_item_id=worker.work_item_id,
    )
    return {"success": True}


@worker_view
def lock(request: HttpRequest, worker: Worker, body: dict[str, Any]) -> dict[str, Any]:
    data = LockForm.from_json(body).validated()
    partial = data.get("partial") is True
    result = locks.locks_acquire(
        worker_id=worker.pk, repo=data["repo"], files=data["files"], partial=partial
    )
    answer: dict[str, Any] = {"acquired": result.acquired}
    if partial:  # the original's lists, both always present
        answer["acquiredFiles"] = list(result.acquired_files)
        answer["blockedFiles"] = list(result.blocked_files)
        if not result.acquired:
            answer["conflictingWorker"] = str(result.conflicting_worker or "")
        return answer
    if not result.acquired:
        answer["conflictingWorker"] = str(result.conflicting_worker or "")
        answer["blockedFiles"] = list(result.blocked_files)
    return answer


@worker_view
def unlock(request: HttpRequest, worker: Worker, body: dict[str, Any]) -> dict[str, Any]:
    data = LockForm.from_json(body).validated()
    locks.locks_release(worker_id=worker.pk, repo=data["repo"], files=data["files"])
    return {"success": True}


@worker_view
def complete(request: HttpRequest, worker: Worker, body: dict[str, Any]) -> dict[str, Any]:
    data = CompleteForm.from_json(body).validated()
    workers.worker_complete(
        worker_id=worker.pk,
        result=workers.Completion(
            pr_url=data.get("prUrl") or "",
            pr_number=data.get("prNumber"),
            verification_passed=data.get("verificationPassed"),
            verification_enabled=bool(data.get("verificationEnabled")),
            metrics=data.get("metrics") or {},
            learnings=data.get("learnings") or [],
            review=data.get("review") or None,
            commit_sha=data.get("commitSha") or "",
            model=data.get("model") or "",
            warning=data.get("warning") or "",
            spec=data.get("spec"),
            diff_lines=data.get("diffLines"),
        ),
    )
    return {"success": True}


@worker_view
def fail(request: HttpRequest, worker: Worker, body: dict[str, Any]) -> dict[str, Any]:
    data = FailForm.from_json(body).validated()
    error = data["error"]
    if data.get("context"):  # kept in the error, as the original Whim does
        error = f"{error}\n\nContext: {json.dumps(data['context'], sort_keys=True)}"
    if data.get("stack"):
        error = f"{error}\n\n{data['stack']}"
    workers.worker_fail(
        worker_id=worker.pk,
        error=error,
        category=data.get("category") or ErrorCategory.AGENT_ERROR,
        iteration=data.get("iteration"),
    )
    return {"success": True}


@worker_view
def stuck(request: HttpRequest, worker: Worker, body: dict[str, Any]) -> dict[str, Any]:
    data = StuckForm.from_json(body).validated()
    workers.worker_stuck(
        worker_id=worker.pk, reason=data["reason"], attempts=data.get("attempts") or 0
    )
    return {"success": True}
