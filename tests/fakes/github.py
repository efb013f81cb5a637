"""A fake GitHub REST API: records ``POST /repos/{o}/{n}/pulls`` and answers 201.

With ``existing`` set, the POST answers 422 ("A pull request already exists") and
``GET /repos/{o}/{n}/pulls?head=o:branch`` returns that pull request.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.server import FakeServer

PULLS = re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)/pulls$")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    authorization: str | None


class FakeGitHub(FakeServer):
    def __init__(self, *, first_number: int = 7) -> None:
        self.requests: list[Request] = []
        self.next_number = first_number
        self.existing: dict[str, Any] | None = None
        self._lock = threading.Lock()
        super().__init__()

    @property
    def url(self) -> str:
        return self.base

    def pulls_created(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and PULLS.match(r.path)]

    def _handle(self, request: Request) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(request)
            match = PULLS.match(request.path)
            if not match:
                return 404, {"message": "Not Found"}
            if not (request.authorization or "").startswith("Bearer "):
                return 401, {"message": "Requires authentication"}
            if request.method == "GET":
                return 200, [self.existing] if self.existing else []
            if self.existing:
                return 422, {
                    "message": "Validation Failed",
                    "errors": [{"message": "A pull request already exists"}],
                }
            number = self.next_number
            self.next_number += 1
            owner, name = match["owner"], match["name"]
            return 201, {
                "html_url": f"https://github.example/{owner}/{name}/pull/{number}",
                "number": number,
            }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self, method: str) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                status, answer = fake._handle(
                    Request(
                        method,
                        parts.path,
                        parse_qs(parts.query),
                        body,
                        self.headers.get("Authorization"),
                    )
                )
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

        return Handler
