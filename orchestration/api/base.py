"""The thin wrapper every JSON view goes through: method, auth, JSON body, error shape."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from orchestration.api.responses import error_response, whim_error_response
from orchestration.errors import WhimError
from orchestration.forms.fields import NOT_UNICODE, contains_nul, contains_surrogate
from orchestration.services.apikeys import apikey_authenticate, apikeys_configured

logger = logging.getLogger("whim.api")

View = Callable[..., HttpResponse | dict[str, Any] | list[Any]]
LOCAL_ADDRESSES = ("127.0.0.1", "::1")


def bearer_token(request: HttpRequest) -> str:
    """The credential in ``Authorization: Bearer <token>``, or ""."""
    auth = request.headers.get("Authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else ""


def presented_key(request: HttpRequest) -> str:
    return request.headers.get("X-API-Key", "") or bearer_token(request)


def client_identity(request: HttpRequest) -> str | None:
    """Who is calling a client route, or None when they may not.

    A valid key (stored or the ``API_KEY`` env var) names the caller. With no key configured
    at all, single-machine (embedded) mode lets loopback requests through, as the startup
    banner says.
    """
    key = presented_key(request)
    if key:
        return apikey_authenticate(key=key)
    if (
        settings.EMBEDDED_MODE
        and request.META.get("REMOTE_ADDR") in LOCAL_ADDRESSES
        and not apikeys_configured()
    ):
        return "local"
    return None


def parse_json_body(request: HttpRequest) -> dict[str, Any]:
    """The request's JSON object ({} for an empty body); raises BadBody otherwise."""
    return json_object(request_body(request))


def request_body(request: HttpRequest) -> bytes:
    """The raw body; BadBody (413) past MAX_REQUEST_BYTES."""
    try:
        return request.body
    except RequestDataTooBig:
        raise BadBody(
            413,
            "PAYLOAD_TOO_LARGE",
            f"Request body is larger than {settings.MAX_REQUEST_BYTES} bytes",
        ) from None


def json_object(raw: bytes | str, *, refuse_nul: bool = True) -> dict[str, Any]:
    """``raw`` parsed as a JSON object ({} when blank); raises BadBody otherwise.

    A lone surrogate (``"\\ud800"``, or UTF-8-encoded, which ``json`` lets through) is refused
    everywhere: it is not text, and no database, log or response could write it out.
    ``refuse_nul=False`` is for bodies Whim only picks a few fields from (GitHub's): those
    fields are validated by their form, the rest is never stored.
    """
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError):
        raise BadBody(400, "VALIDATION_ERROR", "Request body is not valid JSON") from None
    except RecursionError:
        raise BadBody(400, "VALIDATION_ERROR", "Request body is nested too deeply") from None
    if not isinstance(data, dict):
        raise BadBody(400, "VALIDATION_ERROR", "Request body must be a JSON object")
    if isinstance(raw, bytes) and raw.isascii() and b"\\u" not in raw:
        # Neither can hide in it: ``json`` refuses a raw control character in a string, and
        # in ASCII a NUL or a surrogate can only be a \u escape: most bodies skip the walks.
        return data
    if contains_surrogate(data):
        raise BadBody(
            400,
            "VALIDATION_ERROR",
            "Request body must be valid Unicode text (it holds a lone surrogate)",
            {_bad_field(data, contains_surrogate): NOT_UNICODE},
        )
    if refuse_nul and contains_nul(data):
        raise BadBody(
            400,
            "VALIDATION_ERROR",
            "Request body must not contain NUL characters",
            # API.md: details name the bad field, with the forms' message for a NUL.
            {_bad_field(data, contains_nul): "Null characters are not allowed."},
        )
    return data


def _bad_field(data: dict[str, Any], bad: Callable[[Any], bool]) -> str:
    """The top-level field the bad text hides in ("request" when it is in a key's name)."""
    for key, value in data.items():
        if bad(key):
            return "request"
        if bad(value):
            return key
    return "request"


def _refuse_constant(name: str) -> None:
    """NaN and Infinity are not JSON (and PostgreSQL's jsonb refuses them)."""
    raise ValueError(f"{name} is not valid JSON")


class BadBody(WhimError):
    """A request body the edge cannot read (too large, not JSON, not an object, NUL)."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.status, self.code = status, code


def method_refused(request: HttpRequest, methods: tuple[str, ...]) -> HttpResponse | None:
    """405 (with ``Allow``) unless the request's method is one of ``methods``."""
    if request.method in methods:
        return None
    resp = error_response(405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed here")
    resp["Allow"] = ", ".join(methods)
    return resp


def json_answer(produce: Callable[[], HttpResponse | dict[str, Any] | list[Any]]) -> HttpResponse:
    """Run a view body: a dict or list becomes JSON, a WhimError API.md's error shape."""
    try:
        result = produce()
    except WhimError as exc:
        return whim_error_response(exc)
    return result if isinstance(result, HttpResponse) else JsonResponse(result, safe=False)


def api_view(*methods: str) -> Callable[[View], Callable[..., HttpResponse]]:
    """Wrap a client JSON view: allowed methods, API-key auth, JSON body, errors.

    The view receives ``request, body, actor, **kwargs`` and returns a response or a dict.
    """

    def decorate(view: View) -> Callable[..., HttpResponse]:
        @csrf_exempt
        @functools.wraps(view)
        def wrapped(request: HttpRequest, **kwargs: Any) -> HttpResponse:
            if refused := method_refused(request, methods):
                return refused
            actor = client_identity(request)
            if actor is None:
                return error_response(401, "UNAUTHORIZED", "A valid API key is required")
            if (
                actor == "local"
                and request.method == "POST"
                and request.content_type != ("application/json")
            ):
                # Keyless local mode: a JSON content type forces a CORS preflight, so a web
                # page open in the operator's browser cannot post here across sites.
                return error_response(
                    415, "VALIDATION_ERROR", "Content-Type must be application/json"
                )
            return json_answer(
                lambda: view(
                    request,
                    body=parse_json_body(request) if request.method == "POST" else {},
                    actor=actor,
                    **kwargs,
                )
            )

        return wrapped

    return decorate
