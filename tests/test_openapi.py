"""The OpenAPI document (GET /api/openapi.json) and the docs page (GET /api/docs): every
route documented, every form's fields in it with the bounds the form enforces, answers that
match their schemas, and the auth both pages need."""

from __future__ import annotations

import inspect
import json
import re
from typing import Any

import jsonschema
import pytest
from django import forms

from orchestration.api import openapi
from orchestration.api.openapi_forms import field_schema, form_schema
from orchestration.api.openapi_operations import OPERATIONS
from orchestration.api.response_schemas import METRICS_SUMMARY_SCHEMA, QUEUE_SCHEMA, STATUS_SCHEMA
from orchestration.api.serializers import WORK_ITEM_DETAIL_SCHEMA, WORKER_SCHEMA
from orchestration.forms.fields import ErrorFirstForm
from reviews.forms import GitHubDeliveryForm, GitHubReviewForm
from tests.factories import WorkerFactory, WorkItemFactory

pytestmark = pytest.mark.django_db
PROJECT = ("orchestration.", "reviews.", "intake.")


def _document() -> dict[str, Any]:
    return openapi.openapi_document()


def _form_names_in(view: Any) -> set[str]:
    """The form classes a view's source names, and those named by the project's functions it
    calls (one level: the helpers views delegate to)."""
    view = inspect.unwrap(view)
    functions = [view]
    for name in re.findall(r"\b(_?[a-z]\w*)\(", inspect.getsource(view)):
        helper = getattr(inspect.getmodule(view), name, None)
        if inspect.isfunction(helper) and helper.__module__.startswith(PROJECT):
            functions.append(helper)
    found = set()
    for function in functions:
        module = inspect.getmodule(function)
        for name in re.findall(r"\b([A-Z]\w*Form)\b", inspect.getsource(function)):
            cls = getattr(module, name, None)
            if isinstance(cls, type) and issubclass(cls, ErrorFirstForm):
                found.add(name)
    return found


def test_every_route_a_program_calls_is_documented() -> None:
    doc = _document()
    routes = openapi.api_routes()
    assert len(routes) >= 35
    for path, callback in routes:
        op = OPERATIONS[openapi.view_name(callback)]
        assert op.method in doc["paths"][path], path
    assert {openapi.view_name(cb) for _, cb in routes} == set(OPERATIONS)
    for must in (
        "/api/work",
        "/api/worker/{id}/complete",
        "/w/{token}/api/worker/{id}/fail",
        "/health",
        "/health/ready",
        "/metrics",
        "/webhooks/github",
        "/api/openapi.json",
    ):
        assert must in doc["paths"], must
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_each_view_is_documented_with_the_forms_it_validates_with() -> None:
    """The drift this prevents: a view that starts validating with another form, or a form
    that no operation's schema is read from."""
    checked = 0
    for _, callback in openapi.api_routes():
        op = OPERATIONS[openapi.view_name(callback)]
        assert {f.__name__ for f in op.forms} == _form_names_in(callback), callback.__name__
        checked += bool(op.forms)
    assert checked >= 20


def _documented_fields(op_doc: dict[str, Any], form: type[ErrorFirstForm]) -> dict[str, Any]:
    body = op_doc.get("requestBody", {}).get("content", {}).get("application/json", {})
    props = body.get("schema", {}).get("properties", {})
    params = {p["name"]: p["schema"] for p in op_doc.get("parameters", []) if p["in"] == "query"}
    return {name: props.get(name, params.get(name)) for name in form.base_fields}


def _assert_matches(name: str, field: forms.Field, schema: dict[str, Any] | None) -> None:
    assert schema is not None, f"{name} is not in the schema"
    custom = getattr(field, "json_schema", None)
    if custom is not None:
        assert schema == custom, name
        return
    if getattr(field, "max_length", None) is not None:
        assert schema["maxLength"] == field.max_length, name  # type: ignore[attr-defined]
    if isinstance(field, forms.ChoiceField):
        values = [str(c[0]) for c in field.choices]  # type: ignore[index,union-attr]
        assert [v for v in schema["enum"] if v is not None] == values, name
    for attr, key in (("min_value", "minimum"), ("max_value", "maximum")):
        if getattr(field, attr, None) is not None:
            assert schema[key] == getattr(field, attr), name
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    if isinstance(field, forms.IntegerField):
        assert "integer" in kinds, name
    if isinstance(field, forms.CharField):
        assert "string" in kinds, name


def test_every_field_of_every_form_is_in_the_schema_with_its_bounds() -> None:
    doc = _document()
    seen: set[str] = set()
    for path, callback in openapi.api_routes():
        op = OPERATIONS[openapi.view_name(callback)]
        op_doc = doc["paths"][path][op.method]
        for form in op.forms - {GitHubDeliveryForm, GitHubReviewForm}:
            for name, schema in _documented_fields(op_doc, form).items():
                _assert_matches(f"{form.__name__}.{name}", form.base_fields[name], schema)
            required = op_doc.get("requestBody", {}).get("content", {})
            if form is op.body:
                schema = required["application/json"]["schema"]
                want = [n for n, f in form.base_fields.items() if f.required]
                assert schema.get("required", []) == want, form.__name__
            seen.add(form.__name__)
    assert {"WorkItemSubmitForm", "CompleteForm", "QueueQueryForm", "KillForm"} <= seen


