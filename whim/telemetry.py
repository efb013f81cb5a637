"""OpenTelemetry tracing, optional: spans for HTTP requests (Django), Celery tasks (publish and
run, so a request's trace continues into the tasks it enqueues) and Docker Engine calls
(docker-py speaks HTTP through ``requests``), exported over OTLP/HTTP.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set,
and then free: this module imports no ``opentelemetry`` package until ``setup`` finds an
endpoint (tests/test_telemetry.py proves it in a fresh interpreter). ``setup`` is called where
a process starts — ``whim.wsgi``, ``manage.py``, and the worker / beat signals in
``whim.celery`` — never from the services. A bad endpoint never stops a process: tracing stays
off, one warning line says why (naming the variable, never its value), and the system check
``orchestration.W100`` says it at startup too.

Everything else is the SDK's own: ``OTEL_SERVICE_NAME`` (default ``whim-web``, ``whim-worker``,
``whim-beat`` or ``whim-manage``), ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``,
``OTEL_EXPORTER_OTLP_HEADERS`` / ``_TIMEOUT``, ``OTEL_BSP_*``, ``OTEL_SDK_DISABLED``,
``OTEL_PYTHON_DJANGO_EXCLUDED_URLS``.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any
from urllib.parse import urlsplit

from django.core.checks import CheckMessage, Warning, register

from orchestration import requestid
from orchestration.logfilters import redact

logger = logging.getLogger(__name__)

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
REQUEST_ID_ATTRIBUTE = "whim.request_id"
DOCKER_CALL_ATTRIBUTE = "whim.docker.call"

_state: dict[str, Any] = {"pid": None, "provider": None, "instrumented": False}


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def configured() -> bool:
    """An endpoint is set and the SDK is not switched off: the one test that costs nothing."""
    return any(_env(v) for v in ENDPOINT_VARS) and _env("OTEL_SDK_DISABLED").lower() != "true"


def endpoint_problem() -> str | None:
    """What is wrong with a set endpoint variable, naming the variable, never its value (it
    may carry a credential); None when every set one is a usable http(s) URL."""
    for name in ENDPOINT_VARS:
        value = _env(name)
        if not value:
            continue
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            return f"{name} is not a URL"
        if parts.scheme not in ("http", "https"):
            return f"{name} must be an http:// or https:// URL (OTLP over HTTP)"
        if not parts.hostname:
            return f"{name} names no host"
    return None


def active() -> bool:
    """Whether ``setup`` turned tracing on in this process."""
    return _state["pid"] == os.getpid()


def setup(default_service: str, *, django: bool = True) -> bool:
    """Turn tracing on in this process when an endpoint is configured; True when it is on.

    Idempotent per process. Never raises: a bad endpoint or a failure to start logs one
    warning and leaves tracing off. ``django`` adds the HTTP middleware (call it before the
    WSGI handler loads its middleware).
    """
    if active() or not configured():
        return active()
    problem = endpoint_problem()
    if problem:
        logger.warning("OpenTelemetry tracing is off: %s.", problem)
        return False
    try:
        # Imported here, and only here: with no endpoint, no opentelemetry module is loaded.
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        named = _env("OTEL_SERVICE_NAME") or "service.name=" in _env("OTEL_RESOURCE_ATTRIBUTES")
        resource = Resource.create({} if named else {"service.name": default_service})
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        instrument(provider, django=django)
    except Exception as exc:  # tracing is an extra: never the reason a process cannot start
        logger.warning("OpenTelemetry tracing is off: it could not start (%s).", type(exc).__name__)
        return False
    _state.update(pid=os.getpid(), provider=provider)
    logger.info(
        "OpenTelemetry tracing on: service %s, spans to %s over OTLP/HTTP",
        resource.attributes.get("service.name"),
        _where(),
    )
    return True


def _where() -> str:
    """The endpoint as scheme://host:port, nothing that could be a credential."""
    parts = urlsplit(_env(ENDPOINT_VARS[1]) or _env(ENDPOINT_VARS[0]))
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def instrument(tracer_provider: Any, *, django: bool = True) -> None:
    """Install the official instrumentations, exporting to ``tracer_provider`` (``setup``'s,
    or a test's in-memory one)."""
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    CeleryInstrumentor().instrument(tracer_provider=tracer_provider)
    RequestsInstrumentor().instrument(
        tracer_provider=tracer_provider, request_hook=_name_docker_call
    )
    if django:
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        DjangoInstrumentor().instrument(
            tracer_provider=tracer_provider,
            request_hook=_scrub_request_span,
            response_hook=_tag_response_span,
        )
    _state["instrumented"] = True


