"""Tracing, live (issue 14 §3): gunicorn and a real Celery worker with
``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at a tiny OTLP/HTTP receiver on 127.0.0.1, which
decodes each ``ExportTraceServiceRequest`` with the opentelemetry-proto package the exporter
itself uses. A work item submitted through the API (fake runtime) leaves the HTTP request's
span, its publish span and the Celery task run's span in one trace."""

from __future__ import annotations

import gzip
import json
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from orchestration.services.apikeys import apikey_create
from tests.conftest import ROOT, free_port, start_web, stop_processes
from tests.helpers import wait_for

pytestmark = pytest.mark.celery


class Receiver(ThreadingHTTPServer):
    """POST /v1/traces: every span received, flattened to a dict, in ``spans``."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.spans: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def named(self, name: str, service: str) -> list[dict[str, Any]]:
        with self.lock:
            return [s for s in self.spans if s["name"] == name and s["service"] == service]


class ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        found = []
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(
                        {
                            "service": resource.get("service.name"),
                            "name": span.name,
                            "kind": span.kind,
                            "trace": span.trace_id.hex(),
                            "span": span.span_id.hex(),
                            "parent": span.parent_span_id.hex(),
                            "attributes": {
                                a.key: a.value.string_value or a.value.int_value
                                for a in span.attributes
                            },
                        }
                    )
        with self.server.lock:
            self.server.spans.extend(found)
            self.server.paths.append(self.path)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_submitted_items_request_and_task_run_arrive_in_one_trace(
    celery_workers: Any, receiver: Receiver
) -> None:
    handle = celery_workers(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="200",  # export within a fraction of a second, not 5 s
    )
    handle.start(concurrency=1)
    _, key = apikey_create(name="tracing")
    port = free_port()
    log = ROOT / "test-artifacts" / f"tracing-{uuid.uuid4().hex[:8]}-web.log"
    web = start_web(env=handle.env, binds=[f"127.0.0.1:{port}"], log=log)
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/work",
            data=json.dumps(
                {"repo": "acme/widgets", "spec": "# Traced", "metadata": {"mockSeconds": 0.2}}
            ).encode(),
            headers={
                "Content-Type": "application/json",
                "X-API-Key": key,
                "X-Request-ID": "live-trace-1",
            },
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 201
            assert answer.headers["X-Request-ID"] == "live-trace-1"

        def server_span() -> dict[str, Any] | None:
            found = [
                s
                for s in receiver.named("POST api/work", "whim-web")
                if s["attributes"].get("whim.request_id") == "live-trace-1"
            ]
            return found[0] if found else None

        wait_for(lambda: server_span() is not None, timeout=60, what="the HTTP request's span")
        server = server_span()
        assert server is not None and server["kind"] == Span.SPAN_KIND_SERVER
        trace = server["trace"]

        def in_trace(name: str, service: str) -> list[dict[str, Any]]:
            return [s for s in receiver.named(name, service) if s["trace"] == trace]

        wait_for(
            lambda: in_trace("run/orchestration.dispatch", "whim-worker"),
            timeout=60,
            what="the dispatch task's run span, in the request's trace",
        )
        [publish] = in_trace("apply_async/orchestration.dispatch", "whim-web")
        assert publish["parent"] == server["span"]
        runs = in_trace("run/orchestration.dispatch", "whim-worker")
        assert any(r["parent"] == publish["span"] for r in runs), runs
        assert all(r["kind"] == Span.SPAN_KIND_CONSUMER for r in runs)
        assert set(receiver.paths) == {"/v1/traces"}
        # The exporter's own POSTs are not traced (no span about sending spans).
        with receiver.lock:
            client_spans = [s for s in receiver.spans if s["kind"] == Span.SPAN_KIND_CLIENT]
        assert not [s for s in client_spans if "/v1/traces" in json.dumps(s["attributes"])]
    finally:
        stop_processes([web], grace=10)
