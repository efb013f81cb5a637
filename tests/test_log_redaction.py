"""No secret in any log line (issue 9, LOW): gunicorn's access and error logs included.

A worker token travels in the callback path (``/w/<token>/api/worker/…``); gunicorn writes
request lines through handlers of its own, and Django's "Not Found: /w/<token>" (no trailing
slash) slipped past the filter. A real gunicorn, started the way the project starts it, with its
access log on and a format that logs the auth headers, must write only ``***`` in their place.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from orchestration.logfilters import RedactWorkerTokens, redact
from orchestration.services.apikeys import apikey_create
from tests.callbacks_support import token_of
from tests.conftest import ROOT, free_port, start_web, stop_processes
from tests.factories import running_attempt
from tests.helpers import wait_for

# What an operator may ask gunicorn to log: the request line and the auth headers.
ACCESS_FORMAT = (
    '%(h)s "%(r)s" %(s)s authorization=%({authorization}i)s x-api-key=%({x-api-key}i)s "%(f)s"'
)


def database_url() -> str:
    db = connection.settings_dict
    return (
        f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:"
        f"{db['PORT'] or 5432}/{db['NAME']}"
    )


@pytest.fixture
def web(transactional_db: None) -> Iterator[tuple[str, Path]]:
    """gunicorn (conftest.start_web, as ``make run`` runs it) with its access log on stdout and
    debug logging; its stdout and stderr, Django's log included, land in one file."""
    port = free_port()
    log = ROOT / "test-artifacts" / f"redaction-{uuid.uuid4().hex[:8]}-web.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "WHIM_RUNTIME": "fake",
        "CELERY_QUEUE": f"whim-test-{uuid.uuid4().hex[:8]}",
        "LOG_LEVEL": "INFO",
        "GUNICORN_CMD_ARGS": (
            f"--access-logfile - --log-level debug --access-logformat '{ACCESS_FORMAT}'"
        ),
    }
    proc = start_web(env=env, binds=[f"127.0.0.1:{port}"], log=log)
    try:
        yield f"http://127.0.0.1:{port}", log
    finally:
        stop_processes([proc], grace=10)


def request(url: str, *, data: Any = None, headers: dict[str, str] | None = None) -> int:
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, headers=headers or {})
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def raw_request_line(base: str, line: str) -> None:
    """A request line gunicorn refuses (logged by its error log), sent over a plain socket."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(line.encode() + b"\r\n\r\n")
        sock.recv(4096)


@pytest.mark.usefixtures("retry_policy")
def test_no_token_or_key_reaches_gunicorns_or_djangos_log(web: tuple[str, Path]) -> None:
    base, log = web
    _, worker = running_attempt()
    token = token_of(worker)
    _, api_key = apikey_create(name="redaction")
    query_secret = uuid.uuid4().hex

    beat = f"{base}/w/{token}/api/worker/{worker.pk}/heartbeat"
    assert request(beat, data={"iteration": 1}) == 200
    assert request(f"{base}/w/{token}") == 404  # Django's "Not Found: /w/<token>"
    # No such route: Django's "Not Found: /w/<token>/api/worker/<id>/nope".
    assert request(f"{base}/w/{token}/api/worker/{worker.pk}/nope", data={}) == 404
    assert (
        request(
            f"{base}/api/worker/{worker.pk}/heartbeat",
            data={"iteration": 2},
            headers={"Authorization": f"Bearer {token}", "Referer": f"{beat}?token={token}"},
        )
        == 200
    )
    assert request(f"{base}/api/queue?token={query_secret}", headers={"X-API-Key": api_key}) == 200
    raw_request_line(base, f"GET /w/{token}/api/worker/heartbeat")  # no HTTP version

    def written() -> str:
        return log.read_text(errors="replace")

    # The error log's line of the refused request, and the access log's of the one before it
    # (gunicorn writes that one after the answer, maybe from the other process: either first).
    wait_for(
        lambda: "Invalid HTTP request line" in written() and "/api/queue?token=" in written(),
        timeout=10,
        what="the log lines",
    )
    text = written()
    lines = text.splitlines()
    for secret in (token, api_key, query_secret):
        leaked = [line for line in lines if secret in line]
        assert not leaked, leaked
    # The lines are there, redacted: access log, Django's warning, gunicorn's error log.
    assert '"POST /w/***/api/worker/' in text, text[-3000:]
    assert "Not Found: /w/***" in text, text[-3000:]
    assert f"Not Found: /w/***/api/worker/{worker.pk}/nope" in text, text[-3000:]
    assert "authorization=Bearer ***" in text, text[-3000:]
    assert "x-api-key=***" in text, text[-3000:]
    assert "/api/queue?token=***" in text, text[-3000:]
    assert "Invalid HTTP request line" in text and "/w/***/api/worker/heartbeat" in text


# --- the filter, line by line ---------------------------------------------------------------

TOKEN = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f"Not Found: /w/{TOKEN}", "Not Found: /w/***"),
        (f"Not Found: /w//{TOKEN}/api", "Not Found: /w//***/api"),
        (f'"GET /w/{TOKEN}/api/worker/x HTTP/1.1" 200', '"GET /w/***/api/worker/x HTTP/1.1" 200'),
        (
            f"ORCHESTRATOR_URL=http://10.0.0.1:8000/w/{TOKEN}",
            "ORCHESTRATOR_URL=http://10.0.0.1:8000/w/***",
        ),
        (f"/w/{TOKEN}?x=1", "/w/***?x=1"),
        (f"Authorization: Bearer {TOKEN}", "Authorization: Bearer ***"),
        (f"{{'HTTP_AUTHORIZATION': 'Bearer {TOKEN}'}}", "{'HTTP_AUTHORIZATION': 'Bearer ***'}"),
        (f"X-API-Key: {TOKEN}", "X-API-Key: ***"),
        (f"{{'HTTP_X_API_KEY': '{TOKEN}'}}", "{'HTTP_X_API_KEY': '***'}"),
        (f"GET /api/queue?token={TOKEN}&repo=a/b", "GET /api/queue?token=***&repo=a/b"),
        (f"GET /x?repo=a&api_key={TOKEN}", "GET /x?repo=a&api_key=***"),
        ("GET /api/queue?status=failed", "GET /api/queue?status=failed"),
        (
            '"GET /health" 200 authorization=- x-api-key=-',
            '"GET /health" 200 authorization=- x-api-key=-',
        ),
        ("/workers/ and /work/new/ stay", "/workers/ and /work/new/ stay"),
    ],
)
def test_the_filter_redacts_each_way_a_secret_is_written(line: str, expected: str) -> None:
    assert redact(line) == expected


def test_the_filter_redacts_a_traceback_too() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RedactWorkerTokens())
    logger = logging.getLogger(f"whim.test.redaction.{uuid.uuid4().hex}")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        raise RuntimeError(f"could not call http://h/w/{TOKEN}/api/worker/x/fail")
    except RuntimeError:
        logger.exception("callback failed for %s", f"/w/{TOKEN}/api")

    assert TOKEN not in out.getvalue()
    assert "callback failed for /w/***/api" in out.getvalue()
    assert "RuntimeError: could not call http://h/w/***/api/worker/x/fail" in out.getvalue()
