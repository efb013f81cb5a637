"""What the code cannot tell the OpenAPI document (``orchestration.api.openapi``) about each
operation: which form validates its body or query, what it answers, which errors it may give
and who may call it — one ``Op`` per view, keyed by the view's dotted name. The fields and
their bounds are not here: they are read off the forms (``openapi_forms``).
tests/test_openapi.py checks each entry's forms against the view's own source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orchestration.api import response_schemas as rs
from orchestration.api.nodes import NODE_SCHEMA
from orchestration.api.openapi_forms import form_schema, picked_body
from orchestration.api.serializers import WORK_ITEM_DETAIL_SCHEMA, WORK_ITEM_SCHEMA, WORKER_SCHEMA
from orchestration.forms.callbacks import (
    CompleteForm,
    FailForm,
    HeartbeatForm,
    LockForm,
    RegisterForm,
    StuckForm,
)
from orchestration.forms.clients import (
    ContinueForm,
    KillForm,
    QueueQueryForm,
    RequeueForm,
    WorkItemSubmitForm,
)
from orchestration.forms.fields import ErrorFirstForm
from orchestration.forms.learnings import LearningsQueryForm
from reviews.forms import GitHubDeliveryForm, GitHubReviewForm

Security = list[dict[str, list[str]]]
CLIENT: Security = [{"apiKey": []}, {"bearerKey": []}]
WORKER: Security = [{"workerToken": []}]
DOCS: Security = [{"apiKey": []}, {"bearerKey": []}, {"session": []}]
PUBLIC: Security = [{}]
# What each error status means (API.md "Errors").
ERRORS = {
    400: "Invalid input (VALIDATION_ERROR, details name each field), or a transition the "
    "item's status does not allow (INVALID_STATE), or the wrong kind of item (INVALID_TYPE)",
    401: "No valid credential (UNAUTHORIZED)",
    403: "The credential may not do this (FORBIDDEN)",
    404: "No such row, or no such route (NOT_FOUND)",
    409: "The worker is no longer the active attempt (INVALID_STATE)",
    413: "The body is larger than MAX_REQUEST_BYTES (PAYLOAD_TOO_LARGE)",
    415: "Keyless local mode: a POST must be application/json (VALIDATION_ERROR)",
    429: "The queue is full, MAX_QUEUED (QUEUE_FULL)",
    500: "An unexpected error (INTERNAL_ERROR), without a stack trace or a secret",
    503: "The database or a service Whim asks is unavailable (SERVICE_UNAVAILABLE)",
}
CLIENT_ERRORS = (400, 401, 413, 500, 503)
CLIENT_POST_ERRORS = (*CLIENT_ERRORS, 415)
WORKER_ERRORS = (400, 401, 403, 404, 409, 413, 500, 503)


@dataclass(frozen=True)
class Op:
    """What the code cannot tell of one operation: its form(s), answers and errors."""

    method: str
    summary: str
    answers: dict[int, Any]  # status -> JSON Schema (or a media type -> schema mapping)
    body: type[ErrorFirstForm] | dict[str, Any] | None = None
    query: type[ErrorFirstForm] | list[dict[str, Any]] | None = None
    errors: tuple[int, ...] = CLIENT_ERRORS
    security: Security = field(default_factory=lambda: CLIENT)
    links: dict[int, dict[str, Any]] = field(default_factory=dict)
    tag: str = "client"
    headers: tuple[dict[str, Any], ...] = ()
    also: tuple[type[ErrorFirstForm], ...] = ()  # forms read into headers or a nested body
    example: dict[str, Any] | None = None  # a request body that succeeds

    @property
    def forms(self) -> set[type[ErrorFirstForm]]:
        """Every form this operation's request is validated by (and documented from)."""
        return {f for f in (self.body, self.query, *self.also) if isinstance(f, type)}


def _links(*ops: str) -> dict[str, Any]:
    return {op: {"operationId": op, "parameters": {"id": "$response.body#/id"}} for op in ops}


def _worker(summary: str, form: type[ErrorFirstForm], answer: Any, status: int = 200) -> Op:
    return Op(
        "post",
        summary,
        {status: answer},
        body=form,
        errors=WORKER_ERRORS,
        security=WORKER,
        tag="worker",
    )


