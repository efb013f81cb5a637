"""API.md's error shape, in one place."""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse

from orchestration.errors import WhimError


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> JsonResponse:
    body: dict[str, Any] = {"error": message, "code": code}
    if details:
        body["details"] = details
    return JsonResponse(body, status=status)


def whim_error_response(exc: WhimError) -> JsonResponse:
    return error_response(exc.status, exc.code, exc.message, exc.details)


def is_api_path(path: str) -> bool:
    return path.startswith(("/api/", "/w/", "/webhooks/")) or path in ("/api", "/health")
