"""GET /api/openapi.json (the OpenAPI document) and GET /api/docs (it, browsable).

Either needs an API key (as the client routes take it) or a console login. The docs page is a
Django template over the document itself, so it shows exactly what the document says and
needs no script or stylesheet from anywhere but this server.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt

from orchestration.api.base import client_identity, method_refused
from orchestration.api.openapi import openapi_document
from orchestration.api.responses import error_response


def _allowed(request: HttpRequest) -> bool:
    return request.user.is_authenticated or client_identity(request) is not None


@csrf_exempt
def openapi_json(request: HttpRequest) -> HttpResponse:
    if refused := method_refused(request, ("GET",)):
        return refused
    if not _allowed(request):
        return error_response(401, "UNAUTHORIZED", "A valid API key or a console login is required")
    return JsonResponse(openapi_document(), json_dumps_params={"indent": 1})


def docs_page(request: HttpRequest) -> HttpResponse:
    if refused := method_refused(request, ("GET",)):
        return refused
    if not _allowed(request):
        return redirect_to_login(request.get_full_path())
    doc = openapi_document()
    return render(request, "api/docs.html", {"doc": doc, "operations": _operations(doc)})


def _operations(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Each operation as the template shows it: parameters and body fields as rows, the
    schemas as indented JSON."""
    rows = []
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            schema = body.get("schema", {})
            required = set(schema.get("required", []))
            rows.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "id": op["operationId"],
                    "summary": op["summary"],
                    "tag": op["tags"][0],
                    "auth": sorted({name for s in op["security"] for name in s}) or ["none"],
                    "parameters": [
                        _row(p["name"], p["schema"], p["required"], p["in"], p.get("description"))
                        for p in op.get("parameters", [])
                    ],
                    "fields": [
                        _row(name, s, name in required, "body")
                        for name, s in schema.get("properties", {}).items()
                    ],
                    "responses": [
                        _response(status, r, doc) for status, r in op["responses"].items()
                    ],
                }
            )
    return rows


def _row(
    name: str, schema: dict[str, Any], required: bool, where: str, about: str | None = None
) -> dict[str, Any]:
    kind = schema.get("type", "enum" if "enum" in schema else "")
    bounds = [
        f"{k} {schema[k]}"
        for k in ("minLength", "maxLength", "minimum", "maximum", "maxItems", "pattern", "format")
        if k in schema
    ]
    if "enum" in schema:
        bounds.append("one of " + ", ".join(str(v) for v in schema["enum"] if v is not None))
    return {
        "name": name,
        "in": where,
        "type": " | ".join(kind) if isinstance(kind, list) else kind,
        "required": required,
        "bounds": "; ".join(bounds),
        "description": about or schema.get("description", ""),
        "nested": json.dumps(schema, indent=1)
        if "properties" in schema or "items" in schema
        else "",
    }


def _response(status: str, answer: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in answer:
        answer = doc["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    content = answer.get("content", {})
    kind = next(iter(content), "")
    schema = content.get(kind, {}).get("schema", {})
    return {
        "status": status,
        "description": answer["description"],
        "type": kind,
        "schema": json.dumps(schema, indent=1) if schema else "",
    }
