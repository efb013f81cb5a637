"""A fake Anthropic Messages API: ``POST /v1/messages`` in the real wire format.

Requests need ``x-api-key`` (= ``api_key``), ``anthropic-version`` and a JSON body with ``model``
(string), ``max_tokens`` (positive integer) and ``messages`` (a non-empty list of ``{role,
content}``); otherwise the answer is the API's error shape, ``{"type": "error", "error":
{"type": "authentication_error" | "invalid_request_error" | ..., "message": ...}}`` with 401 /
400 / 404. A good request is answered with the next of ``replies`` (a string: the text, or a
callable given the prompt) as a Message: ``{id, type: "message", role: "assistant", model,
content: [{type: "text", text}], stop_reason: "end_turn", stop_sequence: null, usage:
{input_tokens, output_tokens}}``. When the replies run out the last one repeats.

Faults: ``fail_with`` (status, error type) answers that error; ``raw`` answers those bytes as
they are (not JSON, say); ``redirect_to`` answers 307 to that URL; ``delay`` sleeps first.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.server import FakeServer

Reply = str | Callable[[str], str]


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: Any


class FakeAnthropic(FakeServer):
    def __init__(self, *, api_key: str = "sk-ant-fake-key-0123456789") -> None:
        self.api_key = api_key
        self.replies: list[Reply] = []
        self.requests: list[Request] = []
        self.fail_with: tuple[int, str] | None = None
        self.raw: bytes | None = None
        self.redirect_to: str | None = None
        self.delay = 0.0
        self._lock = threading.Lock()
        self._served = 0
        super().__init__()

    @property
    def url(self) -> str:
        return self.base

    def prompts(self) -> list[str]:
        with self._lock:
            return [r.body["messages"][-1]["content"] for r in self.requests if _valid(r.body)]

    def _answer(self, request: Request) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(request)
        if request.path != "/v1/messages":
            return _error(404, "not_found_error", "Not found")
        if request.headers.get("x-api-key") != self.api_key:
            return _error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return _error(400, "invalid_request_error", "anthropic-version: header is required")
        if not _valid(request.body):
            return _error(400, "invalid_request_error", "messages: field required")
        if self.fail_with:
            status, kind = self.fail_with
            return _error(status, kind, f"fake {kind}")
        with self._lock:
            reply = self.replies[min(self._served, len(self.replies) - 1)] if self.replies else ""
            self._served += 1
        prompt = request.body["messages"][-1]["content"]
        text = reply(prompt) if callable(reply) else reply
        return 200, {
            "id": f"msg_fake{self._served:04d}",
            "type": "message",
            "role": "assistant",
            "model": request.body["model"],
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": len(prompt) // 4, "output_tokens": len(text) // 4},
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                headers = {k.lower(): v for k, v in self.headers.items()}
                if fake.delay:
                    time.sleep(fake.delay)
                if fake.redirect_to:
                    with fake._lock:
                        fake.requests.append(Request(self.path, headers, body))
                    self._send(307, b"", location=fake.redirect_to)
                    return
                if fake.raw is not None:
                    with fake._lock:
                        fake.requests.append(Request(self.path, headers, body))
                    self._send(200, fake.raw)
                    return
                status, answer = fake._answer(Request(self.path, headers, body))
                self._send(status, json.dumps(answer).encode())

            def _send(self, status: int, data: bytes, location: str | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    if location:
                        self.send_header("Location", location)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        return Handler


def _valid(body: Any) -> bool:
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return False
    tokens = body.get("max_tokens")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        return False
    messages = body.get("messages")
    return (
        isinstance(messages, list)
        and bool(messages)
        and all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in messages)
    )


def _error(status: int, kind: str, message: str) -> tuple[int, Any]:
    return status, {"type": "error", "error": {"type": kind, "message": message}}
