"""A fake orchestrator: the worker callback routes of API.md on a threaded ``http.server``.

It records every callback (including the ones it answers with an error), checks the worker's
token (in the ``/w/<token>`` path prefix or a Bearer header), and answers as API.md says.
Tests steer it with ``answer_next`` (script the next answers to one action), ``lock_refusals``
(refuse that many lock calls; ``math.inf`` for ever) and ``fenced`` (answer 409 to all).

``GET /api/learnings?repo=`` answers ``learnings`` (a list, newest first, in the API's shape)
filtered by repo, or ``learnings_status`` when set (an outage); each request is recorded in
``learnings_requests`` (not in ``calls``, which hold the worker callbacks).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.server import FakeServer

ROUTE = re.compile(r"^/api/worker/(?:(?P<register>register)|(?P<id>[^/]+)/(?P<action>[a-z]+))$")
ACTIONS = {"heartbeat", "lock", "unlock", "complete", "fail", "stuck"}
FINAL = {"complete", "fail", "stuck"}


@dataclass
class Call:
    action: str
    body: Any
    status: int
    bearer: str | None
    path_token: str | None
    at: float


class FakeOrchestrator(FakeServer):
    def __init__(
        self, *, worker_id: str, token: str, work_item: dict[str, Any], port: int = 0
    ) -> None:
        self.worker_id = worker_id
        self.token = token
        self.work_item = work_item
        self.calls: list[Call] = []
        self.lock_refusals: float = 0
        self.fenced = False
        self.learnings: list[dict[str, Any]] = []
        self.learnings_status: int | None = None
        self.learnings_requests: list[dict[str, Any]] = []
        self._script: dict[str, list[tuple[int, Any]]] = defaultdict(list)
        self._lock = threading.Lock()
        super().__init__(port=port)

    # -- control ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """What the container gets as ORCHESTRATOR_URL."""
        return f"{self.base}/w/{self.token}"

    def answer_next(self, action: str, status: int, body: Any = None) -> None:
        """The next ``action`` call gets this answer (a 409 also fences the worker off)."""
        with self._lock:
            self._script[action].append((status, body))

    def actions(self) -> list[str]:
        with self._lock:
            return [call.action for call in self.calls]

    def of(self, action: str, *, status: int | None = None) -> list[Call]:
        with self._lock:
            return [
                call
                for call in self.calls
                if call.action == action and (status is None or call.status == status)
            ]

    # -- behaviour --------------------------------------------------------------------------

    def _answer(self, action: str, body: Any) -> tuple[int, Any]:
        with self._lock:
            if self._script[action]:
                status, answer = self._script[action].pop(0)
                if status == 409:
                    self.fenced = True
                return status, answer if answer is not None else _error(status)
            if self.fenced:
                return 409, _error(409)
            if action == "register":
                return 201, {"workerId": self.worker_id, "workItem": self.work_item}
            if action == "lock":
                files = body.get("files") if isinstance(body, dict) else None
                if not isinstance(files, list) or not body.get("repo"):
                    return 400, _error(400)
                if self.lock_refusals > 0:
                    self.lock_refusals -= 1
                    return 200, {
                        "acquired": False,
                        "conflictingWorker": "00000000-0000-0000-0000-000000000042",
                        "blockedFiles": files,
                    }
                return 200, {"acquired": True}
            return 200, {"success": True}

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                path, path_token = parts.path, None
                match = re.match(r"^/w/([^/]+)(/.*)$", path)
                if match:
                    path_token, path = match.group(1), match.group(2)
                auth = self.headers.get("Authorization") or ""
                bearer = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
                if path != "/api/learnings":
                    return self._send(404, _error(404))
                if fake.token not in {path_token, bearer}:
                    return self._send(401, _error(401))
                repo = (parse_qs(parts.query).get("repo") or [""])[0]
                with fake._lock:
                    fake.learnings_requests.append({"repo": repo, "bearer": bearer})
                    if fake.learnings_status:
                        return self._send(fake.learnings_status, _error(fake.learnings_status))
                    found = [item for item in fake.learnings if item.get("repo") == repo]
                return self._send(200, found[:50])

            def do_POST(self) -> None:
                path = self.path.split("?", 1)[0]
                path_token = None
                match = re.match(r"^/w/([^/]+)(/.*)$", path)
                if match:
                    path_token, path = match.group(1), match.group(2)
                auth = self.headers.get("Authorization") or ""
                bearer = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
                length = int(self.headers.get("Content-Length") or 0)
                if length > 1_000_000:
                    return self._send(413, _error(413))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    return self._send(400, _error(400))
                route = ROUTE.match(path)
                if not route or (route["action"] and route["action"] not in ACTIONS):
                    return self._send(404, _error(404))
                if fake.token not in {path_token, bearer}:
                    return self._send(401, _error(401))
                if route["id"] and route["id"] != fake.worker_id:
                    return self._send(403, _error(403))
                action = "register" if route["register"] else route["action"]
                status, answer = fake._answer(action, body)
                fake._record(Call(action, body, status, bearer, path_token, time.monotonic()))
                return self._send(status, answer)

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


CODES = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    409: "INVALID_STATE",
    413: "PAYLOAD_TOO_LARGE",
    500: "INTERNAL_ERROR",
}


def _error(status: int) -> dict[str, str]:
    return {"error": f"fake orchestrator says {status}", "code": CODES.get(status, "ERROR")}
