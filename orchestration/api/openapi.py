"""The OpenAPI 3.1 document of every HTTP route a program calls (GET /api/openapi.json).

Generated, not written beside the code: the paths are read off the URLconf, the request
bodies and query parameters off the forms that validate them (``openapi_forms``), the answers
from the schemas beside their serializers (``serializers``, ``response_schemas``). What is
said by hand is only what the code cannot tell: each view's form, answers and errors
(``openapi_operations.OPERATIONS``, keyed by the view), checked against the views by
tests/test_openapi.py.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.urls import URLPattern, URLResolver, get_resolver

from orchestration.api import response_schemas as rs
from orchestration.api.openapi_forms import form_schema, query_parameters
from orchestration.api.openapi_operations import ERRORS, OPERATIONS, PUBLIC, Op

PARAMETER_NAMES = {"pk": "id"}  # the URLconf's names, as the document calls them
# Headers every answer carries (Django's security middleware), documented on each response.
SECURITY_HEADERS: dict[str, dict[str, Any]] = {
    "X-Content-Type-Options": {
        "required": True,
        "schema": {"const": "nosniff"},
        "description": "SECURE_CONTENT_TYPE_NOSNIFF",
    },
    "X-Frame-Options": {
        "required": True,
        "schema": {"const": "DENY"},
        "description": "no page of Whim may be framed",
    },
}
# ...and the request id (orchestration.requestid; README "Request ids").
RESPONSE_HEADERS: dict[str, dict[str, Any]] = {
    **SECURITY_HEADERS,
    "X-Request-ID": {
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"},
        "description": "the request's id: the caller's X-Request-ID when sane, else a new one; "
        "on the events and in the tasks the request caused",
    },
}


def view_name(callback: Any) -> str:
    return f"{callback.__module__}.{callback.__name__}"


def api_routes() -> list[tuple[str, Any]]:
    """Every (OpenAPI path, view) of the URLconf a program calls: the API, the worker
    callbacks, the webhook, health and metrics (not the console, the admin, or the
    catch-all 404s)."""
    routes: list[tuple[str, Any]] = []

    def walk(patterns: list[Any], prefix: str) -> None:
        for p in patterns:
            route = str(p.pattern)
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + route)
            elif isinstance(p, URLPattern) and not route.startswith("^"):
                path = prefix + route
                if path.startswith(("api/", "w/", "webhooks/", "health", "metrics")):
                    routes.append(("/" + _openapi_path(path), p.callback))

    walk(get_resolver().url_patterns, "")
    return routes


def _openapi_path(route: str) -> str:
    def name(m: re.Match[str]) -> str:
        return "{" + PARAMETER_NAMES.get(m[1], m[1]) + "}"

    return re.sub(r"<(?:\w+:)?(\w+)>", name, route)


def _path_parameters(path: str) -> list[dict[str, Any]]:
    params = []
    for name in re.findall(r"{(\w+)}", path):
        schema: dict[str, Any] = {"type": "string", "minLength": 1}
        if name == "id":
            schema = {"type": "string", "format": "uuid"}
        elif name == "name":  # a node's (orchestration.fleet.NODE_NAME_RE)
            schema = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,62}$"}
        elif name == "number":
            schema = {"type": "integer", "minimum": 0}
        elif name == "token":
            schema = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[^/]+$"}
        param = {"name": name, "in": "path", "required": True, "schema": schema}
        if name == "token":
            param["description"] = (
                "The worker's token, carried in the callback base URL its container receives "
                "(ORCHESTRATOR_URL=http://host:port/w/<token>); it opens only its own routes."
            )
        params.append(param)
    return params


def _content(answer: Any) -> dict[str, Any]:
    if isinstance(answer, dict) and set(answer) <= {"text/plain", "text/html"} and answer:
        return {kind: {"schema": schema} for kind, schema in answer.items()}
    return {"application/json": {"schema": answer}}


def operation(path: str, op: Op, operation_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"operationId": operation_id, "summary": op.summary, "tags": [op.tag]}
    params = _path_parameters(path) + list(op.headers)
    if isinstance(op.query, type):
        params += query_parameters(op.query)
    elif op.query:
        params += op.query
    if params:
        doc["parameters"] = params
    if op.body is not None:
        schema = form_schema(op.body) if isinstance(op.body, type) else op.body
        doc["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": schema}},
        }
        if op.example is not None:
            doc["requestBody"]["content"]["application/json"]["example"] = op.example
    responses: dict[str, Any] = {}
    for status, answer in op.answers.items():
        responses[str(status)] = {
            "description": "OK" if status < 300 else "Redirect",
            "headers": RESPONSE_HEADERS,
        }
        if answer is not None:
            responses[str(status)]["content"] = _content(answer)
        if status in op.links:
            responses[str(status)]["links"] = op.links[status]
    for status in op.errors:
        responses[str(status)] = {"$ref": f"#/components/responses/E{status}"}
    doc["responses"] = responses
    if "{token}" in path:
        doc["security"] = PUBLIC  # the worker token is the path's own {token}
    else:
        doc["security"] = op.security
    return doc


def _operation_id(path: str, callback: Any) -> str:
    base = re.sub(r"_(\w)", lambda m: m[1].upper(), callback.__name__)
    base = {
        "workSubmit": "submitWorkItem",
        "workDetail": "getWorkItem",
        "workCancel": "cancelWorkItem",
    }.get(base, base)
    if path.startswith("/w/"):
        return f"{base}ByTokenPath"
    if path.startswith("/api/worker/"):
        return f"worker{base[:1].upper()}{base[1:]}"
    return base


def openapi_document() -> dict[str, Any]:
    """The whole document (built on each request: bounds read from settings are current)."""
    paths: dict[str, dict[str, Any]] = {}
    for path, callback in api_routes():
        op = OPERATIONS.get(view_name(callback))
        if op is None:
            raise LookupError(f"{path} ({view_name(callback)}) has no OPERATIONS entry")
        paths.setdefault(path, {})[op.method] = operation(path, op, _operation_id(path, callback))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Whim API",
            "version": "1",
            "description": "API.md as a machine-readable contract. Request schemas are read off "
            "the forms that validate them; every error is {error, code, details?}.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": {"Error": rs.ERROR_SCHEMA},
            "responses": {
                f"E{status}": {
                    "description": text,
                    "headers": RESPONSE_HEADERS,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
                for status, text in ERRORS.items()
            },
            "securitySchemes": _security_schemes(),
        },
    }


def _security_schemes() -> dict[str, Any]:
    local = " With no key configured, single-machine mode lets loopback requests through."
    return {
        "apiKey": {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "An API key (admin, `whim_apikey`, or API_KEY)." + local,
        },
        "bearerKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "The same API key as Authorization: Bearer <key>.",
        },
        "workerToken": {
            "type": "http",
            "scheme": "bearer",
            "description": "The per-worker secret handed to its container; "
            "also accepted in the callback base URL /w/<token>/.",
        },
        "session": {
            "type": "apiKey",
            "in": "cookie",
            "name": settings.SESSION_COOKIE_NAME,
            "description": "A console login (the docs page and this document only).",
        },
    }
