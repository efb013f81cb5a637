"""Edge guards: body size (413), database down (503), no stack traces on the JSON routes;
text that is not Unicode refused (400) on every route; the callback listener serving worker
callbacks only; a request id on every request (``X-Request-ID``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import unquote_to_bytes

from django.conf import settings
from django.core.exceptions import BadRequest, RequestDataTooBig, SuspiciousOperation
from django.db import DatabaseError, OperationalError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.urls import Resolver404, resolve

from orchestration import requestid
from orchestration.api.responses import error_response, is_api_path

logger = logging.getLogger("whim.api")


class RequestIdMiddleware:
    """First of all: keep a sane incoming ``X-Request-ID`` (else make one), make it current
    while the request is handled (log records, events, the tasks it enqueues) and answer it
    as ``X-Request-ID``."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        rid = requestid.sane(request.META.get(requestid.META_KEY)) or requestid.new()
        with requestid.bound(rid):
            response = self.get_response(request)
        response[requestid.HEADER] = rid
        return response


class ApiErrorMiddleware:
    """For API paths: refuse bodies over MAX_REQUEST_BYTES before reading them, and turn
    unexpected exceptions into API.md's error shape (500 INTERNAL_ERROR, 503 while the
    database is unreachable) without a stack trace or a secret in the response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if is_api_path(request.path):
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return error_response(400, "VALIDATION_ERROR", "Content-Length is not a number")
            if length > settings.MAX_REQUEST_BYTES:
                return _too_large()
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_api_path(request.path):
            return None
        return _exception_response(request, exception)


class UndecodableInputMiddleware:
    """400 for a query string or form body whose text is not valid in its charset (UTF-8
    unless the request names another): Django would quietly turn those bytes into U+FFFD.

    API paths answer in API.md's shape (``VALIDATION_ERROR``), the console with a plain 400.
    JSON bodies are checked where they are parsed (``orchestration.api.base.json_object``).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        encoding = request.encoding or settings.DEFAULT_CHARSET
        where = None
        if not _decodes(request.META.get("QUERY_STRING", ""), encoding):
            where = "query"
        elif request.content_type == "application/x-www-form-urlencoded":
            try:
                body = request.body
            except RequestDataTooBig:
                body = b""  # refused later, where the body is read, as before
            if not _decodes(body, encoding):
                where = "body"
        if where is None:
            return self.get_response(request)
        part = "query string" if where == "query" else "body"
        message = f"The request's {part} is not valid {encoding} text"
        if is_api_path(request.path):
            return error_response(400, "VALIDATION_ERROR", message, {where: "is not valid text"})
        return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")


def _decodes(encoded: str | bytes, encoding: str) -> bool:
    """Whether URL-encoded text (WSGI hands the query string over as latin-1) decodes strictly."""
    raw = encoded.encode("latin-1", "replace") if isinstance(encoded, str) else encoded
    try:
        unquote_to_bytes(raw.replace(b"+", b" ")).decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return False
    return True


def _exception_response(request: HttpRequest, exception: Exception) -> HttpResponse:
    """An API path's answer to an exception its view raised (ApiErrorMiddleware, and the
    callback lane, which calls its views itself)."""
    if isinstance(exception, RequestDataTooBig):
        return _too_large()
    if isinstance(exception, SuspiciousOperation | BadRequest):
        # Django's own refusals of bad input (e.g. a form with too many fields): a 400.
        return error_response(400, "VALIDATION_ERROR", "The request could not be read")
    if isinstance(exception, OperationalError):
        logger.error("database unavailable on %s %s", request.method, request.path)
        return error_response(
            503, "SERVICE_UNAVAILABLE", "The database is unavailable; try again shortly"
        )
    if isinstance(exception, DatabaseError):
        logger.error(
            "database error on %s %s: %s",
            request.method,
            request.path,
            type(exception).__name__,
        )
    else:
        logger.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, "INTERNAL_ERROR", "Internal error")


def _too_large() -> HttpResponse:
    limit = settings.MAX_REQUEST_BYTES
    return error_response(
        413,
        "PAYLOAD_TOO_LARGE",
        f"Request body is larger than {limit} bytes",
        {"limit": limit},
    )


class CallbackListenerMiddleware:
    """The callback listener (``WHIM_CALLBACK_PORT``, the one port on this host a worker
    container may reach) serves the worker callback routes (``/w/<token>/…``) and nothing
    else: the console, the admin, the client API and ``/metrics`` answer 404 there.

    The listener is told apart by the port the request arrived on (the WSGI server's
    ``SERVER_PORT``), not by anything the client sends.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        on_callback_listener = request.META.get("SERVER_PORT") == str(settings.WHIM_CALLBACK_PORT)
        if on_callback_listener and not request.path.startswith("/w/"):
            return error_response(404, "NOT_FOUND", "Not found")
        return self.get_response(request)


class WorkerCallbackMiddleware:
    """Worker callbacks (``/w/<token>/…``, ``/api/worker/…``) take a chain of their own from
    here: the API guards (``ApiErrorMiddleware``'s body size limit, the text check) and the
    view, resolved and called here as Django's handler would, an exception it raises
    answered as ``ApiErrorMiddleware`` answers it. The rest of ``MIDDLEWARE`` is for browsers —
    HTTPS redirects, CSP, static files, sessions, CSRF, authentication, messages — and a
    callback is token-authenticated JSON from a container: no cookie, no login, no page to
    render (its views are CSRF-exempt, HTTPS redirects exempt them); the two headers every
    answer carries are set here. What runs before this one still applies: the request id
    and the callback listener's 404. Those middlewares were about a third of a buffered
    heartbeat's time in Django (README "Performance")."""

    PREFIXES = ("/w/", "/api/worker/")

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.callback_chain = ApiErrorMiddleware(UndecodableInputMiddleware(self._view))

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path_info.startswith(self.PREFIXES):
            return self.get_response(request)
        response = self.callback_chain(request)
        # The two headers the API document promises on every answer, as Django's security
        # and clickjacking middleware set them on the others.
        if settings.SECURE_CONTENT_TYPE_NOSNIFF:
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", settings.X_FRAME_OPTIONS.upper())
        return response

    def _view(self, request: HttpRequest) -> HttpResponse:
        try:
            match = resolve(request.path_info)
        except Resolver404:  # e.g. /w/<token> alone: Django's page was HTML
            return error_response(404, "NOT_FOUND", "Not found")
        request.resolver_match = match
        try:
            response: HttpResponse = match.func(request, *match.args, **match.kwargs)
        except Exception as exc:  # answered in API.md's shape, logged there
            return _exception_response(request, exc)
        return response
