"""A fake GitHub REST API: records ``POST /repos/{o}/{n}/pulls`` and answers 201.

With ``existing`` set, the POST answers 422 ("A pull request already exists") and
``GET /repos/{o}/{n}/pulls?head=o:branch`` returns that pull request.

With ``app_public_key`` (PEM) set it is also a GitHub App's API, in GitHub's shapes: ``GET
/repos/{o}/{n}/installation`` and ``POST /app/installations/{id}/access_tokens`` take the
app's RS256 JWT (checked against the key, ``iss`` = ``app_id``) and mint ``ghs_…`` tokens;
``DELETE /installation/token`` revokes the token it is called with (204).
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
INSTALLATION = re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)/installation$")
ACCESS_TOKENS = re.compile(r"^/app/installations/(?P<id>\d+)/access_tokens$")
INSTALLATION_ID = 4242


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
        self.app_id = "12345"
        self.app_public_key: str | None = None
        self.minted: dict[str, dict[str, Any]] = {}  # token -> the POST body it was minted for
        self.revoked: list[str] = []
        self._lock = threading.Lock()
        super().__init__()

    @property
    def url(self) -> str:
        return self.base

    def pulls_created(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and PULLS.match(r.path)]

    def _app_jwt_valid(self, authorization: str | None) -> bool:
        import jwt  # PyJWT: only the App routes need it

        if not self.app_public_key or not (authorization or "").startswith("Bearer "):
            return False
        try:
            claims = jwt.decode(
                (authorization or "")[7:],
                self.app_public_key,
                algorithms=["RS256"],
                options={"require": ["iat", "exp", "iss"]},
            )
        except jwt.PyJWTError:
            return False
        return str(claims["iss"]) == self.app_id and claims["exp"] - claims["iat"] <= 660

    def _handle_app(self, request: Request) -> tuple[int, Any] | None:
        """The App routes (``None``: not one of them)."""
        if request.method == "DELETE" and request.path == "/installation/token":
            token = (request.authorization or "")[7:]
            if token not in self.minted or token in self.revoked:
                return 401, {"message": "Bad credentials"}
            self.revoked.append(token)
            return 204, None
        installation, tokens = INSTALLATION.match(request.path), ACCESS_TOKENS.match(request.path)
        if not (installation or tokens):
            return None
        if not self._app_jwt_valid(request.authorization):
            return 401, {"message": "A JSON web token could not be decoded"}
        if installation and request.method == "GET":
            return 200, {
                "id": INSTALLATION_ID,
                "app_id": int(self.app_id),
                "account": {"login": installation["owner"]},
                "repository_selection": "all",
            }
        if tokens and request.method == "POST" and int(tokens["id"]) == INSTALLATION_ID:
            token = f"ghs_fake{len(self.minted) + 1:036d}"
            self.minted[token] = request.body or {}
            return 201, {
                "token": token,
                "expires_at": "2099-01-01T00:00:00Z",
                "permissions": (request.body or {}).get("permissions") or {},
                "repository_selection": "selected",
            }
        return 404, {"message": "Not Found"}

    def _handle(self, request: Request) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(request)
            app = self._handle_app(request)
            if app is not None:
                return app
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
                data = b"" if status == 204 else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

        return Handler