CANCEL_BODY = {
    "type": "object",
    "properties": {"reason": {"type": ["string", "null"], "maxLength": 1000}},
}
LOGS_QUERY = [
    {
        "name": "lines",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 10_000, "default": 1000},
    },
]
ALL_QUERY = [
    {
        "name": "all",
        "in": "query",
        "required": False,
        "schema": {"enum": ["", "0", "1", "true", "false"]},
        "description": "1 or true: the list of the PR's reviews, newest first",
    },
]
WEBHOOK_BODY = {
    **picked_body(GitHubReviewForm, GitHubReviewForm.review_fields),
    "description": "GitHub's delivery payload; the fields shown are those Whim validates "
    "(a pull_request_review delivery's); pull_request and issues deliveries are read too",
}
WEBHOOK_BODY["properties"]["action"] = form_schema(GitHubDeliveryForm)["properties"]["action"]
_review_list = {"type": "array", "items": rs.REVIEW_SCHEMA}
_node_list = {"type": "array", "items": NODE_SCHEMA}
_n = "orchestration.api.views."
_w = "orchestration.api.worker_views."
OPERATIONS: dict[str, Op] = {
    _n + "work_submit": Op(
        "post",
        "Submit a work item",
        {201: rs.SUBMITTED_SCHEMA, 200: WORK_ITEM_SCHEMA},
        body=WorkItemSubmitForm,
        errors=(*CLIENT_POST_ERRORS, 429),
        links={201: _links("getWorkItem", "cancelWorkItem")},
        example={"repo": "acme/widgets", "spec": "# Add a widget\n\nDetails", "priority": "high"},
    ),
    _n + "work_detail": Op(
        "get", "A work item", {200: WORK_ITEM_DETAIL_SCHEMA}, errors=(*CLIENT_ERRORS, 404)
    ),
    _n + "work_cancel": Op(
        "post",
        "Cancel a work item",
        {200: rs.SUCCESS_SCHEMA},
        body=CANCEL_BODY,
        errors=(*CLIENT_POST_ERRORS, 404),
    ),
    _n + "work_requeue": Op(
        "post",
        "Requeue a failed or cancelled item",
        {200: WORK_ITEM_SCHEMA},
        body=RequeueForm,
        errors=(*CLIENT_POST_ERRORS, 404, 429),
    ),
    _n + "work_continue": Op(
        "post",
        "Continue a paused item with a raised cost cap",
        {200: WORK_ITEM_DETAIL_SCHEMA},
        body=ContinueForm,
        errors=(*CLIENT_POST_ERRORS, 404, 429),
    ),
    _n + "work_verification": Op(
        "get", "The linked verification item", {200: WORK_ITEM_SCHEMA}, errors=(*CLIENT_ERRORS, 404)
    ),
    _n + "queue": Op(
        "get",
        "The queue (dispatch order, or cursor pages)",
        {200: rs.QUEUE_SCHEMA},
        query=QueueQueryForm,
    ),
    _n + "status": Op("get", "Health, workers, queue and rate limits", {200: rs.STATUS_SCHEMA}),
    _n + "workers_list": Op(
        "get", "Workers, newest first", {200: {"type": "array", "items": WORKER_SCHEMA}}
    ),
    _n + "worker_kill": Op(
        "post",
        "Kill a worker (its item is retried unless retry is false)",
        {200: rs.SUCCESS_SCHEMA},
        body=KillForm,
        errors=(*CLIENT_POST_ERRORS, 404),
    ),
    _n + "worker_logs": Op(
        "get",
        "A worker's container logs",
        {200: rs.LOGS_SCHEMA},
        query=LOGS_QUERY,
        errors=(*CLIENT_ERRORS, 404),
    ),
    _n + "metrics": Op(
        "get", "Today's throughput, verification and token usage", {200: rs.METRICS_SUMMARY_SCHEMA}
    ),
    "orchestration.api.nodes.nodes_list": Op(
        "get", "The nodes (Docker hosts) and their state", {200: _node_list}, tag="nodes"
    ),
    "orchestration.api.nodes.node_drain": Op(
        "post",
        "Drain a node: no new attempts; running ones finish",
        {200: NODE_SCHEMA},
        errors=(*CLIENT_POST_ERRORS, 404),
        tag="nodes",
    ),
    "orchestration.api.nodes.node_resume": Op(
        "post",
        "Resume a draining or lost node",
        {200: NODE_SCHEMA},
        errors=(*CLIENT_POST_ERRORS, 404),
        tag="nodes",
    ),
    _n + "reviews_list": Op("get", "PR reviews, newest first", {200: _review_list}),
    _n + "reviews_for_item": Op(
        "get", "A work item's PR reviews", {200: _review_list}, errors=(*CLIENT_ERRORS, 404)
    ),
    _n + "reviews_for_pr": Op(
        "get",
        "A pull request's latest review (?all=1: every one)",
        {200: {"oneOf": [rs.REVIEW_SCHEMA, _review_list]}},
        query=ALL_QUERY,
        errors=(*CLIENT_ERRORS, 404),
    ),
    _n + "health": Op(
        "get", "Liveness", {200: rs.HEALTH_SCHEMA}, errors=(), security=PUBLIC, tag="operations"
    ),
    _n + "health_ready": Op(
        "get",
        "Readiness: the database and the broker answer",
        {200: rs.READY_SCHEMA, 503: rs.READY_SCHEMA},
        errors=(),
        security=PUBLIC,
        tag="operations",
    ),
    "orchestration.prometheus.metrics_view": Op(
        "get",
        "Prometheus metrics",
        {200: {"text/plain": {"type": "string"}}},
        errors=(),
        security=PUBLIC,
        tag="operations",
    ),
    "orchestration.api.learnings.learnings": Op(
        "get",
        "What earlier attempts learned about a repository",
        {200: {"type": "array", "items": rs.LEARNING_SCHEMA}},
        query=LearningsQueryForm,
        errors=(400, 401, 403, 409, 500, 503),
        security=[*CLIENT, *WORKER],
    ),
    "orchestration.api.docs.openapi_json": Op(
        "get",
        "This document",
        {200: {"type": "object", "required": ["openapi", "paths"]}},
        errors=(401,),
        security=DOCS,
        tag="operations",
    ),
    "orchestration.api.docs.docs_page": Op(
        "get",
        "The browsable API documentation (no credential: 302 to the login page)",
        {200: {"text/html": {"type": "string"}}, 302: None},
        errors=(),
        security=DOCS,
        tag="operations",
    ),
    _w + "register": _worker(
        "Register the container's worker", RegisterForm, rs.REGISTERED_SCHEMA, 201
    ),
    _w + "heartbeat": _worker(
        "Heartbeat (refreshes lock leases)", HeartbeatForm, rs.SUCCESS_SCHEMA
    ),
    _w + "lock": _worker(
        "Lock files, all or nothing (partial: true, the original's)", LockForm, rs.LOCK_SCHEMA
    ),
    _w + "unlock": _worker("Unlock files", LockForm, rs.SUCCESS_SCHEMA),
    _w + "complete": _worker("Report the attempt complete", CompleteForm, rs.SUCCESS_SCHEMA),
    _w + "fail": _worker("Report the attempt failed", FailForm, rs.SUCCESS_SCHEMA),
    _w + "stuck": _worker("Report the agent stuck", StuckForm, rs.SUCCESS_SCHEMA),
    "reviews.views.github_webhook": Op(
        "post",
        "GitHub webhook (X-Hub-Signature-256 over the raw body)",
        {200: rs.DELIVERY_SCHEMA},
        body=WEBHOOK_BODY,
        errors=(400, 401, 413, 500, 503),
        security=PUBLIC,
        tag="webhooks",
        also=(GitHubDeliveryForm, GitHubReviewForm),
        headers=tuple(
            {"name": name, "in": "header", "required": True, "schema": schema}
            for name, schema in (
                ("X-Hub-Signature-256", {"type": "string", "pattern": "^sha256=[0-9a-f]{64}$"}),
                ("X-GitHub-Delivery", form_schema(GitHubDeliveryForm)["properties"]["delivery"]),
                ("X-GitHub-Event", form_schema(GitHubDeliveryForm)["properties"]["event"]),
            )
        ),
    ),
}