def uninstrument() -> None:
    """Undo ``instrument`` (tests)."""
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    for instrumentor in (DjangoInstrumentor(), CeleryInstrumentor(), RequestsInstrumentor()):
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
    _state["instrumented"] = False


def flush() -> None:
    """Export what is buffered now (a pool process about to exit)."""
    if active():
        _state["provider"].force_flush(timeout_millis=5000)


def tag_request_id(value: str) -> None:
    """Put the request id on the current span (a task run under a request's id)."""
    if value and _state["instrumented"]:
        from opentelemetry import trace

        trace.get_current_span().set_attribute(REQUEST_ID_ATTRIBUTE, value)


# --- hooks -------------------------------------------------------------------------------


def _scrub_request_span(span: Any, request: Any) -> None:
    """No secret in a span: a worker token in ``/w/<token>/…``, a ``?token=`` in the query."""
    for key, value in dict(getattr(span, "attributes", None) or {}).items():
        if isinstance(value, str) and (clean := redact(value)) != value:
            span.set_attribute(key, clean)


def _tag_response_span(span: Any, request: Any, response: Any) -> None:
    """The request id the answer carries (``X-Request-ID``: the incoming one kept, or new)."""
    rid = response.get(requestid.HEADER) if hasattr(response, "get") else None
    if rid and span.is_recording():
        span.set_attribute(REQUEST_ID_ATTRIBUTE, rid)


# A Docker Engine API path: /v1.47/containers/<id>/start. The segment after a collection is an
# id or a name (an image's may hold slashes) unless it is one of the collection's own verbs.
_DOCKER_PATH = re.compile(r"^/v1\.\d+(/.*)$")
_COLLECTIONS = {"containers", "images", "networks", "volumes", "exec", "plugins", "services"}
_VERBS = {"create", "json", "prune", "load", "search", "get", "build", "import"}
_IMAGE_ACTIONS = {"json", "history", "push", "tag", "get"}


def docker_call(method: str, url: str) -> str | None:
    """``GET /containers/{id}/json`` for a Docker Engine API URL, None for any other URL."""
    match = _DOCKER_PATH.match(urlsplit(url).path)
    if not match:
        return None
    segments = [s for s in match.group(1).split("/") if s]
    if len(segments) > 1 and segments[0] in _COLLECTIONS and segments[1] not in _VERBS:
        if segments[0] == "images":
            action = segments[-1:] if len(segments) > 2 and segments[-1] in _IMAGE_ACTIONS else []
            segments = ["images", "{name}", *action]
        else:
            segments = [segments[0], "{id}", *segments[2:]]
    return f"{method} /" + "/".join(segments)


def _name_docker_call(span: Any, request: Any) -> None:
    """Name a docker-py call's span after the Engine API operation (``docker GET
    /containers/{id}/json``) instead of the bare HTTP method."""
    call = docker_call(request.method or "", request.url or "")
    if call and span.is_recording():
        span.update_name(f"docker {call}")
        span.set_attribute(DOCKER_CALL_ATTRIBUTE, call)


# --- the system check ----------------------------------------------------------------------


@register()
def check_telemetry(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    """A set endpoint that cannot be used: a warning, not an error (tracing is an extra)."""
    if not configured():
        return []
    problem = endpoint_problem()
    if problem:
        return [
            Warning(
                f"OpenTelemetry tracing is off: {problem}.",
                hint="Set it to the collector's OTLP/HTTP base URL, e.g. http://127.0.0.1:4318, "
                "or unset it.",
                id="orchestration.W100",
            )
        ]
    try:
        import opentelemetry.sdk  # noqa: F401
    except ImportError:
        return [
            Warning(
                "OpenTelemetry tracing is off: the opentelemetry packages are not installed.",
                hint="Install the project's dependencies (pip install -e .).",
                id="orchestration.W101",
            )
        ]
    return []