def test_the_webhook_documents_the_fields_its_forms_read() -> None:
    op = _document()["paths"]["/webhooks/github"]["post"]
    headers = {p["name"]: p["schema"] for p in op["parameters"] if p["in"] == "header"}
    delivery = GitHubDeliveryForm.base_fields
    _assert_matches("delivery", delivery["delivery"], headers["X-GitHub-Delivery"])
    _assert_matches("event", delivery["event"], headers["X-GitHub-Event"])
    body = op["requestBody"]["content"]["application/json"]["schema"]["properties"]
    _assert_matches("action", delivery["action"], body["action"])
    review = GitHubReviewForm.base_fields
    _assert_matches("repo", review["repo"], body["repository"]["properties"]["full_name"])
    _assert_matches("prNumber", review["prNumber"], body["pull_request"]["properties"]["number"])
    _assert_matches("state", review["state"], body["review"]["properties"]["state"])


def test_a_changed_bound_changes_the_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    """Generated, not copied: the document follows the form."""
    from orchestration.forms.clients import KillForm

    monkeypatch.setattr(KillForm.base_fields["reason"], "max_length", 7)
    schema = form_schema(KillForm)
    assert schema["properties"]["reason"]["maxLength"] == 7
    assert field_schema(KillForm.base_fields["retry"])["type"] == ["boolean", "null"]


def test_the_document_is_valid_json_schema_throughout() -> None:
    doc = _document()
    assert doc["openapi"] == "3.1.0"
    for ops in doc["paths"].values():
        for op in ops.values():
            for content in _contents(op):
                jsonschema.Draft202012Validator.check_schema(content)
            for status, answer in op["responses"].items():
                assert "$ref" in answer or "description" in answer, status
    for name, scheme in doc["components"]["securitySchemes"].items():
        assert scheme["type"] in ("apiKey", "http"), name
    assert doc["components"]["schemas"]["Error"]["required"] == ["error", "code"]


def _contents(op: dict[str, Any]) -> list[dict[str, Any]]:
    found = [p["schema"] for p in op.get("parameters", [])]
    found += [c["schema"] for c in op.get("requestBody", {}).get("content", {}).values()]
    for answer in op["responses"].values():
        found += [c["schema"] for c in answer.get("content", {}).values()]
    return found


def test_answers_match_their_schemas(api: Any) -> None:
    item: Any = WorkItemFactory()
    WorkerFactory(work_item=item)
    cases = [
        (f"/api/work/{item.pk}", WORK_ITEM_DETAIL_SCHEMA),
        ("/api/queue", QUEUE_SCHEMA),
        ("/api/queue?status=all&limit=5", QUEUE_SCHEMA),
        ("/api/status", STATUS_SCHEMA),
        ("/api/metrics", METRICS_SUMMARY_SCHEMA),
        ("/api/workers", {"type": "array", "items": WORKER_SCHEMA}),
    ]
    for path, schema in cases:
        resp = api.get(path)
        assert resp.status_code == 200, path
        jsonschema.validate(resp.json(), schema)


def test_openapi_json_needs_a_key_or_a_login(
    anonymous_client: Any, api: Any, viewer_client: Any
) -> None:
    resp = anonymous_client.get("/api/openapi.json", REMOTE_ADDR="203.0.113.9")
    assert resp.status_code == 401
    assert resp.json()["code"] == "UNAUTHORIZED"
    for client in (api, viewer_client):
        resp = client.get("/api/openapi.json")
        assert resp.status_code == 200
        assert resp.json()["paths"]["/api/work"]["post"]["operationId"] == "submitWorkItem"


def test_docs_page_renders_the_operations_from_local_assets_only(
    anonymous_client: Any, viewer_client: Any, api: Any
) -> None:
    resp = anonymous_client.get("/api/docs", REMOTE_ADDR="203.0.113.9")
    assert resp.status_code == 302
    assert resp["Location"].startswith("/accounts/login/")
    for client in (viewer_client, api):
        page = client.get("/api/docs").content.decode()
        assert 'id="submitWorkItem"' in page
        assert "/w/{token}/api/worker/{id}/heartbeat" in page
        assert "X-API-Key" in page and "QUEUE_FULL" in page
        assert "maxLength 100000" in page  # the submit form's spec bound
        external = re.findall(r'(?:src|href)="(https?:)?//', page)
        assert not external, external
    json.dumps(_document())  # serialisable as JSON


def test_every_answer_documents_the_security_headers_it_carries(api: Any) -> None:
    doc = _document()
    for name, header in openapi.SECURITY_HEADERS.items():
        for status, answer in doc["components"]["responses"].items():
            assert answer["headers"][name] == header, status
        for ops in doc["paths"].values():
            for op in ops.values():
                for status, answer in op["responses"].items():
                    assert "$ref" in answer or answer["headers"][name] == header, status
        for path in ("/api/status", "/api/nope", "/health", "/metrics"):
            assert api.get(path)[name] == header["schema"]["const"], (path, name)
