"""Schemathesis against a live Whim (issue 14 §1): gunicorn, a real Celery worker, PostgreSQL
and Redis, the fake runtime. It loads GET /api/openapi.json and calls every documented
operation with generated input, following the submit → get → cancel links, and checks that no
answer is a 5xx, and that each answer's status, content type, headers and body are what the
document says. Bounded (a few examples per operation) to stay well under three minutes.

Run through schemathesis's CLI (``python -m schemathesis.cli``, its 3.x interface) as a
subprocess: its exit status and report are the result. The GitHub webhook is fuzzed unsigned
(401 each time): a signed ``issues`` delivery would make Whim ask GitHub, off this machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any

import pytest

from orchestration.api.openapi import openapi_document
from orchestration.services.apikeys import apikey_create
from tests.callbacks_support import token_of
from tests.conftest import ROOT, free_port, start_web, stop_processes
from tests.factories import running_attempt

pytestmark = pytest.mark.celery

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)


def test_every_documented_operation_holds_to_the_document(
    celery_workers: Any, tmp_path: Any
) -> None:
    # A dev dependency (pyproject.toml): missing, the run fails here rather than skip quietly.
    import schemathesis  # noqa: F401

    # No GitHub credentials whatever the shell holds: nothing the fuzzing reaches may call
    # GitHub (commit checks, the webhook), only this machine.
    handle = celery_workers(GITHUB_TOKEN="", GITHUB_APP_ID="", GITHUB_APP_PRIVATE_KEY="")
    handle.start(concurrency=1)
    _, key = apikey_create(name="fuzz")
    _, worker = running_attempt()
    port = free_port()
    log = ROOT / "test-artifacts" / f"fuzz-{uuid.uuid4().hex[:8]}-web.log"
    web = start_web(env=handle.env, binds=[f"127.0.0.1:{port}"], log=log)
    base = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{base}/api/openapi.json",
        "--base-url", base,
        "--checks", ",".join(CHECKS),
        "--experimental", "openapi-3.1",
        "--stateful", "links",
        "--contrib-openapi-formats-uuid",
        # The credentials are the headers below; generated ones (a random session cookie)
        # would test gunicorn's header parser, not the document.
        "--generation-with-security-parameters", "false",
        "--validate-schema", "true",
        "--hypothesis-max-examples", "6",
        "--hypothesis-seed", "14",
        "--hypothesis-deadline", "None",
        "--hypothesis-database", "none",
        "--hypothesis-suppress-health-check", "all",
        "--request-timeout", "20000",
        "--workers", "1",
        "--hosts-file", str(tmp_path / "hosts.toml"),
        "--junit-xml", str(tmp_path / "fuzz.xml"),
        "-H", f"X-API-Key: {key}",
        # Client routes read X-API-Key first; worker routes take this bearer token.
        "-H", f"Authorization: Bearer {token_of(worker)}",
    ]  # fmt: skip
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
        "SCHEMATHESIS_TELEMETRY": "false",
        "WHIM_FUZZ_WORKER_ID": str(worker.pk),
        "WHIM_FUZZ_WORKER_TOKEN": token_of(worker),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    try:
        run = subprocess.run(
            cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
        )
    finally:
        stop_processes([web], grace=10)
    report = run.stdout + run.stderr
    (ROOT / "test-artifacts" / "openapi-fuzz.txt").write_text(report)
    assert run.returncode == 0, report[-12000:]
    # Every documented operation ran (none skipped for want of a strategy), and the links.
    operations = sum(len(ops) for ops in openapi_document()["paths"].values())
    assert f"Collected API operations: {operations}" in report, report[:2000]
    summary = report.strip().splitlines()[-1]
    assert f"{operations + 2} passed" in summary and "skipped" not in summary, summary
    assert "-> GET /api/work/{id}" in report and "-> POST /api/work/{id}/cancel" in report
    web_log = log.read_text()
    assert "Traceback" not in web_log, web_log[-6000:]
