"""OpenTelemetry tracing (``whim.telemetry``, issue 14 §3): off and free without an endpoint,
a bad endpoint a warning and nothing more; spans for HTTP requests, Celery publish and run in
one trace, and docker-py calls named after the Engine API operation — recorded here by an
in-memory exporter. The live run over OTLP/HTTP is tests/test_telemetry_live.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from django.core.management import call_command
from django.test import Client
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from orchestration import requestid
from tests.callbacks_support import token_of
from tests.conftest import ROOT
from tests.factories import running_attempt
from whim import telemetry
from whim.celery import app

# Loads the WSGI app, then fires the worker's and beat's start signals, and prints which
# opentelemetry modules this interpreter holds and the middleware Django will run.
PROBE = """
import json, sys
import whim.wsgi
from celery import signals
from django.conf import settings
signals.worker_process_init.send(sender=None)
signals.beat_init.send(sender=None)
print(json.dumps({
    "modules": sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry"),
    "middleware": settings.MIDDLEWARE,
}))
"""


def probe(**env: str) -> dict[str, Any]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    run = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return {**json.loads(run.stdout.strip().splitlines()[-1]), "stderr": run.stderr}


OTEL_MIDDLEWARE = (
    "opentelemetry.instrumentation.django.middleware.otel_middleware._DjangoMiddleware"
)


def test_with_no_endpoint_no_opentelemetry_module_is_even_imported() -> None:
    off = probe()
    assert off["modules"] == []
    assert OTEL_MIDDLEWARE not in off["middleware"]
    # The same probe with an endpoint (a closed loopback port: nothing is sent without spans)
    # does load it: the check above can fail.
    on = probe(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    assert "opentelemetry.sdk.trace" in on["modules"]
    assert on["middleware"][0] == OTEL_MIDDLEWARE


def test_otel_sdk_disabled_keeps_it_off_with_an_endpoint() -> None:
    off = probe(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_SDK_DISABLED="true")
    assert off["modules"] == []


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("collector:4318", "must be an http:// or https:// URL"),
        ("ftp://ops:s3cret@collector/", "must be an http:// or https:// URL"),
        ("http://ops:s3cret@:4318", "names no host"),
        ("http://collector:s3cret/", "is not a URL"),
    ],
)
def test_a_bad_endpoint_is_a_warning_that_names_the_variable_not_its_value(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, value: str, problem: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", value)

    assert telemetry.setup("whim-web") is False

    assert not telemetry.active()
    assert f"OpenTelemetry tracing is off: OTEL_EXPORTER_OTLP_ENDPOINT {problem}" in caplog.text
    warnings = telemetry.check_telemetry(None)
    assert [w.id for w in warnings] == ["orchestration.W100"]
    assert problem in warnings[0].msg
    assert "s3cret" not in caplog.text + warnings[0].msg + str(warnings[0].hint)


def test_a_bad_endpoint_starts_the_process_anyway_with_one_clear_line() -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    run = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**base, "OTEL_EXPORTER_OTLP_ENDPOINT": "grpc://ops:s3cret@collector:4317"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout + run.stderr
    assert "OpenTelemetry tracing is off: OTEL_EXPORTER_OTLP_ENDPOINT must be an http" in out
    assert "orchestration.W100" in out
    assert "s3cret" not in out


def test_a_good_endpoint_passes_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector.example:4318/otlp")
    assert telemetry.check_telemetry(None) == []
    call_command("check")  # and the registered check runs with the rest


# --- spans, recorded in memory -----------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The instrumentations on, exporting to memory, for one test; off again after it."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.instrument(provider)
    try:
        yield exporter
    finally:
        telemetry.uninstrument()


def named(exporter: InMemorySpanExporter, name: str) -> Any:
    found = [s for s in exporter.get_finished_spans() if s.name == name]
    assert len(found) == 1, [s.name for s in exporter.get_finished_spans()]
    return found[0]


# Real commits: the message is sent when the request's transaction commits, inside it.
@pytest.mark.django_db(transaction=True)
def test_a_request_its_enqueued_task_and_the_task_run_share_one_trace(
    spans: InMemorySpanExporter, api_key: str
) -> None:
    sent: list[dict[str, Any]] = []
    # The broker is not needed to see the message: kombu's publish records its headers.
    with mock.patch("kombu.messaging.Producer.publish", lambda self, body, **kw: sent.append(kw)):
        answer = Client().post(
            "/api/work",
            {"repo": "acme/widgets", "spec": "# Traced\nDo it."},
            content_type="application/json",
            HTTP_X_API_KEY=api_key,
            HTTP_X_REQUEST_ID="trace-me-1",
        )
    assert answer.status_code == 201, answer.content

    server = named(spans, "POST api/work")
    assert server.kind == SpanKind.SERVER
    assert server.attributes["whim.request_id"] == answer["X-Request-ID"] == "trace-me-1"
    publish = named(spans, "apply_async/orchestration.dispatch")
    assert publish.kind == SpanKind.PRODUCER
    assert publish.context.trace_id == server.context.trace_id
    assert publish.parent.span_id == server.context.span_id

    # The worker's side: the task run as Celery's worker runs it, from the message's headers.
    [message] = sent
    headers = message["headers"]
    assert headers[requestid.TASK_HEADER] == "trace-me-1"
    assert "traceparent" in headers
    from celery.app.trace import build_tracer

    from orchestration.tasks import dispatch as task  # registered by importing it, as a worker does

    run_task = build_tracer(task.name, task, app=app, eager=True)
    task_id = headers["id"]
    run_task(task_id, [], {}, {**headers, "id": task_id, "hostname": "test@local"})

    run = named(spans, "run/orchestration.dispatch")
    assert run.kind == SpanKind.CONSUMER
    assert run.context.trace_id == server.context.trace_id
    assert run.parent.span_id == publish.context.span_id
    assert run.attributes["whim.request_id"] == "trace-me-1"


@pytest.mark.django_db
def test_a_worker_token_in_the_path_never_reaches_a_span(spans: InMemorySpanExporter) -> None:
    _, worker = running_attempt()
    token = token_of(worker)

    Client().post(
        f"/w/{token}/api/worker/{worker.pk}/heartbeat?token={token}",
        {"iteration": 1},
        content_type="application/json",
    )

    [server] = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    seen = json.dumps({"name": server.name, **dict(server.attributes or {})}, default=str)
    assert token not in seen
    assert "/w/***/" in seen  # the path is there, redacted


DOCKER = "http+docker://localhost/v1.47"


@pytest.mark.parametrize(
    ("method", "url", "call"),
    [
        ("GET", f"{DOCKER}/version", "GET /version"),
        ("POST", f"{DOCKER}/containers/create?name=w1", "POST /containers/create"),
        ("POST", f"{DOCKER}/containers/3f9a1c/start", "POST /containers/{id}/start"),
        ("GET", f"{DOCKER}/containers/whim-w1/json", "GET /containers/{id}/json"),
        ("GET", f"{DOCKER}/containers/json?all=1", "GET /containers/json"),
        ("DELETE", f"{DOCKER}/containers/3f9a1c", "DELETE /containers/{id}"),
        ("GET", f"{DOCKER}/images/reg/ns/img:1/json", "GET /images/{name}/json"),
        ("POST", "http://10.0.0.5:2375/v1.44/networks/abc/connect", "POST /networks/{id}/connect"),
        ("GET", "https://api.github.com/repos/acme/widgets", None),
        ("GET", "http://127.0.0.1:8000/v1/traces", None),
    ],
)
def test_a_docker_api_url_names_its_operation(method: str, url: str, call: str | None) -> None:
    assert telemetry.docker_call(method, url) == call


@pytest.mark.docker
def test_a_docker_py_call_is_a_span_named_after_the_engine_operation(
    spans: InMemorySpanExporter,
) -> None:
    import docker

    client = docker.from_env()
    version = client.version()
    client.containers.list(filters={"label": f"whim.test={uuid.uuid4().hex}"})

    span = named(spans, "docker GET /version")
    assert span.kind == SpanKind.CLIENT
    assert span.attributes["whim.docker.call"] == "GET /version"
    assert span.attributes["http.status_code"] == 200
    assert version["ApiVersion"]
    assert named(spans, "docker GET /containers/json").kind == SpanKind.CLIENT
